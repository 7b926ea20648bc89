"""`sdbert train`: fine-tune a (block-sparse) classifier from a checkpoint or from scratch.

The flags are the fields of `FinetuneConfig`, `DataSettings` and `TrainingArguments`; the work is
`sdbert.training.finetune.finetune`."""

from __future__ import annotations

import argparse

from sdbert.cli_args import add_config_arguments, config_from_args
from sdbert.commands.common import add_data_arguments, add_training_arguments, data_settings
from sdbert.hub import add_revision_argument, resolve_flag
from sdbert.training.finetune import FinetuneConfig, finetune
from sdbert.training.loop import TrainingArguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    add_config_arguments(model, FinetuneConfig)
    add_revision_argument(model)
    add_data_arguments(parser)
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(FinetuneConfig, args, data=data_settings(args),
                              training=config_from_args(TrainingArguments, args))
    config.init = resolve_flag(config.init, args.revision, "--init")  # a hub name -> its cached snapshot
    finetune(config)
    return 0
