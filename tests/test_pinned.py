"""Behaviour pins for refactors: a fixed-seed `train` and `distill` must give these exact logits.

The numbers were taken on `main` before the library-first redesign (issue 13); a change of code shape
must not move them. If a deliberate change of behaviour moves them, re-take them and say why in the commit.
"""

import json

import pytest

from helpers import PINNED_RECIPE, assert_pinned, probe_logits, sdbert

PINNED_LOGITS = {  # taken at abe7142
    "teacher": [[-0.08717, 0.15507], [-0.08623, 0.1525], [-0.09166, 0.15406]],
    "student_random_init": [[-0.09415, 0.17983], [-0.09338, 0.18025], [-0.09377, 0.18112]],
    "student_teacher_init_mse": [[-0.08007, 0.14339], [-0.07753, 0.14047], [-0.08121, 0.14326]],
    "student_teacher_init_kl_hidden": [[-0.08812, 0.15846], [-0.08707, 0.15669], [-0.08895, 0.15823]],
}
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
