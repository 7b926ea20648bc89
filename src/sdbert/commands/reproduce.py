"""`sdbert reproduce`: the paper's Table 1 (four systems) on IMDb, with a report and a plot.

The flags are the fields of `ReproduceConfig`; the work is `sdbert.paper.runner.reproduce`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbert.cli_args import add_config_arguments, config_from_args
from sdbert.paper.runner import ReproduceConfig, reproduce


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, ReproduceConfig)


def run(args: argparse.Namespace) -> int:

    config = config_from_args(ReproduceConfig, args, progress=args.progress and sys.stderr.isatty())
    results = reproduce(config)
    print((Path(config.output) / "report.md").read_text())
    if "published_as" in results:
        print(f"published as {results['published_as']}.json")
    return 0
