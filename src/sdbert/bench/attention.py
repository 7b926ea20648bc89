"""Attention benchmark: dense SDPA, our block-sparse kernel and Hugging Face BigBird, side by side.

Methods (all on `(batch, heads, seq, head_dim)` problems of the same size):

* `dense`       torch's `scaled_dot_product_attention` without a mask (`dense_attention`);
* `sparse`      `block_sparse_attention` (our kernel, BigBird ITC pattern, default plan) as it
  runs by default: the native C++ kernel where it builds, else the pure PyTorch paths;
* `sparse_pytorch` the same call with the native kernel switched off (`native.use(False)`);
* `sparse_proj` our kernel inside a module with separate q/k/v `nn.Linear` projections, as the
  model uses it: the fair peer of
* `hf`          Hugging Face's `BigBirdBlockSparseAttention` module, which always includes its
  q/k/v projections; same weights. It runs in train mode (its random blocks are drawn only in
  training; it has no attention dropout) and only where its own model would not switch to full
  attention (`seq > (5 + 2 r) * block_size`). Skipped when transformers is not installed.
* `flex`        torch's FlexAttention, compiled, with our layout as its `BlockMask`
  (`sdbert.attention.flex`, the path CUDA runs). Opt-in (`--methods ...,flex`): it compiles once
  per shape (tens of seconds on a CPU, when the case is built, so no timed round pays for it).
  FlexAttention's CPU mode is a prototype and inference-only, so on CPU it is timed forward only;
  where it does not compile, its rows are skipped with the reason (logged, and in the JSON's
  `notes`) and the tables have no column for it.

Each method is one case builder in `CASE_BUILDERS`, and each row of the JSON records the `path`
that ran (`dense_sdpa`, `native`, `pytorch`, `flex`, `hf`): up to the dense fallback length our
kernel itself runs dense SDPA. `forward_gflop` counts 2 FLOPs per multiply-add.

Timing: for each length every case runs `warmup` times, then at least `repeats` rounds in which
the cases take turns (so background noise falls on all of them alike; short lengths get more
rounds, up to about `min_seconds` per length); we report the median, and each round's minor page faults.
By default the process keeps freed memory for the next round (`sdbert.bench.allocator`), so HF's
large intermediates are not timed on the OS's page-zeroing path, whose cost is not reproducible.
"Forward" runs under `torch.no_grad()`; "forward+backward" backpropagates a fixed random
gradient into the inputs (and the projection weights).

Peak memory: each case runs once more in a fresh interpreter (see `sdbert.bench.report`): the
resident-memory high-water mark above the inputs, after a tiny warm-up that initialises the
libraries. One process per case means nothing cached by an earlier case hides a peak.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from sdbert.attention import (
    bigbird_block_layout,
    bigbird_plan,
    block_sparse_attention,
    dense_attention,
    flex,
    native,
)
from sdbert.bench import allocator
from sdbert.bench.allocator import ALLOCATORS, minor_faults
from sdbert.bench.report import (
    PeakRSS,
    describe_machine,
    int_list,
    load_average,
    machine_info,
    markdown_table,
    run_isolated,
)
from sdbert.bench.timing import gemm_calibration, overlap, percent_of_peak
from sdbert.cli_args import arg, name_list, non_negative_float, non_negative_int, positive_int
from sdbert.config import dense_fallback_blocks
from sdbert.errors import ConfigError

log = logging.getLogger(__name__)

METHODS: dict[str, str] = {
    "dense": "dense SDPA",
    "sparse": "ours",
    "sparse_pytorch": "ours, pure PyTorch",
    "sparse_proj": "ours + q/k/v proj",
    "hf": "HF BigBird (+ q/k/v proj)",
    "flex": "FlexAttention (compiled)",
}
DEFAULT_METHODS = tuple(m for m in METHODS if m != "flex")  # flex compiles per shape: opt in with --methods
MODES = ("forward", "forward_backward")


@dataclass
class AttentionBenchConfig:
    """What to measure. Defaults: the shapes of issue 6 (BigBird-base attention, block 64, r = 3)."""

    lengths: tuple[int, ...] = arg((512, 1024, 2048, 4096, 8192), "comma-separated sequence lengths", type=int_list)
    batch: int = arg(1, "batch size", type=positive_int)
    heads: int = arg(12, "attention heads", type=positive_int)
    head_dim: int = arg(64, "width of a head", type=positive_int)
    block_size: int = arg(64, "sparse attention block", type=positive_int)
    random_blocks: int = arg(3, "random blocks per query block", type=non_negative_int)
    repeats: int = arg(9, "timed rounds per case at least (median reported)", type=positive_int)
    warmup: int = arg(1, "untimed runs per case first (first-call costs, plan caches)", type=non_negative_int)
    backward: bool = arg(True, "also time forward + backward")
    methods: tuple[str, ...] = arg(DEFAULT_METHODS, f"comma-separated subset of {','.join(METHODS)} (flex, which "
                                   "compiles once per shape, only when named)", type=name_list)
    memory: bool = arg(True, "measure peak memory, one fresh process per case (slower)")
    min_seconds: float = arg(3.0, "extra rounds for short lengths until about this many seconds per length",
                             type=non_negative_float)
    max_repeats: int = 50
    """cap on those extra rounds"""
    hf_max_length: int = arg(8192, "longest length to run Hugging Face BigBird at (it needs many GB at 16384)",
                             type=positive_int)
    threads: int | None = arg(None, "torch threads (default: torch's)", type=positive_int)
    seed: int = 0
    allocator: Literal["reuse", "default"] = arg(
        "reuse", "reuse: glibc keeps freed memory for the next round, so no case is timed on page faults; "
        "default: glibc's own behaviour (see sdbert.bench.allocator)")

    def __post_init__(self):
        self.threads = self.threads or torch.get_num_threads()
        self.lengths = tuple(int(n) for n in self.lengths)
        self.methods = tuple(self.methods)
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ConfigError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
        if not self.lengths or min(self.lengths) < 1:
            raise ConfigError(f"lengths must be positive, got {list(self.lengths)}")
        for name in ("batch", "heads", "head_dim", "block_size", "repeats", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.random_blocks < 0 or self.warmup < 0:
            raise ConfigError("random_blocks and warmup must be >= 0")
        if self.allocator not in ALLOCATORS:
            raise ConfigError(f"unknown allocator {self.allocator!r}; choose from {list(ALLOCATORS)}")

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.backward else MODES[:1]

    @property
    def dense_fallback_length(self) -> int:
        """Up to this length our kernel (and HF's model) run dense attention."""
        return dense_fallback_blocks(self.random_blocks) * self.block_size


def hf_available() -> bool:
    try:
        # optional extra [hf]: loaded only when a Hugging Face case runs
        from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention  # noqa: F401
    except ImportError:
        return False
    return True


# --- the cases ----------------------------------------------------------------------------------

class SparseSelfAttention(nn.Module):
    """q/k/v projections + our kernel: the shape of `sdbert.model.SDBertSelfAttention`."""

    def __init__(self, hidden: int, heads: int, block_size: int, random_blocks: int, seed: int = 0):
        super().__init__()
        self.heads, self.block_size, self.random_blocks, self.seed = heads, block_size, random_blocks, seed
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        split = lambda t: t.view(batch, seq, self.heads, -1).transpose(1, 2)  # (B, H, S, D)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        out = block_sparse_attention(q, k, v, block_size=self.block_size,
                                     num_random_blocks=self.random_blocks, seed=self.seed)
        return out.transpose(1, 2).reshape(batch, seq, width)  # (B, S, H * D)


