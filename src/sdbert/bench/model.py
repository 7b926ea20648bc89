"""Inference benchmark of whole models: throughput, latency, parameters and size on disk.

Every model folder (ours, or a Hugging Face BERT/RoBERTa/BigBird folder, which
`SDBertForSequenceClassification.from_pretrained` reads) runs a forward pass under
`torch.inference_mode()` on random token ids at each (length, batch) case, in fp32. Inputs have
no padding (a full-length document each), so the model takes its unmasked attention path.

An ONNX export (`sdbert export --format onnx`, a folder with `model.onnx`) runs in onnxruntime on
the CPU with the same threads, so `--model torch=DIR --model onnx=DIR-onnx` compares the two
runtimes on one model, and an `--quantize int8` export adds dynamic int8. ONNX graphs cannot have
their positions extended or their attention switched: such cases are n/a (or refused).

Positions: a model whose `max_position_embeddings` is below a benchmarked length has its position
table extended by tiling the learned rows (what `sdbert train --max-length` does to a 512-token
checkpoint); with `extend_positions=False` those cases are reported as n/a instead. Parameters
are counted as stored, before any extension.

Timing: per case every model runs `warmup` times, then `repeats` rounds in which the models take
turns (so background load falls on all of them alike). We report the median latency (ms per
forward call of the whole batch) with its min-max, throughput (examples/s = batch / median
seconds), and speed-ups against the first model, marked "within noise" where the rounds overlap.

Presets (`--preset quick`): the architectures of a `sdbert reproduce` preset, built in memory from
its teacher checkpoint: the sparse teacher (the checkpoint with the preset's block-sparse
attention) and the student (`student_config`, initialised from the checkpoint). Speed depends on
the shapes, not on fine-tuned values, so a fresh clone can measure them without training.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from sdbert.bench.report import (
    add_output_arguments,
    bench_config,
    describe_machine,
    int_list,
    markdown_table,
    text_table,
)
from sdbert.bench.timing import (
    finish,
    gemm_calibration,
    interleaved_rounds,
    kernel_text,
    provenance,
    speedup_text,
    spread,
)
from sdbert.bench.timing import speedup as measured
from sdbert.checkpoint import load_config
from sdbert.classifier import Classifier
from sdbert.cli_args import add_config_arguments, arg, name_list, non_negative_int, positive_int
from sdbert.config import InferenceSettings
from sdbert.data import load_tokenizer
from sdbert.errors import ConfigError
from sdbert.model import SDBertForSequenceClassification
from sdbert.onnx_runtime import ONNX_NAME, OnnxClassifier, is_onnx_model
from sdbert.paper.runner import make_preset
from sdbert.precision import resolve_precision
from sdbert.training.kd import init_student, student_config

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class ModelBenchConfig:
    """What to measure. Defaults: issue 4's comparison (batch 1 and 32, lengths 512 and 4096)."""

    models: tuple[str, ...] = arg((), "model folder (ours, a Hugging Face BERT/RoBERTa/BigBird one, or an ONNX "
                                  "export run by onnxruntime), optionally LABEL=DIR; repeat to compare; speed-ups "
                                  "are relative to the first", flag="--model", action="append", metavar="[LABEL=]DIR")
    presets: tuple[str, ...] = arg((), "add this reproduce preset's sparse teacher and student architectures, built "
                                   "from its teacher checkpoint (speed does not depend on fine-tuning); repeatable",
                                   flag="--preset", action="append", choices=["quick", "standard"])
    lengths: tuple[int, ...] = arg((512, 4096), "comma-separated lengths", type=int_list)
    batch_sizes: tuple[int, ...] = arg((1, 32), "comma-separated batch sizes", type=int_list)
    repeats: int = arg(9, "timed rounds per case, the models interleaved within each (median reported)",
                       type=positive_int)
    warmup: int = arg(1, "untimed forward passes per model and case first", type=non_negative_int)
    attention: Literal["full", "block_sparse"] | None = arg(
        None, "run every model with this attention (default: each model's own)")
    extend_positions: bool = arg(True, "tile position tables up to the longest length; off: longer cases are n/a")
    threads: int | None = arg(None, "torch threads (default: torch's)", type=positive_int)
    precisions: tuple[str, ...] = arg(("fp32",), "comma-separated formats each PyTorch model runs in: fp32, bf16 "
                                      "(autocast; a row labelled '<model> bf16')", flag="--precision",
                                      type=name_list)
    seed: int = 0
    name: str = "model"
    """section of BENCHMARKS.md and stem of the JSON file (`--name`; e.g. `onnx` keeps the `model` section)"""

    def __post_init__(self) -> None:
        self.threads = self.threads or torch.get_num_threads()
        self.models, self.presets = tuple(self.models), tuple(self.presets)
        self.lengths = tuple(int(n) for n in self.lengths)
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if not self.models and not self.presets:
            raise ConfigError("name at least one model folder (--model DIR) or preset (--preset NAME)")
        if not self.lengths or min(self.lengths) < 1:
            raise ConfigError(f"lengths must be positive, got {list(self.lengths)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 1:
            raise ConfigError("repeats and threads must be >= 1, warmup >= 0")
        self.precisions = tuple(self.precisions)
        if not self.precisions or set(self.precisions) - {"fp32", "bf16"}:
            raise ConfigError(f"precisions must be among fp32, bf16, got {list(self.precisions)}")
        if self.attention not in (None, "full", "block_sparse"):
            raise ConfigError(f"attention must be full or block_sparse, got {self.attention!r}")

    @property
    def cases(self) -> list[tuple[int, int]]:
        return [(n, b) for n in self.lengths for b in self.batch_sizes]


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """`label=path` or a bare path (labelled by its folder name)."""
    if "=" in spec and not Path(spec).exists():
        label, path = spec.split("=", 1)
        return label, Path(path)
    return Path(spec).name or spec, Path(spec)


def _labels(specs: tuple[str, ...]) -> list[tuple[str, Path]]:
    parsed = [parse_model_spec(s) for s in specs]
    seen: dict[str, int] = {}
    out = []
    for label, path in parsed:
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label}#{seen[label]}", path))
    return out


