"""`sdbert export`: write a model as a Hugging Face folder (transformers loads it) or as ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbert.cli_args import positive_int
from sdbert.errors import ConfigError
from sdbert.export import HF_CLASSES, export_hf, export_onnx, load_for_export
from sdbert.hub import add_revision_argument
from sdbert.model_card import read_run, write_model_card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="sdbert (or Hugging Face) model folder, or a hub name org/name")
    add_revision_argument(parser)
    parser.add_argument("--format", required=True, choices=["hf", "onnx"],
                        help="hf: a folder AutoModelForSequenceClassification/AutoTokenizer/pipeline() load; "
                             "onnx: model.onnx + config.json + tokenizer.json (sdbert predict/serve take it)")
    parser.add_argument("--output", required=True, metavar="OUT", help="folder to write (or FILE.onnx)")
    parser.add_argument("--hf-architecture", choices=["auto", "bert", "big_bird", "sdbert"], default="auto",
                        help="sdbert: custom code (modeling_sdbert.py + auto_map; trust_remote_code=True) with our "
                             "block-sparse attention, pooling and head, exact for every model; bert, big_bird: stock "
                             "BERT/BigBird classes, refused where they cannot match ours; auto: the stock class "
                             "where it is exact at every length, else sdbert")
    parser.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="onnx only: dynamic int8 weights (onnxruntime quantize_dynamic), ~4x smaller; "
                             "logits are close to, not equal to, fp32: check accuracy with sdbert evaluate")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip loading the export back and comparing its logits with ours")


def run(args: argparse.Namespace) -> int:
    if args.quantize and args.format != "onnx":
        raise ConfigError("--quantize applies to --format onnx only")
    source, output = Path(args.model).resolve(), Path(args.output).resolve()
    if source.exists() and (output == source or source in output.parents):
        raise ConfigError(f"--output {args.output} is (inside) the --model folder: the export would replace the "
                          "model it reads; choose another folder")
    model, tokenizer, settings = load_for_export(args.model, revision=args.revision)
    if args.format == "hf":
        result = export_hf(model, args.output, tokenizer=tokenizer, settings=settings,
                           architecture=args.hf_architecture, overwrite=args.overwrite, verify=args.verify)
        what = HF_CLASSES[result.architecture] + (" (custom code)" if result.architecture == "sdbert" else "")
    else:
        result = export_onnx(model, args.output, tokenizer=tokenizer, settings=settings, opset=args.opset,
                             quantize=args.quantize, overwrite=args.overwrite, verify=args.verify)
        what = (f"ONNX ({result.architecture} attention, dynamic batch and sequence axes"
                + (f", {result.quantization} weights)" if result.quantization else ")"))
    if result.path.is_dir():  # a bare FILE.onnx has no folder to describe
        custom = result.architecture == "sdbert"
        card_format = "onnx" if args.format == "onnx" else "hf_custom" if custom else "hf_stock"
        write_model_card(result.path, read_run(args.model), fmt=card_format,
                         config=model.config.to_dict() | settings.to_config_dict())
    if result.max_abs_diff is None:
        check = ""
    elif result.quantization:
        check = f"; logits close to ours (max abs diff {result.max_abs_diff:.1e}, int8 tolerance)"
    else:
        check = f"; logits match ours (max abs diff {result.max_abs_diff:.1e})"
    print(f"wrote {result.path}: {what}{check}")
    for note in result.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"sdbert export: warning: {warning}", file=sys.stderr)
    return 0
