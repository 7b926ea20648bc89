"""`sdbert reproduce`: the paper's Table 1 (four systems) on IMDb, with a report and a plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["tiny", "quick", "standard", "paper"], default="quick",
                        help="tiny: random small models, < 1 min (a smoke test); quick: about 15 min on a 2-core "
                             "CPU from all-MiniLM-L6-v2; standard: about 45 min there (5,000 test reviews, 512 "
                             "tokens); paper: BigBird-RoBERTa-base, full IMDb, 4096 tokens (GPUs)")
    parser.add_argument("--data", metavar="SRC", help="IMDb archive, aclImdb/ folder or 'imdb' "
                                                      "(default: $SDBERT_DATA)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="results.json, report.md, accuracy_vs_time.png and one model folder per system")
    parser.add_argument("--teacher-init", metavar="PATH",
                        help="teacher checkpoint folder (default: the preset's, all-MiniLM-L6-v2 for quick/standard)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sdbert.reproduce import Runner, goals, make_preset, write_outputs

    preset = make_preset(args.preset, args.teacher_init)
    output = Path(args.output)
    progress = not args.no_progress and sys.stderr.isatty()
    results = Runner(preset, args.data, output, progress=progress).run()
    write_outputs(results, output)
    print((output / "report.md").read_text())
    if args.preset in ("quick", "tiny"):
        missed = [text for text, ok, _ in goals(results) if not ok]
        if missed:
            print(f"{len(missed)} goal(s) not met: " + "; ".join(missed))
    return 0
