"""The training loop: it learns, it is deterministic, it resumes exactly, DDP equals one process."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import (
    CLI_TRAIN,
    FILLER,
    args,
    final_checkpoint_weights,
    sdbert,
    synthetic_examples,
    tiny_model,
    weights,
    write_review_csv,
)
from sdbert import SDBertForSequenceClassification
from sdbert.training.loop import evaluate, train


def test_training_learns_and_keeps_the_best_model(tmp_path):
    model = tiny_model()
    train_set, val_set = synthetic_examples(320, seed=0), synthetic_examples(96, seed=1)
    result = train(model, train_set, val_set, args(tmp_path, epochs=4))
    assert result.best_metrics["accuracy"] >= 0.9, result.best_metrics
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    best = SDBertForSequenceClassification.from_pretrained(tmp_path)
    assert evaluate(best, val_set)["accuracy"] == result.best_metrics["accuracy"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert any('"loss"' in line for line in lines) and any("val_accuracy" in line for line in lines)
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 2, "keeps the last 2 checkpoints"


def test_training_curves_go_to_metrics_jsonl_and_tensorboard(tmp_path):
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra (part of [dev]) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_model(), synthetic_examples(64), synthetic_examples(32, seed=1), args(tmp_path, max_steps=4))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4] and any("val_accuracy" in r for r in records)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "validation/accuracy"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]


def test_same_seed_same_weights(tmp_path):
    runs = []
    for name in ("a", "b"):
        model = tiny_model(dropout=0.1)
        train(model, synthetic_examples(64), None, args(tmp_path / name, max_steps=5))
        runs.append(weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_resume_after_interruption_ends_with_the_same_weights(tmp_path):
    data, val = synthetic_examples(96), synthetic_examples(32, seed=3)
    settings = dict(epochs=3, save_every=4, eval_every=5)  # 18 steps, dropout on: RNG state must resume too
    reference = tiny_model(dropout=0.1)
    train(reference, data, val, args(tmp_path / "full", **settings))

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt  # stands in for a kill between checkpoints (steps 8 and 12)
        logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        return torch.nn.functional.cross_entropy(logits, batch.labels)

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(dropout=0.1), data, val, args(tmp_path / "cut", **settings), loss_fn=crashing_loss)
    resumed = tiny_model(seed=123, dropout=0.1)  # different init: everything must come from the checkpoint
    result = train(resumed, data, val, args(tmp_path / "cut", resume=True, **settings))
    assert result.final_step == 18
    expected = weights(reference)
    assert all(torch.equal(expected[k], v) for k, v in weights(resumed).items())


class _RunsCode:
    """A pickle payload that would create a file when unpickled (what a hostile run folder could hold)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path):
    from sdbert.errors import CheckpointError

    data = synthetic_examples(64)
    train(tiny_model(), data, None, args(tmp_path / "run", max_steps=2))
    state = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1] / "trainer_state.pt"
    marker = tmp_path / "ran"
    torch.save({"rng": _RunsCode(marker)}, state)
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain values"):
        train(tiny_model(), data, None, args(tmp_path / "run", max_steps=4, resume=True))
    assert not marker.exists()


@pytest.mark.parametrize(("change", "named"), [
    (dict(learning_rate=1e-2), "--lr 0.003 -> 0.01"), (dict(batch_size=8), "--batch-size 16 -> 8"),
    (dict(seed=2), "--seed 1 -> 2"), (dict(precision="bf16"), "--precision 'fp32' -> 'bf16'"),
])
def test_resume_refuses_other_settings_naming_them(tmp_path, change, named):
    from sdbert.errors import ConfigError

    data = synthetic_examples(64)
    train(tiny_model(), data, None, args(tmp_path, max_steps=2))
    with pytest.raises(ConfigError, match="only --epochs and --max-steps may change") as error:
        train(tiny_model(), data, None, args(tmp_path, max_steps=4, resume=True, **change))
    assert named in str(error.value) and "\n" not in str(error.value)


def test_resume_refuses_other_data_attention_or_labels_and_accepts_more_steps(tmp_path):
    from sdbert.errors import ConfigError

    data = synthetic_examples(64)
    train(tiny_model(), data, None, args(tmp_path, max_steps=2))
    for model, examples, named in ((tiny_model(), synthetic_examples(48), "training data"),
                                   (tiny_model(attention_type="full"), data, "--attention 'block_sparse' -> 'full'")):
        with pytest.raises(ConfigError, match=named):
            train(model, examples, None, args(tmp_path, max_steps=4, resume=True))
    assert train(tiny_model(), data, None, args(tmp_path, max_steps=4, resume=True)).final_step == 4


