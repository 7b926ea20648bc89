"""`sdbert distill`: a small block-sparse student trained from a teacher's cached logits (or, with
`--teacher-mode online`, from the teacher run on every batch, which the hidden-state loss needs).

The flags are the fields of `DistillConfig`, `DataSettings` and `TrainingArguments`; the work is
`sdbert.training.distill.distill`."""

from __future__ import annotations

import argparse

from sdbert.cli_args import add_config_arguments, config_from_args
from sdbert.commands.common import add_data_arguments, add_training_arguments, data_settings
from sdbert.hub import resolve_flag
from sdbert.training.distill import DistillConfig, distill
from sdbert.training.loop import TrainingArguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Beyond the paper, a hidden-state loss: e.g. --hidden-weight 1 --hidden 256 matches each "
                     "student layer's output to a teacher layer's through a learned projection; the teacher then "
                     "runs online, on every batch, instead of from cached logits. The output folder holds the "
                     "student alone, like any model folder.")
    add_config_arguments(parser.add_argument_group("distillation"), DistillConfig)
    add_data_arguments(parser)
    add_training_arguments(parser, learning_rate=1e-4)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(DistillConfig, args, data=data_settings(args),
                              training=config_from_args(TrainingArguments, args))
    # Hub names -> their cached snapshots (main revision; a teacher's recorded start is a local folder already).
    config.teacher = resolve_flag(config.teacher, None, "--teacher")
    config.init_from = resolve_flag(config.init_from, None, "--init-from")
    distill(config)
    return 0