def disk_size_mb(path: Path) -> float:
    """Size of the folder's weights file in MiB (the model; tokenizer and config are small)."""
    if path.is_file():
        return path.stat().st_size / 2**20
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return (path / name).stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2**20


def load_for_bench(label: str, path: Path, cfg: ModelBenchConfig) -> tuple[torch.nn.Module, dict]:
    """The model in eval mode (positions extended if asked) and its description."""
    if is_onnx_model(path):
        if cfg.attention is not None:
            raise ConfigError(f"{path} is an ONNX graph: its attention is fixed, drop --attention")
        model = OnnxClassifier.from_pretrained(path, threads=cfg.threads)
        config = model.config
        info = {
            "label": label, "path": str(path), "backend": "onnxruntime" + (" int8" if model.quantization else ""),
            "source_model_type": config.source_model_type or "sdbert",
            "layers": config.num_hidden_layers, "heads": config.num_attention_heads, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "attention": config.attention_type,
            "block_size": config.block_size, "random_blocks": config.num_random_blocks,
            "max_position_embeddings": config.max_position_embeddings, "parameters": model.num_parameters(),
            "size_mb": round(disk_size_mb(path / ONNX_NAME if path.is_dir() else path), 2),
        }
        if model.quantization:
            info["quantization"] = model.quantization
        return model, info
    config = load_config(path)  # raises a one-line CheckpointError for a folder of another kind
    overrides = {}
    if cfg.attention is not None:
        overrides["attention_type"] = cfg.attention
    if cfg.extend_positions and max(cfg.lengths) > config.max_position_embeddings:
        overrides["max_position_embeddings"] = max(cfg.lengths)
    model = SDBertForSequenceClassification.from_pretrained(path, **overrides).eval()
    info = _describe(model, label, str(path), size_mb=round(disk_size_mb(path), 2),
                     positions=config.max_position_embeddings)
    info["source_model_type"] = config.source_model_type or "sdbert"
    return model, info