def test_batch_size_must_split_over_accumulation(tmp_path):
    from sdbert.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        train(tiny_model(), synthetic_examples(64), None, args(tmp_path, batch_size=10, gradient_accumulation_steps=4))


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    runs = []
    for name, accumulation in (("one", 1), ("four", 4)):
        model = tiny_model()
        train(model, synthetic_examples(64), None, args(tmp_path / name, max_steps=3,
                                                        gradient_accumulation_steps=accumulation))
        runs.append(weights(model))
    assert all(torch.allclose(runs[0][k], runs[1][k], atol=1e-5) for k in runs[0])


# --- the command line: kill and resume, torchrun ---------------------------------------------


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = write_review_csv(tmp_path / "reviews.csv", 240)
    env = {"SDBERT_CACHE": str(tmp_path / "cache")}
    common = ["--data", str(data), *CLI_TRAIN, "--save-every", "5", "--dropout", "0.1"]
    done = sdbert("train", "--output", str(tmp_path / "full"), *common, env_extra=env)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sdbert", "train", "--output", str(out), *common],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("step-0000010")):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = sdbert("train", "--output", str(out), *common, "--resume", env_extra=env)
    assert resumed.returncode == 0, resumed.stderr
    name_a, full = final_checkpoint_weights(tmp_path / "full")
    name_b, again = final_checkpoint_weights(out)
    assert name_a == name_b
    assert all(torch.equal(full[k], again[k]) for k in full)


def _three_class_csv(path: Path, typo: bool = False) -> Path:
    rng = random.Random(0)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(90):
            label = ("neg", "neutral", "pos")[i % 3]
            words = [rng.choice(FILLER) for _ in range(rng.randint(5, 30))] + [label]
            writer.writerow([" ".join(words), "graet" if typo and i == 7 else label])
    return path


def test_multi_class_from_scratch_prints_the_classes_and_a_rare_class_is_refused(tmp_path, capsys, monkeypatch):
    from sdbert.cli import main

    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    data = _three_class_csv(tmp_path / "three.csv")
    assert main(["train", "--data", str(data), "--output", str(tmp_path / "m"), *CLI_TRAIN, "--epochs", "1"]) == 0
    assert "classes (3): neg 27, neutral 27, pos 27" in capsys.readouterr().out
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["num_labels"] == 3 and config["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"}

    typo = _three_class_csv(tmp_path / "typo.csv", typo=True)
    assert main(["train", "--data", str(typo), "--output", str(tmp_path / "t"), *CLI_TRAIN]) == 2
    err = capsys.readouterr().err.strip()
    assert "classes with fewer than 5 examples: 'graet' (1)" in err and "--min-class-count" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "t").exists()


def test_resume_with_another_lr_exits_2_naming_it(tmp_path, capsys, monkeypatch):
    from sdbert.cli import main

    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    data = write_review_csv(tmp_path / "reviews.csv", 80)
    base = ["train", "--data", str(data), "--output", str(tmp_path / "run"), *CLI_TRAIN, "--max-steps", "2"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--resume", "--lr", "0.002"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lr 0.003 -> 0.002" in err and len(err.splitlines()) == 1


def test_resume_falls_back_from_an_unreadable_newest_checkpoint(tmp_path, caplog):
    data = synthetic_examples(64)
    train(tiny_model(), data, None, args(tmp_path, max_steps=4, save_every=2))
    newest = sorted((tmp_path / "checkpoints").glob("step-*"))[-1]
    (newest / "trainer_state.pt").write_bytes(b"PK\x03\x04 cut short by a full disk")
    with caplog.at_level("WARNING", logger="sdbert.training.loop"):
        result = train(tiny_model(), data, None, args(tmp_path, max_steps=6, resume=True, save_every=2))
    assert "step-0000004 is unreadable" in caplog.text and "falling back" in caplog.text
    assert "step-0000002 kept no optimizer state" in caplog.text  # only the newest checkpoint keeps it
    assert result.final_step == 6
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_only_the_newest_checkpoint_keeps_the_optimizer_state(tmp_path):
    """AdamW's moments are twice the model: older checkpoints keep weights, schedule and RNG only."""
    train(tiny_model(), synthetic_examples(64), None, args(tmp_path, max_steps=6, save_every=2, keep_checkpoints=3))
    folders = sorted((tmp_path / "checkpoints").glob("step-*"))
    states = [torch.load(f / "trainer_state.pt", weights_only=True) for f in folders]
    assert [f.name for f in folders] == ["step-0000002", "step-0000004", "step-0000006"]
    assert [s["optimizer"] is None for s in states] == [True, True, False]
    sizes = [(f / "trainer_state.pt").stat().st_size for f in folders]
    assert sizes[0] < sizes[2] / 2 and all(s["rng"] and s["scheduler"] for s in states)
