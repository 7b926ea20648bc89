"""tools/compare_reproductions.py: two reproduce runs paired by seed on the same recorded test reviews."""

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "compare_reproductions.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("compare_reproductions", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(folder: Path, settings: dict, predictions: dict[str, list[list[int]]], labels: list[int]) -> Path:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "preset": "quick", "settings": settings, "hardware": {"cpu": "x"}, "wall_seconds": 100.0,
        "precision": {"precision": settings["precision"]}, "data": {"test_labels": labels}}))
    for system, runs in predictions.items():
        for seed, predicted in zip((42, 43), runs, strict=False):
            run_dir = folder / system / (f"seed_{seed}" if "student" in system else "")
            run_dir.mkdir(parents=True, exist_ok=True)
            accuracy = sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)
            record = {"system": system, "seed": seed, "accuracy": accuracy, "accuracy_interval": [0, 1],
                      "eval_examples": len(labels), "examples_per_second": 1.0, "parameters": 1,
                      "attention_type": "block_sparse", "layers": 1, "heads": 1, "test_predictions": predicted,
                      "train_seconds": 9.0, "train_examples": 1, "validation_accuracy": accuracy}
            (run_dir / "result.json").write_text(json.dumps(record))
    return folder


def test_pairs_systems_by_seed_and_reports_b_minus_a(tool, tmp_path, capsys):
    labels = [0, 1] * 50
    wrong_ten = [1 - y if i < 10 else y for i, y in enumerate(labels)]
    a = fake_run(tmp_path / "a", {"precision": "fp32", "seed": 42}, {
        "sparse_teacher": [wrong_ten], "sparse_student_kd": [wrong_ten, wrong_ten]}, labels)
    b = fake_run(tmp_path / "b", {"precision": "bf16", "seed": 42}, {
        "sparse_teacher": [labels], "sparse_student_kd": [wrong_ten, wrong_ten]}, labels)
    out = tmp_path / "cmp.json"
    assert tool.main([str(a), str(b), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["settings_differ"] == {"precision": ["fp32", "bf16"]} and result["test_examples"] == 100
    teacher = result["systems"]["sparse_teacher"]
    assert teacher["accuracy"] == [[0.9], [1.0]] and teacher["b_minus_a"]["difference_points"] == 10.0
    assert teacher["b_minus_a"]["only_b_correct"] == [10] and teacher["b_minus_a"]["only_a_correct"] == [0]
    assert teacher["b_minus_a"]["verdict"] == "B better"
    student = result["systems"]["sparse_student_kd"]
    assert student["seeds"] == [42, 43] and student["b_minus_a"]["verdict"] == "within noise"
    assert "| sparse_teacher | [42] | [0.9] | [1.0] | +10.00" in capsys.readouterr().out


def test_runs_on_other_test_reviews_are_refused(tool, tmp_path, capsys):
    a = fake_run(tmp_path / "a", {"precision": "fp32"}, {}, [0, 1])
    b = fake_run(tmp_path / "b", {"precision": "bf16"}, {}, [1, 0])
    assert tool.main([str(a), str(b)]) == 2
    assert "not scored on the same recorded test reviews" in capsys.readouterr().err
