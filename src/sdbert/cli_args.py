"""Command-line flags from typed configs: one dataclass field is one flag, with its name, type, default and
help in one place (the `metadata` convention of Hugging Face's `HfArgumentParser`, in ~80 lines of ours
rather than a dependency: we need `ranged` types, renamed flags and `--no-x` switches).

    @dataclass
    class Settings:
        epochs: int = arg(3, "passes over the data", type=positive_int)

    add_config_arguments(parser.add_argument_group("training"), Settings)
    settings = config_from_args(Settings, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal


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
non_negative_float = ranged(float, 0.0, what="a number >= 0")
non_negative_int = ranged(int, 0, what="an integer >= 0")


def name_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated names ("full,block_sparse"); the config checks which are allowed."""
    return tuple(a for a in text.split(",") if a)


def arg(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, negate: bool = False,
        default_factory: Any = dataclasses.MISSING, **argparse_kw) -> Any:
    """A dataclass field that is also a flag. `flag` renames it (default `--field-name`); `negate` makes a
    True-by-default bool a `--no-...` switch; other keywords go to `add_argument` (type, metavar, choices)."""
    meta = {"help": help, "flag": flag, "negate": negate, "argparse": argparse_kw}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_name(f: dataclasses.Field) -> str:
    if f.metadata["flag"]:
        return f.metadata["flag"]
    return "--" + ("no-" if f.metadata["negate"] else "") + f.name.replace("_", "-")


def add_config_arguments(parser, cls, *, exclude: tuple[str, ...] = (), defaults: dict | None = None) -> None:
    """Add one flag per documented field of `cls` (the argparse `dest` is the field name)."""
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls):
        if f.name not in exclude:
            default = (defaults or {}).get(f.name, _default_of(f))
            options = _argparse_options(f, hints[f.name], default)
            if "type" in options:  # argparse would name the value after `dest`, not after the flag
                options.setdefault("metavar", flag_name(f).lstrip("-").replace("-", "_").upper())
            parser.add_argument(flag_name(f), dest=f.name, **options)


def config_from_args(cls, args: argparse.Namespace, **overrides):
    """`cls` built from the parsed flags of its fields (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in flag_fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def _default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _argparse_options(f: dataclasses.Field, hint, default) -> dict:
    options, help_text = dict(f.metadata["argparse"]), f.metadata["help"]
    base = _base_type(hint)
    if f.metadata["negate"]:
        return {"action": "store_false", "default": default, "help": help_text}
    if base is bool:  # --x/--no-x where the default is on or unset
        action = "store_true" if default is False else argparse.BooleanOptionalAction
        return {"action": action, "default": default, "help": help_text + (" (default on)" if default else "")}
    if options.get("action") == "append":  # repeatable: argparse appends to a copy of the default list
        default = list(default or ())
    if typing.get_origin(base) is Literal:
        options.setdefault("choices", list(typing.get_args(base)))
    elif base in (int, float, str):
        options.setdefault("type", base)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        options["required"] = True
    elif default not in (None, (), []) and not isinstance(default, bool):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{help_text} (default {shown})" if help_text else f"default {shown}"
    return {**options, "default": default, "help": help_text}


def _base_type(hint):
    """`int | None` -> int; other hints unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint
