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
  per shape (tens of seconds on a CPU, in the warm-up round). FlexAttention's CPU mode is a
  prototype and inference-only, so on CPU it is timed forward only.

Timing: for each length every case runs `warmup` times, then at least `repeats` rounds in which
the cases take turns (so background noise falls on all of them alike; short lengths get more
rounds, up to about `min_seconds` per length); we report the median.
"Forward" runs under `torch.no_grad()`; "forward+backward" backpropagates a fixed random
gradient into the inputs (and the projection weights).

Peak memory: each case runs once more in a fresh interpreter (see `sdbert.bench.report`): the
resident-memory high-water mark above the inputs, after a tiny warm-up that initialises the
libraries. One process per case means nothing cached by an earlier case hides a peak.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sdbert.attention import bigbird_plan, block_sparse_attention, dense_attention, flex, native
from sdbert.bench.report import PeakRSS, load_average, machine_info, run_isolated
from sdbert.errors import ConfigError

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

    lengths: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
    batch: int = 1
    heads: int = 12
    head_dim: int = 64
    block_size: int = 64
    random_blocks: int = 3
    repeats: int = 5
    """timed rounds per case; the median is reported"""
    warmup: int = 1
    """untimed runs per case before the timed rounds (first-call costs, plan caches)"""
    backward: bool = True
    """also time forward + backward"""
    methods: tuple[str, ...] = DEFAULT_METHODS
    memory: bool = True
    """measure peak memory (one fresh process per case: slower)"""
    min_seconds: float = 3.0
    """short lengths get extra timed rounds until about this much time per length is spent"""
    max_repeats: int = 50
    """cap on those extra rounds"""
    hf_max_length: int = 8192
    """longest sequence to run Hugging Face BigBird at (it needs ~15 GB and ~20 s a step at 16384)"""
    threads: int = field(default_factory=torch.get_num_threads)
    seed: int = 0

    def __post_init__(self):
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

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.backward else MODES[:1]

    @property
    def dense_fallback_length(self) -> int:
        """Up to this length our kernel (and HF's model) run dense attention."""
        return (5 + 2 * self.random_blocks) * self.block_size


def hf_available() -> bool:
    try:
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
    from transformers import BigBirdConfig
    from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

    config = BigBirdConfig(hidden_size=heads * cfg.head_dim, num_attention_heads=heads, attention_type="block_sparse",
                           block_size=cfg.block_size, num_random_blocks=cfg.random_blocks,
                           max_position_embeddings=max(seq_len, 4096), use_bias=True)
    return BigBirdBlockSparseAttention(config, seed=cfg.seed).train()


def _hf_masks(batch: int, seq_len: int, block_size: int):
    from transformers.models.big_bird.modeling_big_bird import BigBirdModel

    mask = torch.ones(batch, seq_len)
    blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(mask, block_size)
    return dict(band_mask=band, from_mask=from_mask, to_mask=to_mask,
                from_blocked_mask=blocked, to_blocked_mask=blocked)


def skip_reason(method: str, cfg: AttentionBenchConfig, seq_len: int, mode: str = "forward") -> str | None:
    if method == "flex":
        if not flex.available():
            return "FlexAttention unavailable (torch < 2.5 or SDBERT_FLEX=0)"
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


