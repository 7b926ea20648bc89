"""What every benchmark shares: the machine, a peak-memory probe, tables, plots and BENCHMARKS.md.

Peak memory on CPU: torch keeps no allocator statistics for the CPU, so a case runs once in a
fresh interpreter (`run_isolated`) and we read the kernel's resident-set high-water mark:
`/proc/self/clear_refs` resets it (Linux >= 4.0), `VmHWM - VmRSS` after/before the call is the
peak extra memory the call needed on top of its inputs (allocator overhead included, pages that
were never touched excluded). Where `/proc` is missing we fall back to `getrusage`'s `ru_maxrss`,
which cannot be reset and so can under-count.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import re
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sdbert import reporting
from sdbert.bench import allocator
from sdbert.cli_args import config_from_args
from sdbert.errors import ConfigError
from sdbert.io import atomic_path
from sdbert.reporting import load_average, update_markdown_section  # noqa: F401  (the benchmarks' names)


def machine_info() -> dict[str, Any]:
    """`sdbert.reporting.machine_info` plus the memory allocator this benchmark process runs with."""
    return reporting.machine_info() | {"allocator": allocator.state()}


def describe_machine(m: dict[str, Any]) -> str:
    """One line on the machine of a benchmark JSON (`machine_info` plus the load averages of the run)."""
    threads = f", {m['torch_threads']} torch threads" if "torch_threads" in m else ""
    runtime = f", onnxruntime {m['onnxruntime']}" if "onnxruntime" in m else ""
    allocator = f"; memory allocator: {m['allocator']}" if "allocator" in m else ""  # see sdbert.bench.allocator
    return (f"{m['cpu']}, {m['cpu_count']} cores{threads}, torch {m['torch']}, transformers "
            f"{m.get('transformers', '?')}{runtime}, Python {m['python']}{allocator}; load average (1 min) at "
            f"start / end: {m.get('load_average_start')} / {m.get('load_average_end')}")


def int_list(text: str) -> tuple[int, ...]:
    """argparse type for comma-separated integers ("512,4096"); ranges are the configs' to check."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_output_arguments(p, name: str, *, progress: bool = True) -> None:
    """The flags every `sdbert bench` command shares: where results go, under which name, progress bars."""
    p.add_argument("--output", type=Path, default=Path("benchmarks"),
                   help="folder for NAME.json and BENCHMARKS.md (default benchmarks)")
    p.add_argument("--name", default=name, type=section_name,
                   help=f"file stem and BENCHMARKS.md section of this run (default {name}), e.g. {name}_batch8")
    if progress:
        p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def section_name(text: str) -> str:
    """argparse type of `--name`: a plain file stem (it names NAME.json and a BENCHMARKS.md section)."""
    if not text or not re.fullmatch(r"[\w-]+", text):
        raise argparse.ArgumentTypeError(f"expected a plain file stem (letters, digits, _ and -), got {text!r}")
    return text


def bench_config(cls, args, **overrides):
    """A benchmark's config from its flags (`sdbert.cli_args`); an impossible one is a `ConfigError`."""
    try:
        return config_from_args(cls, args, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


# --- peak memory -------------------------------------------------------------------------------

def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
        return int(match.group(1)) if match else None
    except OSError:
        return None


class PeakRSS:
    """`with PeakRSS() as p: work()` leaves `p.peak_mb`: the resident-memory peak above the start."""

    def __enter__(self) -> PeakRSS:
        self._proc = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self._proc = _proc_status_kb("VmHWM") is not None
        except OSError:
            pass
        self._start_kb = _proc_status_kb("VmRSS") if self._proc else _maxrss_kb()
        return self

    def __exit__(self, *exc) -> None:
        end_kb = _proc_status_kb("VmHWM") if self._proc else _maxrss_kb()
        self.peak_mb = max(0, end_kb - self._start_kb) / 1024
        self.method = "VmHWM - VmRSS (clear_refs)" if self._proc else "ru_maxrss delta"


def _maxrss_kb() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a fresh interpreter (spawned) and return its result.

    `fn` must be a module-level function. A fresh process means no memory cached by an earlier
    case can hide this case's peak.
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


# --- tables, files, plots -----------------------------------------------------------------------

def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured table; numbers are right-aligned."""
    cells = [[_cell(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table for the terminal."""
    cells = [list(header)] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    def fmt(row):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def plot_scaling(path: Path, series: dict[str, dict[str, list[tuple[int, float]]]], title: str) -> bool:
    """Log-log plots of time and memory against sequence length.

    `series[panel][label] = [(length, value), ...]` with panels `"time_ms"` and `"memory_mb"`.
    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        # optional extra [plot]: without it the plot is skipped
        import matplotlib

        matplotlib.use("Agg")
        # optional extra [plot]: without it the plot is skipped
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    has_values = lambda panel: any(y for points in series.get(panel, {}).values() for _, y in points)
    panels = [p for p in ("time_ms", "memory_mb") if has_values(p)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    labels = {"time_ms": "median time (ms)", "memory_mb": "peak extra memory (MiB)"}
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, points in series[panel].items():
            points = [(x, y) for x, y in points if y is not None and y > 0]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", linestyle="--" if "bwd" in label else "-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(labels[panel])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True
