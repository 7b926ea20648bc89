"""Argument groups and helpers shared by the commands."""

from __future__ import annotations

import argparse
import sys

from sdbert.cli_args import (  # noqa: F401
    add_config_arguments,
    config_from_args,
    fraction,
    non_negative_float,
    positive_float,
    positive_int,
    ranged,
)
from sdbert.training.loop import TrainingArguments
from sdbert.training.setup import TRAINING_DATA_FIELDS, DataSettings


def add_data_arguments(parser: argparse.ArgumentParser, *, training: bool = True) -> None:
    exclude = () if training else TRAINING_DATA_FIELDS
    add_config_arguments(parser.add_argument_group("data"), DataSettings, exclude=exclude)


def data_settings(args: argparse.Namespace) -> DataSettings:
    """The data flags, with the run's seed and progress bars only on a terminal."""
    return config_from_args(DataSettings, args, eval_limit=getattr(args, "eval_limit", None) or
                            getattr(args, "limit", None), seed=getattr(args, "seed", 42),
                            progress=None if sys.stderr.isatty() else False)


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """The training loop's flags (`TrainingArguments`), with per-command `defaults` by field name."""
    add_config_arguments(parser.add_argument_group("training"), TrainingArguments, defaults=defaults)
