"""Behaviour pins for refactors: a fixed-seed `train` and `distill` must give these exact logits.

The numbers were taken on `main` before the library-first redesign (issue 13); a change of code shape
must not move them. If a deliberate change of behaviour moves them, re-take them and say why in the commit.
"""

import json

import pytest
import torch

from sdbert import SDBertForSequenceClassification
from sdbert.data.tokenization import load_tokenizer

PROBES = ["a great movie and a very good plot", "awful film, the story was quite awful", "some time"]

PINNED_LOGITS = {  # taken at abe7142
    "teacher": [[-0.08717, 0.15507], [-0.08623, 0.1525], [-0.09166, 0.15406]],
    "student_random_init": [[-0.09415, 0.17983], [-0.09338, 0.18025], [-0.09377, 0.18112]],
    "student_teacher_init_mse": [[-0.08007, 0.14339], [-0.07753, 0.14047], [-0.08121, 0.14326]],
    "student_teacher_init_kl_hidden": [[-0.08812, 0.15846], [-0.08707, 0.15669], [-0.08895, 0.15823]],
}
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


@pytest.fixture(scope="module")
def pinned_runs(tmp_path_factory):
    from test_train import CLI_TRAIN, sdbert, write_review_csv

    tmp = tmp_path_factory.mktemp("pinned")
    data = write_review_csv(tmp / "reviews.csv", 160)
    env = {"SDBERT_CACHE": str(tmp / "cache")}
    # The recipe of the pins: BERT's attention dropout and fp32 (today's defaults are 0 and auto).
    old_recipe = ["--attention-dropout", "0.1", "--precision", "fp32"]
    run = sdbert("train", "--data", str(data), "--output", str(tmp / "teacher"), *CLI_TRAIN, *old_recipe,
                 env_extra=env)
    assert run.returncode == 0, run.stderr
    students = {"student_random_init": ["--init", "random"],
                "student_teacher_init_mse": ["--init", "teacher"],
                "student_teacher_init_kl_hidden": ["--init", "teacher", "--kind", "kl", "--hidden-weight", "0.5"]}
    for name, flags in students.items():
        run = sdbert("distill", "--teacher", str(tmp / "teacher"), "--data", str(data), "--output", str(tmp / name),
                     "--layers", "1", "--heads", "1", "--epochs", "2", "--batch-size", "8", "--seed", "5",
                     "--no-progress", *old_recipe, *flags, env_extra=env)
        assert run.returncode == 0, run.stderr
    return tmp


@pytest.mark.parametrize("name", list(PINNED_LOGITS))
def test_fixed_seed_runs_give_the_pinned_logits(pinned_runs, name):
    got = probe_logits(pinned_runs / name)
    print(json.dumps({name: got}))
    assert_pinned(got, PINNED_LOGITS[name], name)
