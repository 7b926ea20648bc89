import subprocess
import sys

import pytest

from helpers import sdbert
from sdbert.cli import main


def test_help_lists_commands_in_a_real_process_without_importing_torch():
    """The entry point works, and `sdbert --help` stays fast: the lazy imports keep torch out of it."""
    probe = ("import sys; from sdbert.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "bench" in result.stdout and result.stdout.strip().endswith("no torch")


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert "sdbert" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_bad_flag_is_one_line_without_traceback():
    result = sdbert("--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_predict_help_explains_every_flag():
    result = sdbert("predict", "--help")
    assert result.returncode == 0
    for flag, words in (("--batch-size", "texts per forward pass"), ("--precision", "bf16 autocast where")):
        assert flag in result.stdout and words in " ".join(result.stdout.split())
