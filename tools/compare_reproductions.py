"""Pair two `sdbert reproduce` runs of the same preset that differ in one setting (a recipe ablation).

    python tools/compare_reproductions.py runs/quick_bert runs/quick_new --output benchmarks/recipe/x.json

For every Table 1 system present in both output folders, the runs are paired by seed on the same test
reviews (`results.json` records their labels): accuracy of B minus A with a paired bootstrap interval
over reviews, the exact McNemar p of each seed's pair, and both runs' training seconds. The JSON also
records the settings that differ and both runs' machines and wall times.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdbert.errors import SDBertError
from sdbert.io import write_json
from sdbert.paper.table import TRAINED_SYSTEMS, RunSummary, paired_comparison


def run_records(folder: Path, system: str) -> list[dict]:
    """Each seed's `result.json` of one system (teachers: one run; students: one per seed folder)."""
    files = sorted((folder / system).glob("seed_*/result.json")) or sorted((folder / system).glob("result.json"))
    return [RunSummary.from_dict(json.loads(f.read_text())) for f in files]


def b_minus_a(a: list[RunSummary], b: list[RunSummary], labels: list[int]) -> dict:
    """`paired_comparison` with B as the first system, its fields named for A and B as given."""
    c = paired_comparison(b, a, labels)
    verdict = {"A better": "B better", "B better": "A better"}.get(c["verdict"], c["verdict"])
    return {"difference_points": c["difference_points"], "interval_points": c["interval_points"],
            "only_a_correct": c["only_b_correct"], "only_b_correct": c["only_a_correct"],
            "mcnemar_p": c["mcnemar_p"], "verdict": verdict}


def compare(folder_a: Path, folder_b: Path) -> dict:
    results = [json.loads((f / "results.json").read_text()) for f in (folder_a, folder_b)]
    labels = [r["data"].get("test_labels") for r in results]
    if labels[0] is None or labels[0] != labels[1]:
        raise SDBertError("the two runs were not scored on the same recorded test reviews")
    settings = [r["settings"] for r in results]
    differ = {k: [settings[0].get(k), settings[1].get(k)] for k in sorted(set(settings[0]) | set(settings[1]))
              if settings[0].get(k) != settings[1].get(k)}
    systems = {}
    for system in TRAINED_SYSTEMS:
        a, b = run_records(folder_a, system), run_records(folder_b, system)
        if not a or [r.seed for r in a] != [r.seed for r in b]:
            continue
        systems[system] = {"seeds": [r.seed for r in a],
                           "accuracy": [[r.accuracy for r in a], [r.accuracy for r in b]],
                           "train_seconds": [[r.train_seconds for r in a], [r.train_seconds for r in b]],
                           "b_minus_a": b_minus_a(a, b, labels[0])}
    return {"a": str(folder_a), "b": str(folder_b), "preset": results[0]["preset"], "settings_differ": differ,
            "precision": [r.get("precision") for r in results], "wall_seconds": [r["wall_seconds"] for r in results],
            "hardware": [r["hardware"] for r in results], "test_examples": len(labels[0]), "systems": systems}


def markdown(result: dict) -> str:
    lines = [f"B minus A on {result['test_examples']} test reviews, preset `{result['preset']}`; A = `{result['a']}`, "
             f"B = `{result['b']}`; settings that differ (A, B): "
             + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in result["settings_differ"].items())
             + f"; wall seconds {result['wall_seconds'][0]} -> {result['wall_seconds'][1]}.", "",
             "| system | seeds | accuracy A | accuracy B | B - A (points) [95% CI] | McNemar p per seed | "
             "train s A | train s B | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for system, s in result["systems"].items():
        c = s["b_minus_a"]
        low, high = c["interval_points"]
        lines.append(f"| {system} | {s['seeds']} | {s['accuracy'][0]} | {s['accuracy'][1]} | "
                     f"{c['difference_points']:+.2f} [{low:+.2f}, {high:+.2f}] | "
                     f"{c['mcnemar_p']} | {s['train_seconds'][0]} | {s['train_seconds'][1]} | {c['verdict']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="reproduce output folder A (the baseline)")
    parser.add_argument("b", type=Path, help="reproduce output folder B (the change)")
    parser.add_argument("--output", type=Path, help="write the comparison JSON here (and print its table)")
    args = parser.parse_args(argv)
    try:
        result = compare(args.a, args.b)
    except (OSError, ValueError, KeyError, SDBertError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = "python tools/compare_reproductions.py " + " ".join(map(str, [args.a, args.b]))
    if args.output:
        write_json(args.output, result)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