def preset_models(name: str, cfg: ModelBenchConfig) -> list[tuple[torch.nn.Module, dict]]:
    """A reproduce preset's sparse teacher and student, built from its teacher checkpoint (untrained heads)."""
    preset = make_preset(name)
    if preset.teacher_init is None:
        raise ConfigError(f"preset {name} has no teacher checkpoint to build its architectures from")
    positions = max(max(cfg.lengths), preset.max_length)
    teacher = SDBertForSequenceClassification.from_pretrained(
        preset.teacher_init, attention_type="block_sparse", block_size=preset.block_size,
        num_random_blocks=preset.num_random_blocks, max_position_embeddings=positions).eval()
    torch.manual_seed(cfg.seed)
    student = init_student(student_config(teacher.config, layers=preset.student_layers, heads=preset.student_heads),
                           "pretrained", start=teacher).eval()
    return [(model, _describe(model, f"{name} {role}", f"preset:{name}", size_mb=None))
            for role, model in (("sparse teacher", teacher), ("student", student))]


def save_preset_student(name: str, path: Path) -> None:
    """A preset's student architecture as a model folder (checkpoint layers, untrained head, the preset's
    tokenizer and truncation): what a latency benchmark can serve on a fresh clone without training."""
    preset = make_preset(name)
    _, (student, _) = preset_models(name, ModelBenchConfig(presets=(name,), lengths=(preset.max_length,)))
    settings = InferenceSettings(preset.max_length, preset.truncation)
    Classifier(student, load_tokenizer(preset.teacher_init), settings).save_pretrained(path)


def _describe(model, label: str, path: str, *, size_mb: float | None, positions: int | None = None) -> dict:
    config = model.config
    positions = positions or config.max_position_embeddings
    extended = config.max_position_embeddings - positions
    info = {"label": label, "path": path, "backend": "torch", "source_model_type": config.source_model_type or "sdbert",
            "layers": config.num_hidden_layers, "heads": config.num_attention_heads, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "attention": config.attention_type,
            "block_size": config.block_size, "random_blocks": config.num_random_blocks,
            "max_position_embeddings": positions, "parameters": model.num_parameters() - extended * config.hidden_size,
            "size_mb": size_mb}
    if extended:
        info["note"] = f"positions extended {positions} -> {config.max_position_embeddings} by tiling"
    return info


def run_model_bench(cfg: ModelBenchConfig, *, progress: bool = False) -> dict:
    """Time every model on every (length, batch) case; returns models, rows, calibration and provenance."""

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    record = provenance(command_line(cfg))
    record["machine"]["torch_threads"] = cfg.threads
    try:
        loaded = [load_for_bench(label, path, cfg) for label, path in _labels(cfg.models)]
        loaded += [pair for name in cfg.presets for pair in preset_models(name, cfg)]
        loaded = with_precisions(loaded, cfg.precisions)
        rows = []
        for length, batch in tqdm(cfg.cases, desc="bench model", unit="case", disable=not progress):
            rows += _time_case(loaded, length, batch, cfg)
        calibration = gemm_calibration()
    finally:
        torch.set_num_threads(threads)
    models = [info for _, info in loaded]
    if any(info.get("backend", "torch") != "torch" for info in models):
        # optional extra [onnx]
        import onnxruntime

        record["machine"]["onnxruntime"] = onnxruntime.__version__
    record.update(benchmark="model", config=asdict(cfg), calibration=calibration, models=models, rows=rows)
    return finish(record)


