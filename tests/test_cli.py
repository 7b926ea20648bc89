import subprocess
import sys

import pytest

from sdbert.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sdbert", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "bench" in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "sdbert" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_flag_is_one_line_without_traceback():
    result = run_cli("--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_predict_help_explains_every_flag():
    result = run_cli("predict", "--help")
    assert result.returncode == 0
    for flag, words in (("--batch-size", "texts per forward pass"), ("--precision", "bf16 autocast where")):
        assert flag in result.stdout and words in " ".join(result.stdout.split())
