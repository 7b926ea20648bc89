"""How every benchmark times and compares: interleaved rounds, spreads, noise verdicts, GEMM peak.

Cases compared are run round by round (A, B, A, B, ...) in one process, so background load falls
on all of them alike. Each case reports the median and the spread (min-max) of its rounds; a
speed-up is printed as a number only when the two cases' rounds do not overlap, else as
"within noise". A GEMM calibration of the same run gives the machine's measured fp32 peak, so a
table can say "% of measured peak" instead of quoting a number from another day.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from sdbert.attention import native
from sdbert.bench.report import load_average, machine_info


def interleaved_rounds(steps: dict[str, Callable[[], object]], *, rounds: int,
                       warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each timed round of each case; within a round the cases take turns."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(warmup + rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of a case's rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def overlap(a: list[float], b: list[float]) -> bool:
    """True when the ranges of two cases' rounds overlap: their order is not settled by this run."""
    return max(min(a), min(b)) <= min(max(a), max(b))


def speedup(slow: list[float], fast: list[float]) -> dict:
    """How many times faster `fast` is than `slow` (ratio of medians) and whether that is noise."""
    ratio = statistics.median(slow) / statistics.median(fast)
    return {"ratio": round(ratio, 3), "within_noise": overlap(slow, fast)}


def speedup_text(result: dict) -> str:
    return f"{result['ratio']:.2f}x (within noise: rounds overlap)" if result["within_noise"] else \
        f"{result['ratio']:.2f}x"


def _gflops(fn: Callable[[], object], flop: float, rounds: int) -> float:
    fn()  # warm-up: first-call allocation and thread-pool start
    seconds = [_timed(fn) for _ in range(rounds)]
    return flop / statistics.median(seconds) / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gemm_calibration(tile: tuple[int, int, int, int] | None = None, *, size: int = 1024,
                     rounds: int = 7) -> dict:
    """Measured GFLOP/s (2 FLOPs per multiply-add) of a square `size` matmul in fp32 and bf16 and, if given,
    of a batched fp32 `(count, m, k) @ (count, k, n)` tile: the shape a block-sparse kernel multiplies.
    A case that ran in bf16 is measured against the bf16 rate (`peak_key`)."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator) for _ in range(2))
    out = {"square_size": size, "square_gflops": _gflops(lambda: a @ b, 2.0 * size**3, rounds)}
    a16, b16 = a.bfloat16(), b.bfloat16()
    out["square_gflops_bf16"] = _gflops(lambda: a16 @ b16, 2.0 * size**3, rounds)
    if tile is not None:
        count, m, k, n = tile
        x, y = torch.randn(count, m, k, generator=generator), torch.randn(count, k, n, generator=generator)
        out.update(tile_shape=list(tile), tile_gflops=_gflops(lambda: x @ y, 2.0 * count * m * k * n, rounds))
    return out


def peak_key(precision: str | None) -> str:
    """The calibration entry a case's "% of peak" divides by: the rate of the format it ran in."""
    return "square_gflops_bf16" if precision == "bf16" else "square_gflops"


def percent_of_peak(gflops: float | None, calibration: dict, key: str = "square_gflops") -> float | None:
    peak = calibration.get(key)
    return None if not gflops or not peak else round(100 * gflops / peak, 1)


def provenance(command: str) -> dict:
    """What a benchmark JSON records before it starts: the machine, the command, the load, and which
    CPU kernel block-sparse attention will run (the native C++ one, or the PyTorch fallback and why)."""
    machine = machine_info()
    machine["load_average_start"] = load_average()
    kernel = {"native_available": native.available(), "native_error": native.unavailable_reason()}
    return {"machine": machine, "command": command, "kernel": kernel}


def kernel_text(record: dict) -> str:
    """One line for a report: which block-sparse kernel ran on the CPU."""
    kernel = record.get("kernel")
    if kernel is None:
        return ""
    if kernel["native_available"]:
        return "Block-sparse attention ran the native C++ kernel on the CPU."
    return ("Block-sparse attention ran the pure PyTorch kernels: the native one is unavailable "
            f"({kernel['native_error']}).")


def finish(record: dict) -> dict:
    """Record the load at the end (a rise means other work shared the machine during the run)."""
    record["machine"]["load_average_end"] = load_average()
    return record