def with_precisions(loaded: list[tuple], precisions: tuple[str, ...]) -> list[tuple]:
    """Each PyTorch model once per format (a bf16 row's label ends in ' bf16'); ONNX graphs run as
    exported, once."""
    out = []
    for model, info in loaded:
        formats = precisions if info.get("backend", "torch") == "torch" else ("fp32",)
        for precision in dict.fromkeys(formats):
            label = info["label"] if precision == "fp32" else f"{info['label']} {precision}"
            out.append((model, {**info, "label": label, "precision": precision}))
    return out


def _inputs(model, length: int, batch: int, generator: torch.Generator):
    vocab = model.config.vocab_size
    low = 1000 if vocab > 2000 else 1  # ids above the first 1,000 avoid BERT-style special tokens
    ids = torch.randint(low, vocab, (batch, length), generator=generator)
    return ids, torch.ones_like(ids)


def _forward(model, ids, mask, autocast):
    with autocast:
        return model(ids, attention_mask=mask)


def _time_case(loaded, length: int, batch: int, cfg: ModelBenchConfig) -> list[dict]:
    generator = torch.Generator().manual_seed(cfg.seed)
    rows, steps = {}, {}
    for model, info in loaded:
        rows[info["label"]] = {"model": info["label"], "length": length, "batch": batch}
        if length > model.config.max_position_embeddings:
            rows[info["label"]]["skipped"] = f"n/a: {model.config.max_position_embeddings} positions"
            continue
        ids, mask = _inputs(model, length, batch, generator)
        autocast = resolve_precision(info.get("precision", "fp32"), "cpu", log=False).autocast("cpu")
        steps[info["label"]] = lambda m=model, i=ids, a=mask, c=autocast: _forward(m, i, a, c)
    with torch.inference_mode():
        times = interleaved_rounds(steps, rounds=cfg.repeats, warmup=cfg.warmup) if steps else {}
    del steps
    gc.collect()
    for label, values in times.items():
        ms = [v * 1e3 for v in values]
        stats = spread(ms)
        rows[label].update(median_ms=round(stats["median"], 3), min_ms=round(stats["min"], 3),
                           max_ms=round(stats["max"], 3), examples_per_second=round(batch / (stats["median"] / 1e3), 3),
                           ms_per_example=round(stats["median"] / batch, 3), rounds=len(ms),
                           times_ms=[round(v, 3) for v in ms])
    return list(rows.values())


def command_line(cfg: ModelBenchConfig) -> str:
    """The `sdbert bench model` command that reproduces `cfg`."""
    parts = ["sdbert bench model"] + [f"--model {m}" for m in cfg.models] + [f"--preset {p}" for p in cfg.presets]
    parts += ["--lengths " + ",".join(map(str, cfg.lengths)), "--batch-sizes " + ",".join(map(str, cfg.batch_sizes)),
              f"--repeats {cfg.repeats}", f"--warmup {cfg.warmup}", f"--threads {cfg.threads}"]
    if cfg.attention is not None:
        parts.append(f"--attention {cfg.attention}")
    if not cfg.extend_positions:
        parts.append("--no-extend-positions")
    if cfg.precisions != ("fp32",):
        parts.append("--precision " + ",".join(cfg.precisions))
    if cfg.name != "model":
        parts.append(f"--name {cfg.name}")
    return " ".join(parts)


# --- summaries ----------------------------------------------------------------------------------


def lookup(result: dict) -> dict[tuple[str, int, int], dict]:
    return {(r["model"], r["length"], r["batch"]): r for r in result["rows"]}


def models_table(result: dict) -> tuple[list[str], list[list]]:
    header = ["model", "runtime", "layers", "heads", "hidden", "attention", "parameters", "size MiB", "positions"]
    rows = [[m["label"], m.get("backend", "torch"), m["layers"], m["heads"], m["hidden"], m["attention"],
             f"{m['parameters']:,}", m["size_mb"], m["max_position_embeddings"]] for m in result["models"]]
    return header, rows


