"""Flags from typed configs (`sdbert.cli_args`), the one atomic writer (`sdbert.io`) and the one wording of a
missing optional package (`sdbert.errors.require`)."""

import argparse
import os
from dataclasses import dataclass
from typing import Literal

import pytest

from sdbert.cli_args import add_config_arguments, arg, config_from_args, positive_int
from sdbert.errors import MissingDependency, require
from sdbert.io import atomic_open, write_json


@dataclass
class Settings:
    path: str = arg(help="where", metavar="DIR")
    epochs: int = arg(3, "passes", type=positive_int)
    rate: float = arg(0.5, "a rate", flag="--lr")
    mode: Literal["a", "b"] = arg("a", "which mode")
    limit: int | None = arg(None, "at most N")
    bf16: bool | None = arg(None, "autocast")
    resume: bool = arg(False, "continue")
    progress: bool = arg(True, "no bars", negate=True)
    internal: int = 7


def parse(*argv, defaults=None):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser, Settings, defaults=defaults)
    return parser, config_from_args(Settings, parser.parse_args(list(argv)))


def test_every_documented_field_is_a_flag_with_its_type_default_and_help():
    parser, settings = parse("--path", "x")
    assert settings == Settings(path="x")
    assert "--internal" not in parser.format_help()
    assert "passes (default 3)" in parser.format_help()
    _, settings = parse("--path", "x", "--epochs", "5", "--lr", "0.1", "--mode", "b", "--limit", "4", "--bf16",
                        "--resume", "--no-progress")
    assert settings == Settings("x", 5, 0.1, "b", 4, True, True, False)


def test_defaults_per_command_and_errors_from_the_field_types():
    assert parse("--path", "x", defaults={"epochs": 9})[1].epochs == 9
    for bad in (["--epochs", "0"], ["--mode", "c"], ["--limit", "many"]):
        with pytest.raises((argparse.ArgumentError, SystemExit)):
            parse("--path", "x", *bad)
    with pytest.raises(SystemExit):  # a field without a default is a required flag
        parse()


def test_atomic_open_leaves_nothing_on_error_and_a_whole_file_on_success(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_missing_optional_package_names_the_extra_that_installs_it():
    assert require("json", "parsing").dumps([]) == "[]"
    with pytest.raises(MissingDependency) as info:
        require("prometheus_client_not_here", "metrics")
    assert str(info.value) == ("metrics needs prometheus_client_not_here, which is not installed: "
                               "pip install prometheus_client_not_here")
    try:
        require("onnxruntime", "ONNX inference")
    except MissingDependency as exc:
        assert "pip install 'sdbert[onnx]'" in str(exc)


@pytest.mark.parametrize("command, config, given", [
    (["bench", "attention"], "sdbert.bench.attention:AttentionBenchConfig", {}),
    (["bench", "encoder"], "sdbert.bench.encoder:EncoderBenchConfig", {}),
    (["bench", "model", "--preset", "quick"], "sdbert.bench.model:ModelBenchConfig", {"presets": ("quick",)}),
    (["serve", "--model", "m"], "sdbert.serving.settings:ServeSettings", {}),
    (["evaluate", "--model", "m"], "sdbert.evaluation:EvaluateConfig", {"model": "m"}),
])
def test_a_command_without_flags_gives_its_config_defaults(command, config, given):
    """The flags are built from the config, so no default can drift between the two."""
    import importlib

    from sdbert.cli import build_parser

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert config_from_args(cls, build_parser().parse_args(command)) == cls(**given)
