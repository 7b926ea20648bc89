"""`sdbert reproduce`: the paper's Table 1 (four systems) on IMDb, with a report and a plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbert.commands.common import fraction, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["tiny", "quick", "standard", "paper"], default="quick",
                        help="tiny: random small models, about 1 min (a smoke test); quick: sized for 15 min on a "
                             "2-core CPU from all-MiniLM-L6-v2; standard: sized for 90 min there (5,000 test "
                             "reviews, 512 tokens, 3 student seeds); paper: BigBird-RoBERTa-base, full IMDb, 4096 "
                             "tokens (GPUs)")
    parser.add_argument("--data", metavar="SRC", help="IMDb archive, aclImdb/ folder or 'imdb' "
                                                      "(default: $SDBERT_DATA)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="results.json, report.md, accuracy_vs_time.png and one model folder per system")
    parser.add_argument("--teacher-init", metavar="PATH",
                        help="teacher checkpoint folder (default: the preset's, all-MiniLM-L6-v2 for quick/standard)")
    group = parser.add_argument_group("students (override the preset)")
    group.add_argument("--student-seeds", type=positive_int, metavar="N",
                       help="train each student N times (head init, data order, dropout); the teachers are trained "
                            "once (default: 2 for quick, 3 for standard)")
    group.add_argument("--student-init", choices=["pretrained", "random", "teacher"],
                       help="pretrained (default): the teachers' starting checkpoint with a new head, a clean KD "
                            "ablation; random: the paper's; teacher: from the fine-tuned teacher (a recipe, not an "
                            "ablation)")
    group.add_argument("--alpha", type=fraction, help="weight of the label loss in KD (default 0.5)")
    group.add_argument("--kd-kind", choices=["mse", "kl"],
                       help="distillation term: the paper's squared L2 of logits (default) or Hinton's KL")
    group.add_argument("--temperature", type=positive_float, help="KL temperature (default 2)")
    parser.add_argument("--publish", metavar="DIR", type=Path,
                        help="also copy results.json and the plot into DIR as table1_<preset>.* and render its "
                             "section of DIR/BENCHMARKS.md (e.g. benchmarks)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sdbert.reproduce import Runner, make_preset
    from sdbert.table1_report import publish, write_outputs

    preset = make_preset(args.preset, args.teacher_init, student_seeds=args.student_seeds,
                         student_init=args.student_init, alpha=args.alpha, kd_kind=args.kd_kind,
                         temperature=args.temperature)
    output = Path(args.output)
    progress = not args.no_progress and sys.stderr.isatty()
    results = Runner(preset, args.data, output, progress=progress).run()
    write_outputs(results, output)
    print((output / "report.md").read_text())
    if args.publish is not None:
        print(f"published as {args.publish / publish(output, args.publish)}.json")
    return 0
