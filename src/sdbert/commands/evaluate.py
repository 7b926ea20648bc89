"""`sdbert evaluate`: accuracy, F1, confusion matrix and throughput on a labelled split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sdbert.commands.common import add_data_arguments, data_settings, positive_int
from sdbert.errors import ConfigError
from sdbert.hub import add_revision_argument
from sdbert.io import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model folder (PyTorch, or an ONNX export), or a hub name org/name")
    add_revision_argument(parser)
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="auto: onnxruntime when the folder holds model.onnx, else PyTorch")
    parser.add_argument("--threads", type=positive_int, help="intra-op threads of the model (default: all cores)")
    add_data_arguments(parser, training=False)
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="a seeded stratified subset of N examples")
    parser.add_argument("--seed", type=int, default=42, help="seed of the --limit subset")
    parser.add_argument("--max-length", type=positive_int, help="tokens per text (default: as trained)")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--output-json", metavar="FILE",
                        help="where to write the metrics (default: MODEL/eval_<split>.json; for a hub name "
                             "./eval_<split>.json)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sdbert.classifier import Classifier
    from sdbert.data import load_split, stratified_subset
    from sdbert.data.encoded import encode_dataset
    from sdbert.train import evaluate

    classifier = Classifier.from_pretrained(args.model, backend=args.backend, threads=args.threads,  # PyTorch or ONNX
                                            revision=args.revision)
    settings = data_settings(args)
    dataset = load_split(settings.source, args.split, text_column=args.text_column, label_column=args.label_column,
                         id2label=classifier.config.id2label, errors=args.encoding_errors, progress=settings.progress)
    if dataset.labels is None:
        raise ConfigError(f"split {args.split!r} has no labels to evaluate against")
    if args.limit and args.limit < len(dataset):
        dataset = stratified_subset(dataset, args.limit, seed=args.seed)
    max_length = classifier.max_length(args.max_length)
    truncation = args.truncation if args.truncation != "head+tail" else classifier.settings.truncation
    encoded = encode_dataset(classifier.tokenizer, dataset, max_length, truncation)
    metrics = evaluate(classifier.model, encoded, batch_size=args.batch_size, progress=not args.no_progress,
                       desc="evaluate")
    metrics.update(split=args.split, model=str(args.model), max_length=max_length, truncation=truncation,
                   backend=classifier.backend)
    if getattr(classifier.model, "quantization", None):
        metrics["quantization"] = classifier.model.quantization
    folder = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent  # a folder or FILE.onnx
    if not Path(args.model).exists():  # a hub name: not into huggingface_hub's cache
        folder = Path(".")
    out = Path(args.output_json) if args.output_json else folder / f"eval_{args.split}.json"
    write_json(out, metrics)
    print(json.dumps(metrics))
    print(f"accuracy {metrics['accuracy']:.4f} | F1 {metrics['f1']:.4f} | {metrics['examples']} examples "
          f"at {metrics['examples_per_second']:.1f}/s ({metrics['backend']}) | written to {out}")
    return 0
