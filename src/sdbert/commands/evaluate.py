"""`sdbert evaluate`: accuracy, F1, confusion matrix and throughput on a labelled split.

The flags are the fields of `EvaluateConfig` and `DataSettings`; the work is `sdbert.evaluation.evaluate`."""

from __future__ import annotations

import argparse
import json

from sdbert.cli_args import add_config_arguments, config_from_args
from sdbert.commands.common import add_data_arguments, data_settings
from sdbert.evaluation import EvaluateConfig, evaluate
from sdbert.hub import add_revision_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, EvaluateConfig)
    add_revision_argument(parser)
    add_data_arguments(parser, training=False)


def run(args: argparse.Namespace) -> int:
    metrics, out = evaluate(config_from_args(EvaluateConfig, args, data=data_settings(args), revision=args.revision))
    print(json.dumps(metrics))
    print(f"accuracy {metrics['accuracy']:.4f} | F1 {metrics['f1']:.4f} | {metrics['examples']} examples "
          f"at {metrics['examples_per_second']:.1f}/s ({metrics['backend']}) | written to {out}")
    return 0
