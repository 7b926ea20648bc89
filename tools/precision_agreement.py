"""bf16 against fp32 inference of one model: label agreement on test reviews, and the speed of each.

    python tools/precision_agreement.py runs/quick/sparse_teacher --data aclImdb_v1.tar.gz \\
        --limit 1000 --output benchmarks/recipe/precision_agreement.json

Predicts a seeded stratified sample of test reviews in fp32 and in bf16 autocast (the same weights,
batches and lengths) and records how many predicted labels agree, the largest probability difference,
both accuracies, and the throughput of each from interleaved timed rounds (median and range) on
the first `--timing-reviews` of them, with the machine and its load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from sdbert.bench.report import load_average, machine_info
from sdbert.bench.timing import interleaved_rounds, speedup, spread
from sdbert.classifier import Classifier
from sdbert.data import load_split, stratified_subset
from sdbert.errors import SDBertError
from sdbert.inference import predict_logits
from sdbert.io import write_json
from sdbert.precision import bf16_speedup


def measure(args: argparse.Namespace) -> dict:
    classifier = Classifier.from_pretrained(args.model)
    reviews = stratified_subset(load_split(args.data, "test", id2label=classifier.config.id2label), args.limit,
                                seed=args.seed)
    ids = classifier.encode(reviews.texts)
    start, load = time.perf_counter(), load_average()
    logits = {p: predict_logits(classifier.model, ids, batch_size=args.batch_size, precision=p)
              for p in ("fp32", "bf16")}
    labels = {p: logits[p].argmax(-1) for p in logits}
    probabilities = {p: logits[p].softmax(-1) for p in logits}
    truth = torch.as_tensor(reviews.labels)
    sample = ids[: args.timing_reviews]
    times = interleaved_rounds({p: lambda p=p: predict_logits(classifier.model, sample, batch_size=args.batch_size,
                                                              precision=p) for p in ("fp32", "bf16")},
                               rounds=args.rounds, warmup=1)
    return {
        "model": str(args.model), "reviews": len(ids), "seed": args.seed, "batch_size": args.batch_size,
        "agreement": round(float((labels["fp32"] == labels["bf16"]).float().mean()), 4),
        "disagreements": int((labels["fp32"] != labels["bf16"]).sum()),
        "max_probability_difference": round(float((probabilities["fp32"] - probabilities["bf16"]).abs().max()), 5),
        "accuracy": {p: round(float((labels[p] == truth).float().mean()), 4) for p in labels},
        "timing": {"reviews": len(sample), "rounds": args.rounds,
                   **{p: {"median_s": round(spread(t)["median"], 3), "min_s": round(min(t), 3),
                          "max_s": round(max(t), 3), "reviews_per_second": round(len(sample) / spread(t)["median"], 2)}
                      for p, t in times.items()},
                   "bf16_over_fp32": speedup(times["fp32"], times["bf16"])},
        "calibration_bf16_speedup": bf16_speedup(),
        "machine": machine_info() | {"load_average_start": load, "load_average_end": load_average()},
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model folder")
    parser.add_argument("--data", required=True, help="IMDb archive or a folder/file with a test split")
    parser.add_argument("--limit", type=int, default=1000, help="test reviews (seeded stratified sample)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--timing-reviews", type=int, default=200, help="reviews per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, fp32 and bf16 interleaved")
    parser.add_argument("--output", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    try:
        result = measure(args)
    except SDBertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["command"] = "python tools/precision_agreement.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.output:
        write_json(args.output, result)
    t = result["timing"]
    print(f"{result['reviews']} reviews: fp32 and bf16 agree on {result['agreement']:.2%} of the labels "
          f"({result['disagreements']} differ; max probability difference {result['max_probability_difference']}); "
          f"accuracy fp32 {result['accuracy']['fp32']}, bf16 {result['accuracy']['bf16']}; "
          f"{t['fp32']['reviews_per_second']} vs {t['bf16']['reviews_per_second']} reviews/s "
          f"(bf16 {t['bf16_over_fp32']['ratio']}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