def _hf_module(cfg: AttentionBenchConfig, seq_len: int, heads: int) -> nn.Module:
    # optional extra [hf]: loaded only when a Hugging Face case runs
    from transformers import BigBirdConfig
    from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

    config = BigBirdConfig(hidden_size=heads * cfg.head_dim, num_attention_heads=heads, attention_type="block_sparse",
                           block_size=cfg.block_size, num_random_blocks=cfg.random_blocks,
                           max_position_embeddings=max(seq_len, 4096), use_bias=True)
    return BigBirdBlockSparseAttention(config, seed=cfg.seed).train()


def _hf_masks(batch: int, seq_len: int, block_size: int):
    # optional extra [hf]: loaded only when a Hugging Face case runs
    from transformers.models.big_bird.modeling_big_bird import BigBirdModel

    mask = torch.ones(batch, seq_len)
    blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(mask, block_size)
    return dict(band_mask=band, from_mask=from_mask, to_mask=to_mask,
                from_blocked_mask=blocked, to_blocked_mask=blocked)


def skip_reason(method: str, cfg: AttentionBenchConfig, seq_len: int, mode: str = "forward") -> str | None:
    if method == "flex":
        if not flex.available():
            return "FlexAttention unavailable (torch < 2.5, SDBERT_FLEX=0, or it failed to compile in this run)"
        if mode == "forward_backward" and not torch.cuda.is_available():
            return "FlexAttention on CPU is inference-only"
        if seq_len % cfg.block_size:
            return "length not a multiple of the block size"
    if method == "hf":
        if not hf_available():
            return "transformers not installed"
        if seq_len <= cfg.dense_fallback_length or seq_len % cfg.block_size:
            return "HF BigBird runs full attention at this length"
        if seq_len > cfg.hf_max_length:
            return f"above hf_max_length={cfg.hf_max_length}"
    return None


