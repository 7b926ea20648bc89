"""Argument groups and helpers shared by the commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sdbert.errors import ConfigError
from sdbert.pipeline import DataSettings


def ranged(cast, low=None, high=None, *, low_open: bool = False, what: str = "a number"):
    """An argparse type: `cast(text)` within [low, high] (or (low, high] with `low_open`)."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = ranged(int, 1, what="a positive integer")
fraction = ranged(float, 0.0, 1.0, what="a number in [0, 1]")
positive_float = ranged(float, 0.0, low_open=True, what="a positive number")


def add_data_arguments(parser: argparse.ArgumentParser, *, training: bool = True) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", metavar="SRC", default=None,
                       help="IMDb aclImdb_v1.tar.gz, an aclImdb/ folder, a CSV/JSONL/Parquet file (or a folder "
                            "of train.csv/test.csv), or 'imdb' to download once (default: $SDBERT_DATA)")
    group.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    group.add_argument("--label-column", default="label", help="column holding the label (default: label)")
    group.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                       help="non-UTF-8 text: fail naming the rows (strict) or decode with U+FFFD (replace)")
    group.add_argument("--truncation", choices=["head", "tail", "head+tail"], default="head+tail",
                       help="which tokens of a long text to keep (default head+tail: first 128 and the rest "
                            "from the end, best on IMDb per Sun et al. 2019)")
    if training:
        group.add_argument("--train-limit", type=positive_int, metavar="N",
                           help="train on a seeded stratified subset of N examples")
        group.add_argument("--eval-limit", type=positive_int, metavar="N",
                           help="validate on a seeded stratified subset of N examples")
        group.add_argument("--val-fraction", type=float, default=0.1,
                           help="share of train held out for validation (default 0.1, at most --val-max)")
        group.add_argument("--val-max", type=positive_int, default=2000,
                           help="largest validation split (default 2000)")


def data_settings(args: argparse.Namespace) -> DataSettings:
    return DataSettings(
        source=args.data, text_column=args.text_column, label_column=args.label_column,
        train_limit=getattr(args, "train_limit", None),
        eval_limit=getattr(args, "eval_limit", None) or getattr(args, "limit", None),
        val_fraction=getattr(args, "val_fraction", 0.1), val_max=getattr(args, "val_max", 2000),
        seed=getattr(args, "seed", 42), encoding_errors=args.encoding_errors,
        progress=None if sys.stderr.isatty() else False,
    )


def add_training_arguments(parser: argparse.ArgumentParser, *, epochs: int = 3, lr: float = 5e-5) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--output", required=True, metavar="DIR",
                       help="model folder to write (best model by validation accuracy, metrics.jsonl, checkpoints/)")
    group.add_argument("--epochs", type=positive_int, default=epochs, help=f"passes over the data (default {epochs})")
    group.add_argument("--max-steps", type=positive_int, help="stop after N optimizer steps")
    group.add_argument("--batch-size", type=positive_int, default=16,
                       help="global batch: examples per optimizer step over all processes (default 16)")
    group.add_argument("--grad-accum", type=positive_int, default=1, help="gradient accumulation steps (default 1)")
    group.add_argument("--eval-batch-size", type=positive_int, default=64)
    group.add_argument("--lr", type=positive_float, default=lr, help=f"peak learning rate (default {lr})")
    group.add_argument("--weight-decay", type=float, default=0.01)
    group.add_argument("--warmup", type=float, default=0.1, help="warm-up share of the steps (default 0.1)")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--eval-every", type=positive_int, metavar="N",
                       help="validate every N steps (default: every epoch)")
    group.add_argument("--save-every", type=positive_int, metavar="N",
                       help="checkpoint every N steps (default: at each validation)")
    group.add_argument("--keep-checkpoints", type=positive_int, default=2)
    group.add_argument("--patience", type=positive_int, metavar="N",
                       help="stop after N validations without improvement")
    group.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    group.add_argument("--overwrite", action="store_true", help="replace an existing model in --output")
    group.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 autocast (default: on for CUDA, off on CPU)")
    group.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_output_dir(path: str, *, resume: bool, overwrite: bool) -> Path:
    """Refuse to clobber an earlier run unless asked; nothing is created here."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} exists and is not a folder")
    used = out.is_dir() and any((out / name).exists() for name in ("config.json", "checkpoints", "metrics.jsonl"))
    if used and not (resume or overwrite):
        raise ConfigError(f"--output {out} already holds a run; pass --resume to continue it or --overwrite")
    if overwrite and not resume and out.is_dir():
        for name in ("metrics.jsonl", "summary.json"):
            (out / name).unlink(missing_ok=True)
        import shutil

        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return out


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
