"""Helpers the test modules share (no test module imports another): synthetic data, tiny models, the
CLI run in-process or as a real process, and the one-line-error check."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.checkpoint import read_weights
from sdbert.cli import main
from sdbert.data.encoded import EncodedDataset
from sdbert.data.tokenization import load_tokenizer
from sdbert.training.loop import TrainingArguments

FILLER = "the a movie film plot actor scene story time very really quite some it was and of to".split()
# A from-scratch teacher on `write_review_csv` data; fp32: the same numbers on every CPU (auto may pick bf16).
CLI_TRAIN = ["--size", "tiny", "--vocab-size", "200", "--max-length", "64", "--block-size", "8",
             "--random-blocks", "1", "--batch-size", "8", "--epochs", "3", "--lr", "3e-3", "--no-progress",
             "--seed", "3", "--precision", "fp32"]
# The recipe the pinned logits were taken with: BERT's attention dropout and fp32 (today's defaults: 0, auto).
PINNED_RECIPE = ["--attention-dropout", "0.1", "--precision", "fp32"]


def synthetic_examples(n, seed=0, vocab=40):
    """Label = which of two marker tokens (5 or 6) the sequence holds; lengths vary 8..70."""
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        body = rng.integers(10, vocab, size=int(rng.integers(6, 68))).tolist()
        body[int(rng.integers(len(body)))] = 5 + label
        sequences.append([2] + body + [3])
        labels.append(label)
    return EncodedDataset.from_lists(sequences, labels)


def tiny_model(seed=0, dropout=0.0, attention_type="block_sparse"):
    torch.manual_seed(seed)
    config = SDBertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=128, block_size=8, num_random_blocks=1,
                          hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                          attention_type=attention_type)
    return SDBertForSequenceClassification(config)


def args(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path), epochs=2, batch_size=16, learning_rate=3e-3, block_size=8,
                progress=False, log_every=2, seed=1, precision="fp32")  # exact numbers on any CPU
    base.update(overrides)
    return TrainingArguments(**base)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_review_csv(path: Path, n: int, seed: int = 0) -> Path:
    """`n` reviews of filler words with one marker ("great" / "awful") that decides the label."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(n):
            label = rng.choice(["pos", "neg"])
            words = [rng.choice(FILLER) for _ in range(rng.randint(5, 60))]
            words.insert(rng.randint(0, len(words)), "great" if label == "pos" else "awful")
            writer.writerow([" ".join(words), label])
    return path


def final_checkpoint_weights(output: Path):
    last = sorted((output / "checkpoints").glob("step-*"))[-1]
    return last.name, read_weights(last)


@contextlib.contextmanager
def _environment(extra: dict[str, str] | None):
    saved = {key: os.environ.get(key) for key in extra or {}}
    os.environ.update(extra or {})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sdbert(*cli_args, env_extra=None, launcher=None, process=False) -> subprocess.CompletedProcess:
    """`sdbert ARGS` as a CompletedProcess: in this process (fast: no interpreter and torch start per call),
    or as a real process with `process=True` or a `launcher` (torchrun), for what only a process shows."""
    if launcher or process:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
        cmd = (launcher or [sys.executable, "-m", "sdbert"]) + list(cli_args)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # the CLI's log lines, which a process would print on stderr
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # what the CLI's basicConfig sets in a fresh process
    try:
        with _environment(env_extra), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in cli_args])
            except SystemExit as exit_info:  # argparse errors
                code = exit_info.code
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(list(cli_args), code, out.getvalue(), err.getvalue())


def run_main(capsys, *argv):
    """The CLI in-process with pytest's capture, as a CompletedProcess."""
    try:
        code = main(list(argv))
    except SystemExit as exit_info:  # argparse errors
        code = exit_info.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) >= 1
    last = lines[-1]
    for needle in needles:
        assert needle in last, last


# Behaviour pins of the tiny preset (test_reproduce.py) and the probes every pin is read on.
PROBES = ["a great movie and a very good plot", "awful film, the story was quite awful", "some time"]

# The tiny preset (`reproduce --preset tiny`, test_reproduce.py): its models' logits on PROBES, taken at abe7142.
PINNED_TINY_PRESET = {
    "full_teacher": [[-0.07505, 0.00016], [-0.07423, -0.00093], [-0.07367, -0.00128]],
    "sparse_teacher": [[-0.04807, 0.02735], [-0.04697, 0.02638], [-0.04678, 0.02635]],
    "sparse_student_kd/seed_42": [[-0.04738, -0.00907], [-0.04666, -0.00986], [-0.04771, -0.00899]],
    "sparse_student_no_kd/seed_43": [[0.10088, -0.09853], [0.10085, -0.09836], [0.09937, -0.09857]],
}
PINNED_TINY_ACCURACIES = {"full_teacher": [0.5], "sparse_teacher": [0.5], "sparse_student_kd": [0.5, 0.5],
                          "sparse_student_no_kd": [0.5, 0.5]}
TOLERANCE = 5e-5  # the pins are rounded to 5 decimals


def assert_pinned(got: list[list[float]], pinned: list[list[float]], what: str = "") -> None:
    flat = lambda rows: [x for row in rows for x in row]
    assert flat(got) == pytest.approx(flat(pinned), abs=TOLERANCE), f"{what}: {got} != pinned {pinned}"


def probe_logits(folder) -> list[list[float]]:
    model = SDBertForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = load_tokenizer(folder)
    with torch.no_grad():
        rows = [model(torch.tensor([tokenizer.encode(text).ids])).logits[0] for text in PROBES]
    return [[round(float(x), 5) for x in row] for row in rows]
