"""Does a rerun reproduce the speed-ups of a committed run? Every ratio, side by side.

    python -m sdbert.bench.compare benchmarks /tmp/clone/benchmarks   # exit 1 if any ratio falls outside

For each speed-up the README quotes (dense/ours and HF/ours+proj attention, full/block-sparse encoders,
teacher/student models, HF/ours training loops), the reference run gives its median ratio and its
round range: the slowest round of one case over the fastest of the other, and the other way round.
The rerun reproduces a ratio when its median ratio falls inside that range.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

Ratio = tuple[float, float, float]  # median ratio, lowest and highest ratio of any two rounds


def ratio(slow: list[float], fast: list[float]) -> Ratio:
    """`slow` / `fast` from two cases' rounds: the medians' ratio and the range the rounds allow."""
    return statistics.median(slow) / statistics.median(fast), min(slow) / max(fast), max(slow) / min(fast)


def attention_ratios(result: dict) -> dict[str, Ratio]:
    rows = {(r["length"], r["method"], r["mode"]): r["times_ms"] for r in result["rows"] if "times_ms" in r}
    out = {}
    for (n, method, mode), times in rows.items():
        for slow, fast in (("dense", "sparse"), ("hf", "sparse_proj")):
            if method == fast and (n, slow, mode) in rows:
                out[f"{slow}/{fast} {mode} {n}"] = ratio(rows[(n, slow, mode)], times)
    return out


def encoder_ratios(result: dict) -> dict[str, Ratio]:
    return {f"full/block_sparse {row['length']}": ratio(row["times_s"]["full"], row["times_s"]["block_sparse"])
            for row in result["rows"]}


def model_ratios(result: dict) -> dict[str, Ratio]:
    rows = {(r["model"], r["length"]): r["times_ms"] for r in result["rows"] if "times_ms" in r}
    out = {}
    for (name, n), times in rows.items():
        teacher = name.replace("student", "sparse teacher")
        if name.endswith("student") and (teacher, n) in rows:
            out[f"{teacher}/{name} {n}"] = ratio(rows[(teacher, n)], times)
    return out


def train_ratios(result: dict) -> dict[str, Ratio]:
    out = {}
    for section in result["lengths"]:
        cases = {c["case"]: c["times_s"] for c in section["cases"] if "times_s" in c}
        for name, times in cases.items():
            if name != "hf" and "hf" in cases:
                out[f"hf/{name} {section['length']}"] = ratio(cases["hf"], times)
    return out


READERS = {"attention": attention_ratios, "encoder": encoder_ratios, "model": model_ratios, "train": train_ratios}


def ratios(folder: Path) -> dict[str, Ratio]:
    """Every speed-up of every benchmark JSON in `folder` that has one, named `FILE_STEM: what length`."""
    out: dict[str, Ratio] = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        reader = READERS.get(result.get("benchmark"))
        if reader is not None:
            out.update({f"{path.stem}: {name}": value for name, value in reader(result).items()})
    return out


def compare(reference: Path, rerun: Path) -> list[tuple[str, Ratio, float, bool]]:
    """(name, reference ratio, rerun's median ratio, inside the reference's round range) per shared ratio."""
    ref, new = ratios(reference), ratios(rerun)
    return [(name, ref[name], new[name][0], ref[name][1] <= new[name][0] <= ref[name][2])
            for name in sorted(ref) if name in new]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m sdbert.bench.compare REFERENCE_DIR RERUN_DIR", file=sys.stderr)
        return 2
    rows = compare(Path(argv[0]), Path(argv[1]))
    for name, (median, low, high), rerun, inside in rows:
        print(f"{name}: {median:.2f}x (rounds {low:.2f}-{high:.2f}), rerun {rerun:.2f}x"
              + ("" if inside else "  OUTSIDE"))
    outside = sum(not inside for *_, inside in rows)
    print(f"{len(rows) - outside} of {len(rows)} ratios inside the reference's round range")
    return 1 if outside or not rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