def speed_table(result: dict) -> tuple[list[str], list[list]]:
    """One row per (length, batch): each model's examples/s and median ms (min-max), then speed-ups vs the first."""
    labels = [m["label"] for m in result["models"]]
    found = lookup(result)
    header = ["length", "batch"]
    for label in labels:
        header += [f"{label} ex/s", f"{label} ms (min-max)"]
    header += [f"{label}/{labels[0]} speed-up" for label in labels[1:]]
    rows = []
    for length, batch in ModelBenchConfig(**result["config"]).cases:
        row: list = [length, batch]
        for label in labels:
            r = found[(label, length, batch)]
            row += ["n/a", "n/a"] if "skipped" in r else [
                r["examples_per_second"], f"{r['median_ms']:.1f} ({r['min_ms']:.1f}-{r['max_ms']:.1f})"]
        row += [speedup(found, label, labels[0], length, batch) for label in labels[1:]]
        rows.append(row)
    return header, rows


def speedup(found: dict, label: str, base: str, length: int, batch: int) -> str:
    """Throughput of `label` over `base`, marked "within noise" when their rounds overlap."""
    a, b = found[(label, length, batch)], found[(base, length, batch)]
    if "skipped" in a or "skipped" in b:
        return "n/a"
    return speedup_text(measured(b["times_ms"], a["times_ms"]))


# --- command-line glue: arguments and reports (sdbert.commands.bench prints and writes them) ----




def add_arguments(p) -> None:
    add_config_arguments(p, ModelBenchConfig)
    add_output_arguments(p, "model")


def run_from_args(args) -> dict:
    return run_model_bench(bench_config(ModelBenchConfig, args, name=args.name), progress=args.progress)


def text_report(result: dict) -> str:
    machine, cfg = result["machine"], result["config"]
    lines = [f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}"
             + (f", onnxruntime {machine['onnxruntime']}" if "onnxruntime" in machine else ""),
             f"inference (fp32 unless marked int8), no padding, median of {cfg['repeats']} interleaved rounds", "",
             text_table(*models_table(result)), "", text_table(*speed_table(result))]
    notes = [f"{m['label']}: {m['note']}" for m in result["models"] if m.get("note")]
    return "\n".join(lines + ([""] + notes if notes else []))


def markdown_report(result: dict) -> str:
    machine, cfg = result["machine"], result["config"]
    onnx = any(m.get("backend", "torch") != "torch" for m in result["models"])
    name = cfg.get("name", "model")
    lines = [
        "## Model inference (`sdbert bench model`)" + ("" if name == "model" else f": {name}"),
        "",
        f"Machine: {describe_machine(machine)} (a shared machine; interleaved rounds spread its load over all "
        "models).",
        "",
        f"Command: `{result['command']}`",
        "",
        ("ONNX exports run in onnxruntime (CPU execution provider, same thread count); the others in PyTorch. "
         if onnx else "")
        + "Forward passes in fp32 (int8 where marked) under `torch.inference_mode()` on random ids without padding; "
        "latency is the "
        f"median (min-max) time of one call for the whole batch over {cfg['repeats']} interleaved rounds after "
        f"{cfg['warmup']} warm-up, throughput = batch / latency. Size is the weights file on disk (none for a preset's "
        "architecture built in memory); parameters as stored. Speed-ups are throughput ratios against the first "
        "model, \"within noise\" where the two models' rounds overlap. Measured GEMM peak of this run: "
        f"{result['calibration']['square_gflops']:.0f} GFLOP/s (fp32 {result['calibration']['square_size']}^2 "
        "matmul, 2 FLOPs per multiply-add). " + kernel_text(result),
        "",
        markdown_table(*models_table(result)),
        "",
        markdown_table(*speed_table(result)),
    ]
    notes = [f"{m['label']}: {m['note']}" for m in result["models"] if m.get("note")]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)