class CaseUnavailable(RuntimeError):
    """A case that cannot run here (FlexAttention that fails to compile): its row is skipped."""


@dataclass
class _Problem:
    """One problem size and the generator its inputs come from, as the case builders see it."""

    cfg: AttentionBenchConfig
    seq_len: int
    batch: int
    heads: int
    backward: bool
    generator: torch.Generator

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator).requires_grad_(self.backward)

    def qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(self.randn(self.batch, self.heads, self.seq_len, self.cfg.head_dim) for _ in range(3))


# A builder returns `(run, leaves, path)`: `run()` computes the attention output, which has the shape of
# `leaves[0]`; `leaves` are the tensors whose gradients a backward step resets; `path` names the code
# that runs (recorded per row, so a table can never show one kernel's time under another's name).
Built = tuple[Callable[[], torch.Tensor], tuple[torch.Tensor, ...], str]


def _sparse_path(p: _Problem, use_native: bool) -> str:
    if p.seq_len <= p.cfg.dense_fallback_length:
        return "dense_sdpa"  # block_sparse_attention's own rule: too few blocks to gain from sparsity
    return "native" if use_native and native.available() else "pytorch"


def _dense_case(p: _Problem) -> Built:
    q, k, v = p.qkv()
    return (lambda: dense_attention(q, k, v)), (q, k, v), "dense_sdpa"


def _sparse_case(use_native: bool) -> Callable[[_Problem], Built]:
    def build(p: _Problem) -> Built:
        q, k, v = p.qkv()

        def run():
            with native.use(use_native):
                return block_sparse_attention(q, k, v, block_size=p.cfg.block_size,
                                              num_random_blocks=p.cfg.random_blocks, seed=p.cfg.seed)
        return run, (q, k, v), _sparse_path(p, use_native)
    return build


