"""`sdbert predict`: classify texts; one JSON line per input with the label and probabilities."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdbert.classifier import Classifier
from sdbert.commands.common import positive_int
from sdbert.errors import DataError
from sdbert.hub import add_revision_argument
from sdbert.precision import PRECISION_HELP, PRECISIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model folder (PyTorch, or an ONNX export), or a hub name org/name")
    add_revision_argument(parser)
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="text files, one document each; '-' or nothing reads one document per stdin line")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                        help="auto: onnxruntime when the folder holds model.onnx, else PyTorch")
    parser.add_argument("--threads", type=positive_int, help="intra-op threads of the model (default: all cores)")
    parser.add_argument("--max-length", type=positive_int, help="tokens per text (default: as trained)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)


def read_inputs(files: list[str]) -> list[tuple[str, str]]:
    """(name, text) pairs: each file is one document; stdin gives one document per non-empty line."""
    inputs = []
    for name in files or ["-"]:
        if name == "-":
            inputs += [(f"stdin:{i + 1}", line.rstrip("\n")) for i, line in enumerate(sys.stdin) if line.strip()]
            continue
        path = Path(name)
        if not path.is_file():
            raise DataError(f"missing file: {path}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise DataError(f"{path} is empty")
        inputs.append((name, text))
    return inputs


def run(args: argparse.Namespace) -> int:
    # a PyTorch model folder or an ONNX export; must have a tokenizer
    classifier = Classifier.from_pretrained(args.model, backend=args.backend, threads=args.threads,
                                            revision=args.revision, precision=args.precision)
    inputs = read_inputs(args.files)
    if not inputs:
        raise DataError("no input text (give files, or lines on stdin)")
    results = classifier([text for _, text in inputs], max_length=args.max_length, batch_size=args.batch_size)
    for (name, _), result in zip(inputs, results, strict=True):
        print(json.dumps({"input": name, "label": result["label"], "score": round(result["score"], 6),
                          "probabilities": {k: round(p, 6) for k, p in result["probabilities"].items()},
                          "truncated": result["truncated"]}))
    cut = sum(r["truncated"] for r in results)
    if cut:
        print(f"sdbert predict: {cut} of {len(results)} texts were longer than the model reads "
              f"({classifier.max_length(args.max_length)} tokens, {classifier.settings.truncation} kept): part of each "
              "was not seen", file=sys.stderr)
    return 0
