"""The tiny preset end to end on the real IMDb archive: files, schema, resume-by-skipping."""

import json
import os
from pathlib import Path

import pytest

from sdbert.cli import main
from sdbert.reproduce import SYSTEMS, make_preset, render_report

ARCHIVE = Path(os.environ.get("SDBERT_DATA", Path(__file__).parents[2] / "shared/data/aclImdb_v1.tar.gz"))


@pytest.mark.slow
@pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"IMDb archive not found at {ARCHIVE} (set SDBERT_DATA)")
def test_tiny_preset_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["reproduce", "--preset", "tiny", "--data", str(ARCHIVE), "--output", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["preset"] == "tiny"
    assert {"cpu", "torch", "torch_threads"} <= set(results["hardware"])
    systems = [row["system"] for row in results["rows"]]
    assert systems[:4] == list(SYSTEMS)
    for row in results["rows"][:4]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["train_seconds"] > 0
        assert row["eval_examples"] == 120 and row["parameters"] > 0
        assert (out / row["system"] / "model.safetensors").exists()
    teacher, student = results["rows"][1], results["rows"][2]
    assert student["parameters"] < teacher["parameters"]
    assert student["transfer_examples"] == 240 + 60  # labelled subset + unlabelled reviews
    assert (out / "report.md").read_text().startswith("# SDBERT Table 1 reproduction")
    assert (out / "accuracy_vs_time.png").stat().st_size > 1000

    # A second run finds every system finished and only re-reports them.
    before = {s: (out / s / "result.json").stat().st_mtime for s in SYSTEMS}
    assert main(["reproduce", "--preset", "tiny", "--data", str(ARCHIVE), "--output", str(out), "--no-progress"]) == 0
    assert before == {s: (out / s / "result.json").stat().st_mtime for s in SYSTEMS}


def test_presets_and_report_rendering(tmp_path):
    from sdbert.errors import ConfigError

    with pytest.raises(ConfigError, match="teacher-init"):
        make_preset("paper")
    paper = make_preset("paper", teacher_init="/models/bigbird-roberta-base")
    assert (paper.max_length, paper.block_size, paper.num_random_blocks) == (4096, 64, 3)
    assert (paper.student_layers, paper.student_heads, paper.train_limit) == (3, 4, None)
    quick = make_preset("quick", teacher_init=str(tmp_path))
    # The quick preset must exercise the sparse path: longer reviews exceed the dense fallback.
    assert quick.max_length > (5 + 2 * quick.num_random_blocks) * quick.block_size
    rows = [{"system": s, "accuracy": a, "train_seconds": t, "parameters": n, "examples_per_second": 1.0,
             "eval_examples": 10} for s, a, t, n in zip(SYSTEMS, (0.9, 0.88, 0.87, 0.8), (100, 90, 30, 25),
                                                         (20e6, 20e6, 10e6, 10e6), strict=True)]
    results = {"preset": "quick", "settings": {"teacher_init": "x"}, "wall_seconds": 600.0, "rows": rows,
               "hardware": {"cpu": "cpu", "cpu_count": 2, "torch_threads": 2, "torch": "2"},
               "data": {"train_examples": 1, "validation_examples": 1, "test_examples": 10, "unlabeled_examples": 0}}
    report = render_report(results)
    assert "| sparse_student_kd | 0.8700 | 0.879 |" in report
    assert "met: KD student beats the no-KD student by at least 2 points (+7.0 points)" in report
    assert "met: KD student keeps at least 97% of the sparse teacher's accuracy (98.9%)" in report
    assert "NOT met" not in report
