"""The `sdbert` command. Each subcommand lives in `sdbert.commands.<name>` and exposes
`add_arguments(parser)` and `run(args) -> int`; this file only dispatches and turns user errors
into one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from sdbert import __version__
from sdbert.errors import SDBertError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS = {
    "train": ("sdbert.commands.train", "fine-tune a classifier (teacher) on labelled text"),
    "distill": ("sdbert.commands.distill", "distil a teacher into a small block-sparse student"),
    "evaluate": ("sdbert.commands.evaluate", "accuracy, F1 and confusion matrix of a model on a split"),
    "predict": ("sdbert.commands.predict", "classify text files or stdin lines; prints JSON lines"),
    "reproduce": ("sdbert.commands.reproduce", "train and compare the paper's four systems (Table 1)"),
    "bench": ("sdbert.commands.bench", "benchmark attention kernels and models"),
    "export": ("sdbert.commands.export", "write a model as a Hugging Face folder or as ONNX"),
    "serve": ("sdbert.commands.serve", "HTTP classification service (FastAPI + uvicorn) with micro-batching"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage dump is noisy; keep it to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(commands: set[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `commands`, only those subcommands get their flags (and their module imported)."""
    parser = _Parser(
        prog="sdbert",
        description="SparseDistilBERT: small, fast block-sparse transformers for long documents.",
    )
    parser.add_argument("--version", action="version", version=f"sdbert {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        if commands is None or name in commands:
            importlib.import_module(module_name).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser({arg for arg in argv if arg in COMMANDS})  # `sdbert --help` imports no command
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(message)s" if args.verbose else "%(message)s")

    try:
        with logging_redirect_tqdm():  # log lines print above a progress bar instead of cutting through it
            return importlib.import_module(args._module).run(args) or 0
    except SDBertError as exc:
        print(f"sdbert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sdbert {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
