"""Does a rerun reproduce the speed-ups of a committed run? Every ratio, side by side.

    python tools/bench_compare.py benchmarks /tmp/clone/benchmarks   # exit 1 if any ratio falls outside
    python tools/bench_compare.py benchmarks/previous_run benchmarks --output benchmarks   # + reproduction.json

For each speed-up the README quotes (dense/ours and HF/ours+proj attention, full/block-sparse encoders,
teacher/student models, HF/ours training loops), the reference run gives its median ratio and its
round range: the slowest round of one case over the fastest of the other, and the other way round.
The rerun reproduces a ratio when its median ratio falls inside that range. Runs on different
machines (CPU model, cores, threads, torch) are listed side by side but never count as a reproduction:
the same kernel's speed-up over dense SDPA differs between CPU families.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from sdbert.bench.report import markdown_table, update_markdown_section
from sdbert.io import write_json

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


def speedup_runs(folder: Path) -> dict[str, dict]:
    """The benchmark JSONs in `folder` that hold speed-ups, by file stem, each read once."""
    runs = {}
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        if result.get("benchmark") in READERS:
            runs[path.stem] = result
    return runs


def ratios(runs: dict[str, dict]) -> dict[str, Ratio]:
    """Every speed-up of every run, named `FILE_STEM: what length`."""
    return {f"{stem}: {name}": value for stem, result in runs.items()
            for name, value in READERS[result["benchmark"]](result).items()}


def machines(runs: dict[str, dict]) -> list[str]:
    """The distinct machines the runs ran on: CPU, cores, threads and torch (not the allocator, which a
    benchmark may set for itself)."""
    found = {f"{m.get('cpu')}, {m.get('cpu_count')} cores, {m.get('torch_threads')} torch threads, "
             f"torch {m.get('torch')}" for m in (result.get("machine") for result in runs.values())
             if isinstance(m, dict)}
    return sorted(found)


def compare(reference: Path, rerun: Path) -> list[tuple[str, Ratio, Ratio, bool]]:
    """(name, reference ratio, rerun ratio, rerun's median inside the reference's round range) per shared ratio."""
    return matched(ratios(speedup_runs(reference)), ratios(speedup_runs(rerun)))


def matched(ref: dict[str, Ratio], new: dict[str, Ratio]) -> list[tuple[str, Ratio, Ratio, bool]]:
    return [(name, ref[name], new[name], ref[name][1] <= new[name][0] <= ref[name][2])
            for name in sorted(ref, key=by_length) if name in new]


def by_length(name: str) -> tuple[str, int]:
    """Order `FILE: what LENGTH` names by what, then by length as a number (512 before 2048)."""
    what, _, length = name.rpartition(" ")
    return what, int(length) if length.isdigit() else 0


def result_of(reference: Path, rerun: Path, command: str) -> dict:
    """The comparison as a benchmark JSON (`reproduction.json`), rendered by `markdown_report`."""
    ref_runs, new_runs = speedup_runs(reference), speedup_runs(rerun)
    rows = [{"ratio": name, "median": median, "low": low, "high": high, "rerun": rerun_median,
             "rerun_low": rerun_low, "rerun_high": rerun_high, "inside": inside}
            for name, (median, low, high), (rerun_median, rerun_low, rerun_high), inside
            in matched(ratios(ref_runs), ratios(new_runs))]
    return {"benchmark": "compare", "name": "reproduction", "command": command,
            "reference": str(reference), "rerun": str(rerun), "rows": rows,
            "reference_machines": machines(ref_runs), "rerun_machines": machines(new_runs)}


def same_machine(result: dict) -> bool:
    """Both runs on one and the same machine (a folder that mixes machines is not one)."""
    return len(result["reference_machines"]) == 1 and result["reference_machines"] == result["rerun_machines"]


def machine_sentence(result: dict) -> str:
    """Where the two runs ran, and whether that allows calling them a reproduction."""
    ref, new = "; ".join(result["reference_machines"]), "; ".join(result["rerun_machines"])
    if same_machine(result):
        return f"Both runs: {ref}."
    return (f"Reference: {ref or 'unknown machine'}; rerun: {new or 'unknown machine'}. Different (or unknown) "
            "machines: the ratios are listed, but this is not a reproduction.")


def reproduced(result: dict) -> bool:
    """Every ratio inside the reference's range, on the same machine, with at least one ratio."""
    return bool(result["rows"]) and same_machine(result) and all(r["inside"] for r in result["rows"])


def markdown_report(result: dict) -> str:
    rows = [(r["ratio"], f"{r['median']:.2f}x", f"{r['low']:.2f}-{r['high']:.2f}", f"{r['rerun']:.2f}x",
             f"{r['rerun_low']:.2f}-{r['rerun_high']:.2f}", "yes" if r["inside"] else "**no**")
            for r in result["rows"]]
    inside = sum(r["inside"] for r in result["rows"])
    return "\n".join([
        "## Reproduction: a rerun's speed-ups against a reference run (`python tools/bench_compare.py`)", "",
        f"Command: `{result['command']}`", "",
        f"Reference: `{result['reference']}`; rerun: `{result['rerun']}`. A speed-up reproduces when the rerun's "
        "median ratio lies within the range the reference's rounds allow (its slowest round of one case over "
        "the fastest of the other, and the other way round); the rerun's own range is shown beside it.", "",
        machine_sentence(result), "",
        markdown_table(("speed-up", "reference", "reference rounds allow", "rerun", "rerun rounds allow", "inside"),
                       rows), "",
        f"{inside} of {len(rows)} speed-ups inside the reference's range"
        + (" (reproduced)." if reproduced(result) else "." if same_machine(result) else
           ": different machines, not a reproduction.")])


def print_rows(result: dict) -> None:
    for r in result["rows"]:
        print(f"{r['ratio']}: {r['median']:.2f}x (rounds {r['low']:.2f}-{r['high']:.2f}), rerun {r['rerun']:.2f}x"
              + ("" if r["inside"] else "  OUTSIDE"))
    inside = sum(r["inside"] for r in result["rows"])
    print(f"{inside} of {len(result['rows'])} ratios inside the reference's round range")
    if not same_machine(result):
        print(machine_sentence(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/bench_compare.py", description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="folder of the reference run's benchmark JSONs")
    parser.add_argument("rerun", type=Path, help="folder of the rerun's benchmark JSONs")
    parser.add_argument("--output", type=Path, help="write reproduction.json and its BENCHMARKS.md section here")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    command = "python tools/bench_compare.py " + shlex.join(argv)
    result = result_of(args.reference, args.rerun, command)
    print_rows(result)
    if args.output is not None:
        write_report(result, args.output)
    return 0 if reproduced(result) else 1


def write_report(result: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "reproduction.json", result)
    update_markdown_section(folder / "BENCHMARKS.md", "reproduction", markdown_report(result))


if __name__ == "__main__":
    raise SystemExit(main())
