"""Bad input: one line on stderr, exit status 2, no traceback, nothing half-written."""

import json

import pytest

from helpers import assert_one_line_error, run_main, sdbert, write_review_csv


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = write_review_csv(root / "reviews.csv", 64)
    (root / "wrong_columns.csv").write_text("review,sentiment\nfine,pos\nbad,neg\n")
    (root / "latin1.csv").write_bytes("text,label\ncaf\xe9 ok,pos\n".encode("latin-1"))
    (root / "empty_text.csv").write_text('text,label\n"",pos\nfine,neg\n')
    (root / "gpt2").mkdir()
    (root / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return root, data


CASES = {
    "missing data": (["train", "--data", "{root}/nope.csv"], ["missing file"]),
    "wrong columns": (["train", "--data", "{root}/wrong_columns.csv"], ["text", "review"]),
    "non utf-8": (["train", "--data", "{root}/latin1.csv"], ["UTF-8"]),
    "empty text": (["train", "--data", "{root}/empty_text.csv"], ["empty"]),
    "max length 0": (["train", "--data", "{data}", "--max-length", "0"], ["--max-length"]),
    "block size does not divide": (["train", "--data", "{data}", "--max-length", "100", "--block-size", "64"],
                                   ["not a multiple"]),
    "model of another kind": (["train", "--data", "{data}", "--init", "{root}/gpt2"], ["gpt2"]),
    "alpha out of range": (["distill", "--teacher", "{root}/gpt2", "--data", "{data}", "--alpha", "7"], ["--alpha"]),
    "labels only with augmented texts": (["distill", "--teacher", "{root}/gpt2", "--data", "{data}", "--alpha", "1",
                                          "--augment", "1"], ["--alpha 1", "--augment"]),
    "labels only with unlabelled texts": (["distill", "--teacher", "{root}/gpt2", "--data", "{data}", "--alpha", "1",
                                           "--unlabeled", "unsup"], ["--alpha 1", "--unlabeled"]),
    "cut vocabulary with an online teacher": (["distill", "--teacher", "{root}/gpt2", "--data", "{data}",
                                               "--vocab-size", "500", "--hidden-weight", "1"],
                                              ["--vocab-size", "cached logits"]),
    "unknown flag": (["train", "--data", "{data}", "--epochz", "2"], ["--epochz"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_2(workspace, name, tmp_path, capsys, monkeypatch):
    root, data = workspace
    monkeypatch.setenv("SDBERT_CACHE", str(tmp_path / "cache"))
    argv, needles = CASES[name]
    argv = [a.format(root=root, data=data) for a in argv]
    out = tmp_path / "out"
    result = run_main(capsys, *argv, "--output", str(out), "--no-progress")
    assert_one_line_error(result, *needles)
    assert not out.exists(), "nothing half-written"


def test_evaluate_and_predict_bad_model_folders(workspace, tmp_path, capsys):
    root, data = workspace
    assert_one_line_error(run_main(capsys, "evaluate", "--model", str(root / "gpt2"), "--data", str(data)), "gpt2")
    assert_one_line_error(run_main(capsys, "predict", "--model", str(tmp_path / "missing")), "does not exist")


def test_a_real_process_shows_no_traceback(workspace, tmp_path):
    root, _ = workspace
    result = sdbert("train", "--data", str(root / "wrong_columns.csv"), "--output", str(tmp_path / "out"))
    assert_one_line_error(result, "review")
