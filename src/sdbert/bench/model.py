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

Timing: per case every model runs `warmup` times, then up to `repeats` rounds in which the models
take turns (so background load falls on all of them alike); a case stops early once its timed
rounds have taken `max_case_seconds`, after at least one round. We report the median latency
(ms per forward call of the whole batch) and throughput (examples/s = batch / median seconds).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdbert.bench.report import int_list, load_average, machine_info
from sdbert.errors import ConfigError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class ModelBenchConfig:
    """What to measure. Defaults: issue 4's comparison (batch 1 and 32, lengths 512 and 4096)."""

    models: tuple[str, ...]
    """model folders, optionally `label=path`; speed-ups are relative to the first"""
    lengths: tuple[int, ...] = (512, 4096)
    batch_sizes: tuple[int, ...] = (1, 32)
    repeats: int = 5
    """timed rounds per case at most; the median is reported"""
    warmup: int = 1
    """untimed forward passes per model and case first"""
    max_case_seconds: float | None = 60.0
    """stop a case's rounds once they have taken this long (None: always `repeats`)"""
    attention: str | None = None
    """override every model's attention type ("full" or "block_sparse"); None keeps each one's"""
    extend_positions: bool = True
    """tile position tables up to the longest length; False reports longer cases as n/a"""
    threads: int = field(default_factory=torch.get_num_threads)
    seed: int = 0
    name: str = "model"
    """section of BENCHMARKS.md and stem of the JSON file (e.g. `onnx` keeps the `model` section)"""

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        self.lengths = tuple(int(n) for n in self.lengths)
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if not self.models:
            raise ConfigError("name at least one model folder (--model DIR)")
        if not self.lengths or min(self.lengths) < 1:
            raise ConfigError(f"lengths must be positive, got {list(self.lengths)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if self.repeats < 1 or self.warmup < 0 or self.threads < 1:
            raise ConfigError("repeats and threads must be >= 1, warmup >= 0")
        if self.max_case_seconds is not None and self.max_case_seconds <= 0:
            raise ConfigError(f"max_case_seconds must be positive, got {self.max_case_seconds}")
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
    from sdbert.checkpoint import load_config
    from sdbert.model import SDBertForSequenceClassification
    from sdbert.onnx_runtime import ONNX_NAME, OnnxClassifier, is_onnx_model

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
    positions = config.max_position_embeddings
    overrides = {}
    if cfg.attention is not None:
        overrides["attention_type"] = cfg.attention
    if cfg.extend_positions and max(cfg.lengths) > positions:
        overrides["max_position_embeddings"] = max(cfg.lengths)
    model = SDBertForSequenceClassification.from_pretrained(path, **overrides).eval()
    extended = model.config.max_position_embeddings - positions
    info = {
        "label": label, "path": str(path), "backend": "torch",
        "source_model_type": config.source_model_type or "sdbert",
        "layers": config.num_hidden_layers, "heads": config.num_attention_heads, "hidden": config.hidden_size,
        "intermediate": config.intermediate_size, "attention": model.config.attention_type,
        "block_size": model.config.block_size, "random_blocks": model.config.num_random_blocks,
        "max_position_embeddings": positions,
        "parameters": model.num_parameters() - extended * config.hidden_size,
        "size_mb": round(disk_size_mb(path), 2),
    }
    if extended:
        info["note"] = f"positions extended {positions} -> {model.config.max_position_embeddings} by tiling"
    return model, info


def run_model_bench(cfg: ModelBenchConfig, *, progress: bool = False) -> dict:
    """Time every model on every (length, batch) case; returns models, rows and the command."""
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    machine = machine_info() | {"torch_threads": cfg.threads, "load_average_start": load_average()}
    try:
        loaded = [load_for_bench(label, path, cfg) for label, path in _labels(cfg.models)]
        models = [info for _, info in loaded]
        rows = []
        bar = tqdm(total=len(cfg.cases), desc="bench model", unit="case", disable=not progress)
        for length, batch in cfg.cases:
            bar.set_postfix_str(f"length {length}, batch {batch}")
            rows += _time_case([(m, i) for m, i in loaded], length, batch, cfg)
            bar.update(1)
        bar.close()
    finally:
        torch.set_num_threads(threads)
    machine["load_average_end"] = load_average()
    if any(info.get("backend", "torch") != "torch" for info in models):
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    return {"benchmark": "model", "machine": machine,
            "config": asdict(cfg), "command": command_line(cfg), "models": models, "rows": rows}




def _time_case(loaded, length: int, batch: int, cfg: ModelBenchConfig) -> list[dict]:
    generator = torch.Generator().manual_seed(cfg.seed)
    runnable, rows = [], {}
    for model, info in loaded:
        row = {"model": info["label"], "length": length, "batch": batch}
        if length > model.config.max_position_embeddings:
            row["skipped"] = f"n/a: {model.config.max_position_embeddings} positions"
        else:
            vocab = model.config.vocab_size
            # Ids above the first 1,000 avoid special tokens in BERT-style vocabularies.
            low = 1000 if vocab > 2000 else 1
            ids = torch.randint(low, vocab, (batch, length), generator=generator)
            mask = torch.ones_like(ids)
            runnable.append((info["label"], model, ids, mask))
        rows[info["label"]] = row
    times: dict[str, list[float]] = {label: [] for label, *_ in runnable}
    with torch.inference_mode():
        for _ in range(cfg.warmup):
            for _, model, ids, mask in runnable:
                model(ids, attention_mask=mask)
        spent, round_ = 0.0, 0
        while runnable and round_ < cfg.repeats and (round_ == 0 or cfg.max_case_seconds is None
                                                     or spent < cfg.max_case_seconds):
            for label, model, ids, mask in runnable:
                start = time.perf_counter()
                model(ids, attention_mask=mask)
                elapsed = time.perf_counter() - start
                times[label].append(elapsed * 1e3)
                spent += elapsed
            round_ += 1
    del runnable
    gc.collect()
    for label, values in times.items():
        median = statistics.median(values)
        rows[label].update(median_ms=round(median, 3), examples_per_second=round(batch / (median / 1e3), 3),
                           ms_per_example=round(median / batch, 3), rounds=len(values),
                           times_ms=[round(v, 3) for v in values])
    return list(rows.values())


def command_line(cfg: ModelBenchConfig) -> str:
    """The `sdbert bench model` command that reproduces `cfg`."""
    parts = ["sdbert bench model"] + [f"--model {m}" for m in cfg.models]
    parts += ["--lengths " + ",".join(map(str, cfg.lengths)), "--batch-sizes " + ",".join(map(str, cfg.batch_sizes)),
              f"--repeats {cfg.repeats}", f"--warmup {cfg.warmup}", f"--threads {cfg.threads}"]
    if cfg.max_case_seconds != 60.0:
        parts.append(f"--max-case-seconds {cfg.max_case_seconds:g}" if cfg.max_case_seconds else
                     "--max-case-seconds 0")
    if cfg.attention is not None:
        parts.append(f"--attention {cfg.attention}")
    if not cfg.extend_positions:
        parts.append("--no-extend-positions")
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
    """One row per (length, batch): each model's examples/s and median ms, then speed-ups vs the first."""
    labels = [m["label"] for m in result["models"]]
    found = lookup(result)
    header = ["length", "batch"]
    for label in labels:
        header += [f"{label} ex/s", f"{label} ms"]
    header += [f"{label}/{labels[0]} speed-up" for label in labels[1:]]
    rows = []
    for length, batch in ModelBenchConfig(**result["config"]).cases:
        row: list = [length, batch]
        for label in labels:
            r = found[(label, length, batch)]
            row += ["n/a", "n/a"] if "skipped" in r else [r["examples_per_second"], r["median_ms"]]
        row += [speedup(found, label, labels[0], length, batch) for label in labels[1:]]
        rows.append(row)
    return header, rows


def speedup(found: dict, label: str, base: str, length: int, batch: int) -> float | str:
    a, b = found[(label, length, batch)], found[(base, length, batch)]
    if "skipped" in a or "skipped" in b:
        return "n/a"
    return round(a["examples_per_second"] / b["examples_per_second"], 3)


def speedup_notes(result: dict) -> list[str]:
    """Throughput of each later model against the first, per length (the issue-4 goal reads these)."""
    labels = [m["label"] for m in result["models"]]
    found = lookup(result)
    notes = []
    for label in labels[1:]:
        for length, batch in ModelBenchConfig(**result["config"]).cases:
            value = speedup(found, label, labels[0], length, batch)
            if value != "n/a":
                notes.append(f"{label} vs {labels[0]}, length {length}, batch {batch}: {value:.2f}x throughput")
    return notes


GOAL_SPEEDUP = 1.9  # issue 4: the 3-layer, 4-head student at length 512 vs the MiniLM teacher


# --- command-line glue: arguments and reports (sdbert.commands.bench prints and writes them) ----




def add_arguments(p) -> None:
    p.add_argument("--model", dest="models", action="append", default=[], metavar="[LABEL=]DIR", required=True,
                   help="model folder (ours, a Hugging Face BERT/RoBERTa/BigBird one, or an ONNX export run by "
                        "onnxruntime); repeat to compare; speed-ups are relative to the first")
    p.add_argument("--lengths", type=int_list, default=(512, 4096), help="comma-separated lengths (default 512,4096)")
    p.add_argument("--batch-sizes", type=int_list, default=(1, 32), help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per case at most (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes per model and case first")
    p.add_argument("--max-case-seconds", type=float, default=60.0,
                   help="stop a case's rounds after this many timed seconds, at least one round (0: no limit)")
    p.add_argument("--attention", choices=["full", "block_sparse"], default=None,
                   help="run every model with this attention (default: each model's own)")
    p.add_argument("--extend-positions", action=argparse.BooleanOptionalAction, default=True,
                   help="tile position tables up to the longest length (default on); off: longer cases are n/a")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--output", type=Path, default=Path("benchmarks"),
                   help="folder for model.json and BENCHMARKS.md (default benchmarks)")
    p.add_argument("--name", default="model", type=_section_name,
                   help="name of the JSON file and BENCHMARKS.md section (default model), e.g. onnx")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _section_name(text: str) -> str:
    if not text.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected letters, digits, - or _, got {text!r}")
    return text


def run_from_args(args) -> dict:
    try:
        cfg = ModelBenchConfig(
            models=tuple(args.models), lengths=args.lengths, batch_sizes=args.batch_sizes, repeats=args.repeats,
            warmup=args.warmup, max_case_seconds=args.max_case_seconds or None, attention=args.attention,
            extend_positions=args.extend_positions, threads=args.threads or torch.get_num_threads(), name=args.name)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return run_model_bench(cfg, progress=args.progress)


def goal_lines(result: dict) -> list[str]:
    """The issue-4 check, when the models look like teacher then student: throughput at 512, batch 32 and 1."""
    labels = [m["label"] for m in result["models"]]
    if any(m.get("backend", "torch") != "torch" for m in result["models"]):
        return []  # a runtime comparison (one model, several runtimes), not a student against its teacher
    found = lookup(result)
    lines = []
    for label in labels[1:]:
        for length, batch in ModelBenchConfig(**result["config"]).cases:
            value = speedup(found, label, labels[0], length, batch)
            if length == 512 and value != "n/a":
                verdict = "met" if value >= GOAL_SPEEDUP else "not met"
                lines.append(f"{label} = {value:.2f}x {labels[0]}'s throughput at length 512, batch {batch} "
                             f"(issue-4 goal for a student vs its teacher: >= {GOAL_SPEEDUP}x, {verdict})")
    return lines


def text_report(result: dict) -> str:
    from sdbert.bench.report import text_table

    machine, cfg = result["machine"], result["config"]
    lines = [f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}"
             + (f", onnxruntime {machine['onnxruntime']}" if "onnxruntime" in machine else ""),
             f"inference (fp32 unless marked int8), no padding, median of up to {cfg['repeats']} rounds", "",
             text_table(*models_table(result)), "", text_table(*speed_table(result))]
    notes = [f"{m['label']}: {m['note']}" for m in result["models"] if m.get("note")]
    notes += goal_lines(result)
    return "\n".join(lines + ([""] + notes if notes else []))


def markdown_report(result: dict) -> str:
    from sdbert.bench.report import markdown_table

    machine, cfg = result["machine"], result["config"]
    onnx = any(m.get("backend", "torch") != "torch" for m in result["models"])
    load = ""
    if "load_average_start" in machine:
        load = (f" Load average (1 min) at start / end: {machine['load_average_start']} / "
                f"{machine['load_average_end']} (a shared machine; interleaved rounds spread its load over all "
                "models).")
    name = cfg.get("name", "model")
    lines = [
        "## Model inference (`sdbert bench model`)" + ("" if name == "model" else f": {name}"),
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['torch_threads']} threads, "
        f"torch {machine['torch']}" + (f", onnxruntime {machine['onnxruntime']}" if "onnxruntime" in machine else "")
        + f", Python {machine['python']}." + load,
        "",
        f"Command: `{result['command']}`",
        "",
        ("ONNX exports run in onnxruntime (CPU execution provider, same thread count); the others in PyTorch. "
         if onnx else "")
        + "Forward passes in fp32 (int8 where marked) under `torch.inference_mode()` on random ids without padding; "
        "latency is the "
        f"median time of one call for the whole batch over up to {cfg['repeats']} interleaved rounds (a case stops "
        "after "
        + (f"{cfg['max_case_seconds']:g} s" if cfg["max_case_seconds"] else "its rounds")
        + "), throughput = batch / latency. Size is the weights file on disk; parameters as stored. "
        "Speed-ups are throughput ratios against the first model.",
        "",
        markdown_table(*models_table(result)),
        "",
        markdown_table(*speed_table(result)),
    ]
    notes = [f"{m['label']}: {m['note']}" for m in result["models"] if m.get("note")] + goal_lines(result)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)