def build_case(method: str, mode: str, cfg: AttentionBenchConfig, seq_len: int,
               batch: int | None = None, heads: int | None = None) -> Callable[[], None]:
    """Inputs and a closure that runs one step of `method` (`mode`: forward or forward_backward)."""
    batch = cfg.batch if batch is None else batch
    heads = cfg.heads if heads is None else heads
    backward = mode == "forward_backward"
    generator = torch.Generator().manual_seed(cfg.seed)
    randn = lambda *shape: torch.randn(*shape, generator=generator).requires_grad_(backward)

    torch.manual_seed(cfg.seed)  # the same projection weights for every module case
    if method in ("dense", "sparse", "sparse_pytorch"):
        q, k, v = (randn(batch, heads, seq_len, cfg.head_dim) for _ in range(3))
        inputs = (q, k, v)
        if method == "dense":
            fn = lambda: dense_attention(q, k, v)
        elif method == "flex":
            plan = bigbird_plan(seq_len // cfg.block_size, cfg.random_blocks, heads, cfg.seed)

            def fn():
                out = flex.flex_block_sparse(q, k, v, cfg.block_size, plan, None)
                if out is None:
                    raise RuntimeError("FlexAttention failed to compile here (see the warning above)")
                return out
        else:
            use_native = method == "sparse"

            def fn():
                with native.use(use_native):
                    return block_sparse_attention(q, k, v, block_size=cfg.block_size,
                                                  num_random_blocks=cfg.random_blocks, seed=cfg.seed)
    else:
        hidden = heads * cfg.head_dim
        x = randn(batch, seq_len, hidden)
        inputs = (x,)
        if method == "hf":
            module = _hf_module(cfg, seq_len, heads)
            masks = _hf_masks(batch, seq_len, cfg.block_size)
            fn = lambda: module(x, **masks)[0]
        else:
            module = SparseSelfAttention(hidden, heads, cfg.block_size, cfg.random_blocks, cfg.seed)
            fn = lambda: module(x)
        module.requires_grad_(backward)
        inputs = inputs + tuple(module.parameters())

    if not backward:
        def step():
            with torch.no_grad():
                fn()
        return step

    # Shape known up front: running fn() here would leave freed heap that hides part of the peak.
    out_shape = (batch, heads, seq_len, cfg.head_dim) if method not in ("sparse_proj", "hf") else x.shape
    grad_out = torch.randn(out_shape, generator=generator)

    def step():
        for t in inputs:
            t.grad = None
        fn().backward(grad_out)
    return step


# --- measuring ----------------------------------------------------------------------------------

def _peak_memory_case(method: str, mode: str, cfg_dict: dict, seq_len: int) -> dict:
    """Runs in a fresh interpreter: peak extra memory (MiB) of one step of a case."""
    cfg = AttentionBenchConfig(**cfg_dict)
    torch.set_num_threads(cfg.threads)
    # A tiny warm-up (one head, batch 1, just past the dense fallback) initialises the libraries
    # and the code path, so their one-off buffers are not charged to the case.
    build_case(method, mode, cfg, cfg.dense_fallback_length + 2 * cfg.block_size, batch=1, heads=1)()
    step = build_case(method, mode, cfg, seq_len)
    if method == "flex":
        step()  # compile for this shape first: the compiler's memory is not the kernel's
    gc.collect()
    with PeakRSS() as probe:
        step()
    return {"peak_mb": probe.peak_mb, "memory_method": probe.method}


def run_attention_bench(cfg: AttentionBenchConfig, progress: bool = False) -> dict:
    """Measure every (length, method, mode) and return a JSON-ready dict.

    `result["rows"]`: one dict per case with `length, method, mode, median_ms, times_ms, peak_mb`
    (or `skipped` with the reason). `progress` shows a tqdm bar on stderr.
    """
    from tqdm.auto import tqdm

    torch.set_num_threads(cfg.threads)
    load_start = load_average()
    cases = [(n, m, mode) for n in cfg.lengths for m in cfg.methods for mode in cfg.modes]
    rows: dict[tuple, dict] = {}
    total = len(cases) * (1 + cfg.memory)
    with tqdm(total=total, disable=not progress, desc="bench attention", unit="case") as bar:
        for n in cfg.lengths:
            steps = {}
            for method in cfg.methods:
                for mode in cfg.modes:
                    row = rows[(n, method, mode)] = {"length": n, "method": method, "mode": mode}
                    reason = skip_reason(method, cfg, n, mode)
                    if reason:
                        row["skipped"] = reason
                        bar.update(1 + cfg.memory)
                        continue
                    steps[(method, mode)] = build_case(method, mode, cfg, n)
            times = {key: [] for key in steps}
            bar.set_postfix_str(f"n={n} timing")
            rounds, round_ = cfg.warmup + cfg.repeats, 0
            while round_ < rounds:
                for key, step in steps.items():  # cases take turns within each round
                    start = time.perf_counter()
                    step()
                    elapsed = (time.perf_counter() - start) * 1e3
                    if round_ >= cfg.warmup:
                        times[key].append(elapsed)
                round_ += 1
                if round_ == cfg.warmup + 1 and steps:
                    # Short cases get more rounds (up to ~min_seconds per length): medians of a few
                    # millisecond-scale runs are easily skewed by other jobs on the machine.
                    round_seconds = sum(v[-1] for v in times.values()) / 1e3
                    extra = int(cfg.min_seconds / max(round_seconds, 1e-6))
                    rounds = max(rounds, min(cfg.warmup + extra, cfg.warmup + cfg.max_repeats))
            for (method, mode), values in times.items():
                rows[(n, method, mode)].update(median_ms=statistics.median(values), times_ms=values)
                bar.update(1)
            del steps
            gc.collect()
            if cfg.memory:
                for method, mode in times:
                    bar.set_postfix_str(f"n={n} memory {method} {mode}")
                    rows[(n, method, mode)].update(_isolated_memory(method, mode, cfg, n))
                    bar.update(1)
    kernel = {"native_available": native.available(), "native_error": native._state.get("error")}
    machine = machine_info()
    machine["load_average_start"], machine["load_average_end"] = load_start, load_average()
    return {"benchmark": "attention", "machine": machine, "kernel": kernel, "config": asdict(cfg),
            "command": command_line(cfg), "rows": [rows[c] for c in cases]}




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
    return " ".join(parts)


# --- summaries ----------------------------------------------------------------------------------

def lookup(result: dict, key: str = "median_ms") -> dict[tuple, float | None]:
    """`{(length, method, mode): value}` from a result's rows (None where skipped)."""
    return {(r["length"], r["method"], r["mode"]): r.get(key) for r in result["rows"]}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def summary_rows(result: dict, mode: str, key: str = "median_ms") -> tuple[list[str], list[list]]:
    """Table of one mode and one measure (`median_ms` or `peak_mb`) per method, with ratios:
    for time the speed-ups dense/ours and HF/ours+proj, for memory ours/dense."""
    cfg = result["config"]
    methods = cfg["methods"]
    values = lookup(result, key)
    unit = "ms" if key == "median_ms" else "MiB"
    header = ["n"] + [f"{METHODS[m]} {unit}" for m in methods]
    has = lambda *ms: all(m in methods for m in ms)
    pairs = []  # (label, numerator method, denominator method)
    if key == "median_ms":
        if has("dense", "sparse"):
            pairs.append(("speed-up dense/ours", "dense", "sparse"))
        if has("dense", "sparse_pytorch"):
            pairs.append(("speed-up dense/pure", "dense", "sparse_pytorch"))
        if has("hf", "sparse_proj"):
            pairs.append(("speed-up HF/ours+proj", "hf", "sparse_proj"))
        if has("flex", "sparse"):
            pairs.append(("speed-up flex/ours", "flex", "sparse"))
    elif has("dense", "sparse"):
        pairs.append(("ours/dense", "sparse", "dense"))
    header += [label for label, _, _ in pairs]
    rows = []
    for n in cfg["lengths"]:
        row = [n] + [values[(n, m, mode)] for m in methods]
        row += [ratio(values[(n, a, mode)], values[(n, b, mode)]) for _, a, b in pairs]
        rows.append(row)
    return header, rows


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
