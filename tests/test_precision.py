"""`--precision auto|fp32|bf16`: the choice, its calibration cache and what runs under it."""

import json

import pytest
import torch

from sdbert import precision
from sdbert.errors import ConfigError
from sdbert.precision import PrecisionChoice, bf16_speedup, resolve_precision


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No calibration measured or cached yet; fake matmul timings (seconds per call) for fp32 and bf16."""
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_memo", {})
    timings = {torch.float32: 1.0, torch.bfloat16: 1.0}
    calls = []

    def fake(dtype, seconds=0.0):
        calls.append(dtype)
        return timings[dtype]

    monkeypatch.setattr(precision, "_time_matmul", fake)
    return timings, calls, tmp_path / "cache" / "precision.json"


def test_explicit_choices_need_no_calibration(fresh):
    _, calls, _ = fresh
    assert resolve_precision("fp32").precision == "fp32"
    bf16 = resolve_precision("bf16")
    assert bf16.precision == "bf16" and bf16.dtype == torch.bfloat16
    assert calls == []


@pytest.mark.parametrize(("bf16_seconds", "expected"), [(0.4, "bf16"), (0.9, "fp32"), (5.0, "fp32")])
def test_auto_takes_bf16_only_where_it_measures_faster(fresh, bf16_seconds, expected, caplog):
    timings, _, _ = fresh
    timings[torch.bfloat16] = bf16_seconds  # 2.5x faster (AMX-like), within noise, emulated (EPYC-like)
    with caplog.at_level("INFO", logger="sdbert.precision"):
        choice = resolve_precision("auto", "cpu")
    assert choice.precision == expected
    assert choice.bf16_speedup == pytest.approx(1.0 / bf16_seconds, abs=0.01)
    assert choice.record()["requested"] == "auto" and "measured" in choice.reason
    assert len(caplog.records) == 1 and f"precision {expected}" in caplog.text


def test_calibration_is_cached_per_machine_and_a_corrupt_cache_is_remeasured(fresh, monkeypatch):
    timings, calls, cache = fresh
    timings[torch.bfloat16] = 0.5
    assert bf16_speedup() == 2.0 and len(calls) == 2
    assert list(json.loads(cache.read_text()).values()) == [2.0]
    monkeypatch.setattr(precision, "_memo", {})  # a new process: read from the cache, no timing
    assert bf16_speedup() == 2.0 and len(calls) == 2
    cache.write_text("{not json")
    monkeypatch.setattr(precision, "_memo", {})
    assert bf16_speedup() == 2.0 and len(calls) == 4


def test_bad_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16")


def test_autocast_runs_linear_layers_in_bf16_and_fp32_leaves_them():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with resolve_precision("bf16").autocast("cpu"):
        assert layer(x).dtype == torch.bfloat16
    with resolve_precision("fp32").autocast("cpu"):
        assert layer(x).dtype == torch.float32
    assert resolve_precision(PrecisionChoice("fp32", "auto", "x")).reason == "x"  # a resolved choice passes through


def test_bf16_inference_agrees_with_fp32(tiny_model):
    """The same model's logits in bf16 and fp32: close, and the same predicted labels where fp32 is not a tie."""
    from sdbert.inference import predict_logits

    model = tiny_model(seed=1)  # block-sparse past 80 tokens: both attention paths run
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(5, 100, (int(n),), generator=g).tolist() for n in torch.randint(8, 120, (64,), generator=g)]
    fp32 = predict_logits(model, ids, precision="fp32")
    bf16 = predict_logits(model, ids, precision="bf16")
    assert bf16.dtype == torch.float32 and (bf16 - fp32).abs().max() < 0.05
    clear = (fp32[:, 0] - fp32[:, 1]).abs() > 0.05
    assert torch.equal(bf16.argmax(-1)[clear], fp32.argmax(-1)[clear])


def test_train_records_the_recipe_and_evaluate_predict_take_precision(tmp_path, monkeypatch, capsys):
    """Today's recipe: no attention dropout unless asked; the precision that ran is in summary.json, the
    model card and evaluate's JSON."""
    from helpers import CLI_TRAIN, write_review_csv
    from sdbert.cli import main

    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    data = write_review_csv(tmp_path / "reviews.csv", 80)
    base = ["train", "--data", str(data), *CLI_TRAIN, "--epochs", "1"]
    assert main([*base, "--output", str(tmp_path / "default"), "--precision", "bf16"]) == 0
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert summary["precision"] == {"precision": "bf16", "requested": "bf16", "reason": "asked for"}
    assert summary["dropout"]["attention"] == 0.0 and summary["dropout"]["hidden"] > 0
    assert summary["truncation"]["train"]["texts"] + summary["truncation"]["validation"]["texts"] == 80
    assert json.loads((tmp_path / "default" / "config.json").read_text())["attention_probs_dropout_prob"] == 0.0
    assert "- Precision: bf16 (asked for)" in (tmp_path / "default" / "README.md").read_text()

    assert main([*base, "--output", str(tmp_path / "bert"), "--attention-dropout", "0.1"]) == 0
    summary = json.loads((tmp_path / "bert" / "summary.json").read_text())
    assert summary["dropout"]["attention"] == 0.1 and summary["precision"]["precision"] == "fp32"

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(tmp_path / "default"), "--data", str(data), "--split", "train",
                 "--no-progress", "--precision", "bf16", "--output-json", str(out)]) == 0
    evaluated = json.loads(out.read_text())
    assert evaluated["precision"]["precision"] == "bf16" and evaluated["truncated"]["texts"] == 80
    capsys.readouterr()
    text, long = tmp_path / "review.txt", tmp_path / "long.txt"
    text.write_text("a great film")
    long.write_text("a great film " * 100)  # past the 64 tokens the model reads
    assert main(["predict", "--model", str(tmp_path / "default"), "--precision", "bf16", str(text), str(long)]) == 0
    captured = capsys.readouterr()
    short_line, long_line = (json.loads(line) for line in captured.out.splitlines())
    assert short_line["label"] in ("pos", "neg") and not short_line["truncated"] and long_line["truncated"]
    assert "1 of 2 texts were longer than the model reads (64 tokens, head+tail kept)" in captured.err
