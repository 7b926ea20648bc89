"""Behaviour pins for refactors: a fixed-seed `train` and `distill` must give these exact logits.

The numbers pin runs that learn (see below); a change of code shape must not move them. If a deliberate
change of behaviour moves them, re-take them and say why in the commit.
"""

import json

import pytest

from helpers import PINNED_RECIPE, assert_pinned, probe_logits, sdbert

# Re-taken for issue 22 from runs that learn (the old pins, at lr 1e-3, were a teacher at chance): the
# teacher and the teacher-initialised students put "great" on pos and "awful" on neg; the from-scratch
# 1-layer student stays near chance at this budget (the paper's no-init row, in miniature).
PINNED_LOGITS = {
    "teacher": [[-2.26878, 2.30045], [2.25718, -2.2894], [-2.17689, 2.2092]],
    "student_random_init": [[-0.07449, 0.0733], [-0.07373, 0.07391], [-0.0742, 0.07472]],
    "student_teacher_init_mse": [[-2.35583, 2.37658], [2.30167, -2.31408], [-1.7971, 1.83751]],
    "student_teacher_init_kl_hidden": [[-2.34484, 2.36871], [2.22565, -2.24091], [-1.42952, 1.46894]],
}
LEARNED = ("teacher", "student_teacher_init_mse", "student_teacher_init_kl_hidden")
@pytest.fixture(scope="module")
def pinned_runs(trained_teacher, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pinned")
    (tmp / "teacher").symlink_to(trained_teacher / "teacher")  # the shared teacher is the pinned one
    data = trained_teacher / "reviews.csv"
    env = {"SDBERT_CACHE": str(tmp / "cache")}
    students = {"student_random_init": ["--init", "random"],
                "student_teacher_init_mse": ["--init", "teacher"],
                "student_teacher_init_kl_hidden": ["--init", "teacher", "--kind", "kl", "--hidden-weight", "0.5"]}
    for name, flags in students.items():
        run = sdbert("distill", "--teacher", str(tmp / "teacher"), "--data", str(data), "--output", str(tmp / name),
                     "--layers", "1", "--heads", "1", "--epochs", "2", "--batch-size", "8", "--seed", "5",
                     "--no-progress", *PINNED_RECIPE, *flags, env_extra=env)
        assert run.returncode == 0, run.stderr
    return tmp


@pytest.mark.parametrize("name", list(PINNED_LOGITS))
def test_fixed_seed_runs_give_the_pinned_logits(pinned_runs, name):
    got = probe_logits(pinned_runs / name)
    print(json.dumps({name: got}))
    assert_pinned(got, PINNED_LOGITS[name], name)


@pytest.mark.parametrize("name", LEARNED)
def test_the_pinned_runs_learn_the_task(pinned_runs, name):
    """A pin of a model at chance would let a change of behaviour pass unseen: these runs learn the marker."""
    summary = json.loads((pinned_runs / name / "summary.json").read_text())
    assert summary["validation"]["accuracy"] >= 0.9, summary["validation"]
    great, awful, _ = probe_logits(pinned_runs / name)
    assert great[1] > great[0] and awful[0] > awful[1]  # labels sort as ["neg", "pos"]
