"""Which number format a model runs in: `--precision auto|fp32|bf16`.

bf16 autocast halves the bytes of every matmul operand and, on CPUs with bf16 units (Intel AMX,
AVX512-BF16 on recent AMD and Intel parts), doubles or quadruples the matmul rate; on CPUs without
them torch emulates bf16 and it is several times *slower* than fp32. So `auto` does not guess from
the CPU's name: it times the same matmul in both formats (about 0.3 s, once per CPU model, torch
version and thread count, cached under `$SDBERT_CACHE/precision.json`) and picks bf16 only where it
is clearly faster. CUDA GPUs with bf16 support take bf16.

    choice = resolve_precision("auto", torch.device("cpu"))
    with choice.autocast("cpu"):
        logits = model(ids).logits
    choice.record()   # {"precision": "bf16", "requested": "auto", "reason": "...", "bf16_speedup": 2.1}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from typing import Literal

import torch

from sdbert.data.cache import cache_dir
from sdbert.errors import ConfigError
from sdbert.io import write_json
from sdbert.reporting import cpu_model

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS = ("auto", "fp32", "bf16")
PRECISION_HELP = ("auto: bf16 autocast where this machine runs bf16 matmul faster than fp32 (measured once per "
                  "CPU, cached), fp32 elsewhere; fp32; bf16: autocast, fp32 weights and accumulation")
MIN_SPEEDUP = 1.2
"""bf16 must beat fp32 by this factor: below it the rounding is not worth a within-noise gain."""
_CALIBRATION_SHAPE = (1024, 384, 1536)  # (tokens, width, 4 x width): a small encoder's feed-forward matmul
_memo: dict[str, float] = {}  # calibration key -> bf16 speed-up, for this process


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved format of a run, with why, for its log line and its JSON records."""

    precision: Literal["fp32", "bf16"]
    requested: str
    reason: str
    bf16_speedup: float | None = None
    """measured bf16 / fp32 matmul rate on this machine (None where not measured)"""

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def autocast(self, device: torch.device | str):
        """bf16 autocast for bf16 (weights and accumulation stay fp32); nothing for fp32."""
        device_type = torch.device(device).type
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)

    def record(self) -> dict:
        out = {"precision": self.precision, "requested": self.requested, "reason": self.reason}
        if self.bf16_speedup is not None:
            out["bf16_speedup"] = self.bf16_speedup
        return out

    def describe(self) -> str:
        return f"precision {self.precision} ({self.reason})"


def resolve_precision(requested: str | PrecisionChoice | None, device: torch.device | str = "cpu", *,
                      log: bool = True) -> PrecisionChoice:
    """The format to run in on `device` for `requested` (None means auto); logs the choice in one line."""
    if isinstance(requested, PrecisionChoice):
        return requested
    requested = requested or "auto"
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    choice = _choose(requested, torch.device(device))
    if log:
        logger.info("sdbert: %s", choice.describe())
    return choice


def _choose(requested: str, device: torch.device) -> PrecisionChoice:
    if requested == "fp32":
        return PrecisionChoice("fp32", requested, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", requested, "CUDA GPU with bf16 support")
        if requested == "bf16":
            raise ConfigError("--precision bf16: this GPU does not support bf16")
        return PrecisionChoice("fp32", requested, "this GPU has no bf16 support")
    if requested == "bf16":
        return PrecisionChoice("bf16", requested, "asked for")
    if device.type != "cpu":
        return PrecisionChoice("fp32", requested, f"no bf16 calibration for {device.type}")
    speedup = bf16_speedup()
    if speedup >= MIN_SPEEDUP:
        return PrecisionChoice("bf16", requested, f"bf16 matmul measured {speedup:.2f}x fp32 on this CPU", speedup)
    return PrecisionChoice("fp32", requested, f"bf16 matmul measured {speedup:.2f}x fp32 on this CPU "
                                              f"(needs {MIN_SPEEDUP}x)", speedup)


def bf16_speedup(*, cache: bool = True) -> float:
    """bf16 / fp32 matmul rate on this CPU at its current thread count: measured, or read from the cache."""
    key = _calibration_key()
    if key in _memo:
        return _memo[key]
    stored = _read_cache().get(key) if cache else None
    if isinstance(stored, (int, float)) and stored > 0:
        _memo[key] = float(stored)
        return _memo[key]
    _memo[key] = round(_time_matmul(torch.float32) / _time_matmul(torch.bfloat16), 2)
    if cache:
        _write_cache(key, _memo[key])
    return _memo[key]


def _time_matmul(dtype: torch.dtype, seconds: float = 0.12) -> float:
    """Median seconds of one calibration matmul in `dtype` (after a warm-up)."""
    m, k, n = _CALIBRATION_SHAPE
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen).to(dtype), torch.randn(k, n, generator=gen).to(dtype)
    for _ in range(2):
        a @ b
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _calibration_key() -> str:
    text = f"{cpu_model()}|{platform.machine()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _cache_file():
    return cache_dir() / "precision.json"


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):  # absent or corrupt: measure again
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, value: float) -> None:
    try:
        write_json(_cache_file(), {**_read_cache(), key: value})
    except OSError as exc:  # a read-only home is no reason to fail a run: measure again next time
        logger.debug("could not cache the precision calibration: %s", exc)
