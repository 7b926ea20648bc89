"""How the benchmark process allocates memory: glibc's default, or "reuse" (freed memory is kept).

By default glibc serves every allocation above a threshold (at most 32 MiB) with its own `mmap`
and hands it back on free, so a model whose forward pass allocates large intermediates pays fresh
page faults (the OS zeroes every page) on every call, and on this machine that cost swings twofold
from round to round. Hugging Face BigBird's forward does this; our kernel does not. "reuse"
switches `mmap` off and keeps up to 2 GiB of free heap, so the next call reuses freed memory and
each case is timed on its arithmetic. It is no general-purpose setting: a same-size aligned
allocation can miss the chunk it freed and grow the heap instead, which is why
`sdbert bench attention` (the one benchmark that uses it, by default; `--allocator default` opts
out) restores glibc's defaults when it ends and records the page faults of every timed round.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource

ALLOCATORS = ("reuse", "default")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h
_KEEP_BYTES = 2**31 - 1  # the largest trim threshold mallopt takes: up to 2 GiB of free heap is kept

_state = "default"


def configure(mode: str) -> str:
    """Apply `mode` ("reuse" or "default") to this process and return what now holds."""
    global _state
    if mode not in ALLOCATORS:
        raise ValueError(f"unknown allocator {mode!r}; choose from {list(ALLOCATORS)}")
    if mode == "reuse" and _state == "default":
        _state = _keep_freed_memory()
    elif mode == "default" and _state.startswith("reuse"):
        _state = _restore_defaults()
    return _state


def _keep_freed_memory() -> str:
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return "default (not glibc: reuse unavailable)"
    if not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)):
        return "default (glibc refused mallopt)"
    return "reuse (glibc: mmap off, up to 2 GiB of free heap kept)"


def _restore_defaults() -> str:
    """glibc's documented defaults (its sliding mmap threshold stays off): for a process that goes on
    after a benchmark, such as a test session."""
    mallopt = _glibc_mallopt()
    mallopt(_M_MMAP_MAX, 65536)
    mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
    return "default"


def _glibc_mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # other C libraries' mallopt take other values
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return lambda parameter, value: libc.mallopt(parameter, value) == 1


def state() -> str:
    """What the process runs with, for `machine_info()`."""
    return _state


def minor_faults() -> int:
    """Page faults served without I/O so far in this process: a fresh page the kernel had to zero."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