def _flex_case(p: _Problem) -> Built:
    q, k, v = p.qkv()
    plan = bigbird_plan(p.seq_len // p.cfg.block_size, p.cfg.random_blocks, p.heads, p.cfg.seed)

    def run():
        out = flex.flex_block_sparse(q, k, v, p.cfg.block_size, plan, None)
        if out is None:  # flex has logged the compiler's error
            raise CaseUnavailable("FlexAttention failed to compile here (see the logged warning)")
        return out
    return run, (q, k, v), "flex"


def _sparse_proj_case(p: _Problem) -> Built:
    hidden = p.heads * p.cfg.head_dim
    x = p.randn(p.batch, p.seq_len, hidden)
    module = SparseSelfAttention(hidden, p.heads, p.cfg.block_size, p.cfg.random_blocks, p.cfg.seed)
    module.requires_grad_(p.backward)
    return (lambda: module(x)), (x, *module.parameters()), _sparse_path(p, True)


def _hf_case(p: _Problem) -> Built:
    x = p.randn(p.batch, p.seq_len, p.heads * p.cfg.head_dim)
    module = _hf_module(p.cfg, p.seq_len, p.heads)
    masks = _hf_masks(p.batch, p.seq_len, p.cfg.block_size)
    module.requires_grad_(p.backward)
    return (lambda: module(x, **masks)[0]), (x, *module.parameters()), "hf"


CASE_BUILDERS: dict[str, Callable[[_Problem], Built]] = {
    "dense": _dense_case,
    "sparse": _sparse_case(use_native=True),
    "sparse_pytorch": _sparse_case(use_native=False),
    "sparse_proj": _sparse_proj_case,
    "hf": _hf_case,
    "flex": _flex_case,
}
COMPILED = {"flex"}  # built cases run once, so the compiler's time (per shape) never lands in a timed round


@dataclass(frozen=True)
class Case:
    """One step of one method on one problem, ready to time: call it."""

    step: Callable[[], None]
    path: str
    """the attention code that runs: dense_sdpa, native, pytorch, flex or hf"""

    def __call__(self) -> None:
        self.step()


def build_case(method: str, mode: str, cfg: AttentionBenchConfig, seq_len: int,
               batch: int | None = None, heads: int | None = None) -> Case:
    """Inputs and a step that runs `method` once (`mode`: forward or forward_backward)."""
    if method not in CASE_BUILDERS:
        raise ConfigError(f"unknown attention benchmark method {method!r}; choose from {list(CASE_BUILDERS)}")
    if mode not in MODES:
        raise ConfigError(f"unknown attention benchmark mode {mode!r}; choose from {list(MODES)}")
    generator = torch.Generator().manual_seed(cfg.seed)
    problem = _Problem(cfg, seq_len, cfg.batch if batch is None else batch, cfg.heads if heads is None else heads,
                       mode == "forward_backward", generator)
    torch.manual_seed(cfg.seed)  # the same projection weights for every module case
    run, leaves, path = CASE_BUILDERS[method](problem)
    step = _backward_step(run, leaves, generator) if problem.backward else _forward_step(run)
    if method in COMPILED:
        step()
    return Case(step, path)


def _forward_step(run: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def step():
        with torch.no_grad():
            run()
    return step


def _backward_step(run, leaves: tuple[torch.Tensor, ...], generator: torch.Generator) -> Callable[[], None]:
    # Shape known up front: running run() here would leave freed heap that hides part of the peak.
    grad_out = torch.randn(leaves[0].shape, generator=generator)

    def step():
        for t in leaves:
            t.grad = None
        run().backward(grad_out)
    return step


def forward_gflop(method: str, cfg: AttentionBenchConfig, seq_len: int) -> float:
    """Matrix-product GFLOP of one forward pass of a case, 2 FLOPs per multiply-add: QK^T and PV
    (`pairs * head_dim` multiply-adds each, per head) plus, for the module methods, the q/k/v projections.
    Sparse methods count the pattern's attended pairs: the useful work, whatever extra a method computes."""
    batch, heads, dim = cfg.batch, cfg.heads, cfg.head_dim
    if method == "dense" or seq_len <= cfg.dense_fallback_length:
        pairs = seq_len * seq_len  # our kernel runs dense attention up to the fallback length too
    else:
        num_blocks = -(-seq_len // cfg.block_size)
        layout = bigbird_block_layout(num_blocks, cfg.random_blocks, num_heads=heads, seed=cfg.seed)
        pairs = layout.sum().item() * cfg.block_size**2 / heads  # per head, averaged over heads
    flops = 2 * 2 * batch * heads * pairs * dim
    if method in ("sparse_proj", "hf"):
        flops += 2 * 3 * batch * seq_len * (heads * dim) ** 2
    return flops / 1e9


# --- measuring ----------------------------------------------------------------------------------

def _peak_memory_case(method: str, mode: str, cfg_dict: dict, seq_len: int) -> dict:
    """Runs in a fresh interpreter: peak extra memory (MiB) of one step of a case."""
    cfg = AttentionBenchConfig(**cfg_dict)
    torch.set_num_threads(cfg.threads)
    # A tiny warm-up (one head, batch 1, just past the dense fallback) initialises the libraries
    # and the code path, so their one-off buffers are not charged to the case.
    build_case(method, mode, cfg, cfg.dense_fallback_length + 2 * cfg.block_size, batch=1, heads=1)()
    step = build_case(method, mode, cfg, seq_len)  # compiles flex for this shape: not the kernel's memory
    gc.collect()
    with PeakRSS() as probe:
        step()
    return {"peak_mb": probe.peak_mb, "memory_method": probe.method}


def run_attention_bench(cfg: AttentionBenchConfig, progress: bool = False) -> dict:
    """Measure every (length, method, mode) and return a JSON-ready dict.

    `result["rows"]`: one dict per case with `length, method, mode, path, median_ms, times_ms,
    minor_faults` (per timed round), `forward_gflop, peak_mb` (`gflop_per_s` for forward rows), or
    `skipped` with the reason;
    `result["notes"]`: why a case that should have run did not. `progress` shows a tqdm bar on stderr.
    """
    allocator.configure(cfg.allocator)
    try:
        return _run_attention_bench(cfg, progress)
    finally:
        allocator.configure("default")  # the caller's process goes on with glibc's own


def _run_attention_bench(cfg: AttentionBenchConfig, progress: bool) -> dict:
    torch.set_num_threads(cfg.threads)
    load_start = load_average()
    cases = [(n, m, mode) for n in cfg.lengths for m in cfg.methods for mode in cfg.modes]
    rows = {(n, m, mode): {"length": n, "method": m, "mode": mode} for n, m, mode in cases}
    notes: list[str] = []
    with tqdm(total=len(cases) * (1 + cfg.memory), disable=not progress, desc="bench attention", unit="case") as bar:
        for n in cfg.lengths:
            steps = _build_cases(cfg, n, rows, notes)
            bar.update((len(cfg.methods) * len(cfg.modes) - len(steps)) * (1 + cfg.memory))
            bar.set_postfix_str(f"n={n} timing")
            times = _time_interleaved(steps, cfg)
            for (method, mode), values in times.items():
                _record_times(rows[(n, method, mode)], values, forward_gflop(method, cfg, n))
                bar.update(1)
            del steps
            gc.collect()
            if cfg.memory:
                for method, mode in times:
                    bar.set_postfix_str(f"n={n} memory {method} {mode}")
                    rows[(n, method, mode)].update(_isolated_memory(method, mode, cfg, n))
                    bar.update(1)
    kernel = {"native_available": native.available(), "native_error": native.unavailable_reason()}
    machine = machine_info()
    machine["load_average_start"], machine["load_average_end"] = load_start, load_average()
    return {"benchmark": "attention", "machine": machine, "kernel": kernel, "config": asdict(cfg),
            "command": command_line(cfg), "calibration": gemm_calibration(kernel_tile(cfg)),
            "rows": [rows[c] for c in cases], "notes": notes}


def kernel_tile(cfg: AttentionBenchConfig) -> tuple[int, int, int, int]:
    """The batched product our kernel runs at the longest length: every query block of every head
    against its window, global and random key blocks `(count, block, head_dim) @ (count, head_dim, keys)`."""
    blocks = max(cfg.lengths) // cfg.block_size
    keys = (3 + 2 + cfg.random_blocks) * cfg.block_size
    return cfg.batch * cfg.heads * blocks, cfg.block_size, cfg.head_dim, keys


def _build_cases(cfg: AttentionBenchConfig, n: int, rows: dict, notes: list[str]) -> dict[tuple, Case]:
    """The cases of one length that can run here; the others' rows get `skipped` with the reason."""
    cases = {}
    for method in cfg.methods:
        for mode in cfg.modes:
            row = rows[(n, method, mode)]
            reason = skip_reason(method, cfg, n, mode)
            if reason is None:
                try:
                    cases[(method, mode)] = build_case(method, mode, cfg, n)
                    row["path"] = cases[(method, mode)].path
                    continue
                except CaseUnavailable as exc:  # a column that measured nothing is better than a wrong one
                    reason = str(exc)
                    log.warning("bench attention: %s not measured at %d tokens: %s", METHODS[method], n, exc)
                    notes.append(f"{METHODS[method]} not measured ({mode}, from {n} tokens on): {exc}.")
            row["skipped"] = reason
    return cases


def _time_interleaved(steps: dict[tuple, Case], cfg: AttentionBenchConfig) -> dict[tuple, list[tuple[float, int]]]:
    """(milliseconds, minor page faults) per timed round of each case; the cases take turns within each round."""
    times: dict[tuple, list[tuple[float, int]]] = {key: [] for key in steps}
    rounds, round_ = cfg.warmup + cfg.repeats, 0
    while round_ < rounds:
        for key, step in steps.items():
            faults, start = minor_faults(), time.perf_counter()
            step()
            elapsed = (time.perf_counter() - start) * 1e3
            if round_ >= cfg.warmup:
                times[key].append((elapsed, minor_faults() - faults))
        round_ += 1
        if round_ == cfg.warmup + 1 and steps:
            # Short cases get more rounds (up to ~min_seconds per length): medians of a few
            # millisecond-scale runs are easily skewed by other jobs on the machine.
            round_seconds = sum(v[-1][0] for v in times.values()) / 1e3
            extra = int(cfg.min_seconds / max(round_seconds, 1e-6))
            rounds = max(rounds, min(cfg.warmup + extra, cfg.warmup + cfg.max_repeats))
    return times


def _record_times(row: dict, rounds: list[tuple[float, int]], gflop: float) -> None:
    values, faults = [ms for ms, _ in rounds], [n for _, n in rounds]
    row.update(median_ms=statistics.median(values), min_ms=min(values), max_ms=max(values), times_ms=values,
               minor_faults=faults, forward_gflop=gflop)
    if row["mode"] == "forward":  # the backward's FLOPs depend on what each kernel recomputes: not counted
        row["gflop_per_s"] = gflop / (row["median_ms"] / 1e3)


def _isolated_memory(method: str, mode: str, cfg: AttentionBenchConfig, seq_len: int) -> dict:
    return run_isolated(_peak_memory_case, method, mode, asdict(cfg), seq_len)


def command_line(cfg: AttentionBenchConfig) -> str:
    """The `sdbert bench attention` command that reproduces `cfg`."""
    parts = ["sdbert bench attention", "--lengths " + ",".join(map(str, cfg.lengths)),
             f"--batch {cfg.batch}", f"--heads {cfg.heads}", f"--head-dim {cfg.head_dim}",
             f"--block-size {cfg.block_size}", f"--random-blocks {cfg.random_blocks}",
             f"--repeats {cfg.repeats}", f"--threads {cfg.threads}",
             "--backward" if cfg.backward else "--no-backward"]
    if tuple(cfg.methods) != tuple(METHODS):
        parts.append("--methods " + ",".join(cfg.methods))
    if not cfg.memory:
        parts.append("--no-memory")
    if cfg.min_seconds != AttentionBenchConfig.min_seconds:
        parts.append(f"--min-seconds {cfg.min_seconds:g}")
    if cfg.hf_max_length != AttentionBenchConfig.hf_max_length and "hf" in cfg.methods:
        parts.append(f"--hf-max-length {cfg.hf_max_length}")
    if cfg.allocator != AttentionBenchConfig.allocator:
        parts.append(f"--allocator {cfg.allocator}")
    return " ".join(parts)


# --- summaries ----------------------------------------------------------------------------------

def lookup(result: dict, key: str = "median_ms") -> dict[tuple, float | None]:
    """`{(length, method, mode): value}` from a result's rows (None where skipped)."""
    return {(r["length"], r["method"], r["mode"]): r.get(key) for r in result["rows"]}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def _pairs(methods: list[str], key: str) -> list[tuple[str, str, str]]:
    """(label, numerator, denominator): for time the speed-ups dense/ours and HF/ours+proj, for memory ours/dense."""
    wanted = ([("speed-up dense/ours", "dense", "sparse"), ("speed-up dense/pure", "dense", "sparse_pytorch"),
               ("speed-up HF/ours+proj", "hf", "sparse_proj"), ("speed-up flex/ours", "flex", "sparse")]
              if key == "median_ms" else [("ours/dense", "sparse", "dense")])
    return [(label, a, b) for label, a, b in wanted if a in methods and b in methods]


def _time_cell(row: dict | None) -> str | None:
    if not row or row.get("median_ms") is None:
        return None
    return f"{row['median_ms']:.1f} ({row['min_ms']:.1f}-{row['max_ms']:.1f})"


def _ratio_cell(a: dict | None, b: dict | None, key: str) -> str | None:
    """A ratio, or the ratio marked "within noise" when the two cases' timed rounds overlap."""
    value = ratio((a or {}).get(key), (b or {}).get(key))
    if value is None:
        return None
    noisy = key == "median_ms" and overlap(a["times_ms"], b["times_ms"])
    return f"{value:.2f}" + (" (within noise)" if noisy else "")


def summary_rows(result: dict, mode: str, key: str = "median_ms") -> tuple[list[str], list[list]]:
    """Table of one mode and one measure (`median_ms` with its min-max, or `peak_mb`) per method, with
    the ratios of `_pairs`; forward time tables add ours' achieved GFLOP/s against this run's GEMM peak."""
    cfg = result["config"]
    found = {(r["length"], r["method"], r["mode"]): r for r in result["rows"]}
    values = lookup(result, key)
    # A method that measured nothing in this table (FlexAttention that did not compile) gets no column.
    methods = [m for m in cfg["methods"] if any(values[(n, m, mode)] is not None for n in cfg["lengths"])]
    pairs = _pairs(methods, key)
    timed = key == "median_ms"
    header = ["n"] + [f"{METHODS[m]} {'ms (min-max)' if timed else 'MiB'}" for m in methods]
    header += [label for label, _, _ in pairs]
    peak = timed and mode == "forward" and "sparse" in methods and "calibration" in result
    header += ["ours GFLOP/s", "% of tile GEMM peak"] if peak else []
    rows = []
    for n in cfg["lengths"]:
        cells = [_time_cell(found.get((n, m, mode))) if timed else values[(n, m, mode)] for m in methods]
        cells += [_ratio_cell(found.get((n, a, mode)), found.get((n, b, mode)), key) for _, a, b in pairs]
        if peak:
            rate = found[(n, "sparse", mode)].get("gflop_per_s")
            cells += [rate, percent_of_peak(rate, result["calibration"], "tile_gflops")]
        rows.append([n] + cells)
    return header, rows


def path_summary(result: dict) -> str:
    """Which attention code each method ran, from the rows' `path`: "ours: native (dense_sdpa at 512)"."""
    parts = []
    for method in result["config"]["methods"]:
        lengths: dict[str, set[int]] = {}
        for row in result["rows"]:
            if row["method"] == method and "path" in row:
                lengths.setdefault(row["path"], set()).add(row["length"])
        if not lengths:
            continue
        main = max(lengths, key=lambda path: max(lengths[path]))  # the path of the longest inputs
        others = [f"{path} at {', '.join(map(str, sorted(ns)))}" for path, ns in lengths.items() if path != main]
        parts.append(f"{METHODS[method]}: {main}" + (f" ({'; '.join(others)})" if others else ""))
    return "Attention code run: " + "; ".join(parts) + "." if parts else "No case ran."


def scaling_checks(result: dict) -> list[str]:
    """Growth of our kernel's time and memory between consecutive doubled lengths."""
    lines = []
    lengths = sorted(result["config"]["lengths"])
    t, mem = lookup(result, "median_ms"), lookup(result, "peak_mb")
    for mode in ("forward", "forward_backward"):
        for a, b in zip(lengths, lengths[1:], strict=False):
            if (a, "sparse", mode) not in t:
                continue
            parts = []
            rt, rm = ratio(t[(b, "sparse", mode)], t[(a, "sparse", mode)]), ratio(
                mem.get((b, "sparse", mode)), mem.get((a, "sparse", mode)))
            if rt is not None:
                parts.append(f"time x{rt:.2f}")
            if rm is not None:
                parts.append(f"peak memory x{rm:.2f}")
            if parts:
                lines.append(f"ours {mode.replace('_', '+')} {a} -> {b} ({b / a:g}x tokens): " + ", ".join(parts))
    return lines


def kernel_line(result: dict) -> str:
    kernel = result.get("kernel", {})
    if kernel.get("native_available"):
        return ("\"ours\" ran the native C++ kernel (`sdbert.attention.native`, compiled on first use); "
                "\"ours, pure PyTorch\" the same call with it switched off.")
    return f"\"ours\" ran the pure PyTorch kernels: the native kernel is unavailable ({kernel.get('native_error')})."


def calibration_line(calibration: dict) -> str:
    """The GEMM peak measured in the same run, which the "% of peak" columns divide by."""
    count, m, k, n = calibration["tile_shape"]
    return (f"GEMM calibration of this run (fp32, 2 FLOPs per multiply-add): "
            f"{calibration['square_gflops']:.0f} GFLOP/s for a {calibration['square_size']}^2 matmul, "
            f"{calibration['tile_gflops']:.0f} GFLOP/s for the kernel's tile ({count} x ({m} x {k}) @ ({k} x {n})).")


def faults_line(result: dict) -> str:
    """Which cases touched fresh memory in their timed rounds (median minor page faults per round)."""
    faulting = [f"{METHODS[r['method']]} {r['mode'].replace('_', '+')} at {r['length']}: "
                f"{statistics.median(r['minor_faults']):,.0f}"
                for r in result["rows"] if r.get("minor_faults") and statistics.median(r["minor_faults"]) >= 1000]
    if not any("minor_faults" in r for r in result["rows"]):
        return ""
    return ("Minor page faults per timed round (median; a fault is a fresh 4 KiB page the OS zeroes): "
            + ("; ".join(faulting) if faulting else "under 1,000 for every case") + ".")


def markdown_report(result: dict) -> str:
    """The BENCHMARKS.md section of a run: a pure function of its JSON (checked by re-rendering)."""
    cfg, machine, name = result["config"], result["machine"], result.get("name", "attention")
    lines = [
        "## Attention kernels (`sdbert bench attention`)" + ("" if name == "attention" else f": {name}"),
        "",
        f"Machine: {describe_machine(machine)} (a shared machine: other jobs slow every method of a round "
        "alike, but lengths timed minutes apart can see different load).",
        "",
        f"Command: `{result['command']}`",
        "",
        calibration_line(result["calibration"]) if "calibration" in result else "",
        "",
        f"Problem: batch {cfg['batch']}, {cfg['heads']} heads x {cfg['head_dim']}, block {cfg['block_size']}, "
        f"{cfg['random_blocks']} random blocks, fp32. Methods: "
        + "; ".join(f"{METHODS[m]}" for m in cfg["methods"]) + ". Times are medians (min-max) of at least "
        f"{cfg['repeats']} interleaved rounds in one process (more for short lengths, about "
        f"{cfg.get('min_seconds', 0):g} s per length)"
        + ("; memory is the peak resident memory above the inputs, one fresh process per case (glibc's "
           "default allocator)" if cfg["memory"] else "; memory not measured (`--no-memory`)")
        + ". Up to "
        f"{dense_fallback_blocks(cfg['random_blocks']) * cfg['block_size']} tokens our kernel runs dense attention; "
        "HF BigBird is measured only above that length (its model switches to full attention below) "
        f"and up to {cfg.get('hf_max_length', 8192)} tokens (`--hf-max-length`).",
        "",
        kernel_line(result) + " " + path_summary(result),
    ]
    if faults_line(result):
        lines += ["", faults_line(result)]
    for key in ("median_ms", "peak_mb") if cfg["memory"] else ("median_ms",):
        for mode in ("forward", "forward_backward") if cfg["backward"] else ("forward",):
            header, rows = summary_rows(result, mode, key)
            title = ("Time (median ms), " if key == "median_ms" else "Peak memory (MiB), ") + mode.replace("_", " + ")
            lines += ["", f"### {title}", "", markdown_table(header, rows)]
    checks = scaling_checks(result)
    if checks:
        lines += ["", "Scaling of our kernel:", ""] + [f"- {c}" for c in checks]
    for note in result.get("notes", []):
        lines += ["", note]
    if result.get("plot"):
        lines += ["", f"![attention time and memory against length]({result['plot']})"]
    return "\n".join(lines)
