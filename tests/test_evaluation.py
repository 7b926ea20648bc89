"""`sdbert.evaluation.evaluate`: the library side of `sdbert evaluate`."""

import json

import pytest
import torch

from sdbert.classifier import Classifier, InferenceSettings
from sdbert.errors import SDBertError
from sdbert.evaluation import EvaluateConfig, evaluate
from sdbert.training.setup import DataSettings


@pytest.fixture
def saved(tmp_path, tiny_model, tiny_tokenizer):
    """A tiny classifier folder (trained with head truncation at 64 tokens) and a labelled CSV."""
    model = tiny_model(vocab_size=tiny_tokenizer.get_vocab_size(), id2label={0: "neg", 1: "pos"})
    Classifier(model, tiny_tokenizer, InferenceSettings(64, "head")).save_pretrained(tmp_path / "m")
    rows = [("a good film", "pos"), ("a bad film", "neg"), ("good good", "pos"), ("bad", "neg")] * 3
    (tmp_path / "test.csv").write_text("text,label\n" + "\n".join(f"{t},{label}" for t, label in rows) + "\n")
    return tmp_path / "m", tmp_path / "test.csv", model


def test_evaluate_scores_the_split_with_the_trained_settings_and_writes_them(saved, tmp_path):
    folder, data, model = saved
    metrics, out = evaluate(EvaluateConfig(model=str(folder), data=DataSettings(source=str(data)), split="train",
                                           progress=False))  # a single CSV is one split: train
    assert out == folder / "eval_train.json" and json.loads(out.read_text()) == metrics
    assert metrics["examples"] == 12 and metrics["max_length"] == 64 and metrics["truncation"] == "head"
    classifier = Classifier.from_pretrained(folder)
    texts = ["a good film", "a bad film", "good good", "bad"] * 3
    predicted = classifier.logits(classifier.encode(texts)).argmax(-1)
    labels = torch.tensor([1, 0, 1, 0] * 3)
    assert metrics["accuracy"] == pytest.approx((predicted == labels).float().mean().item())


def test_evaluate_a_subset_elsewhere_and_refuse_unlabelled_data(saved, tmp_path):
    folder, data, _ = saved
    metrics, out = evaluate(EvaluateConfig(model=str(folder), data=DataSettings(source=str(data)), split="train",
                                           limit=4, max_length=16, output_json=str(tmp_path / "m.json"),
                                           progress=False))
    assert out == tmp_path / "m.json" and metrics["examples"] == 4 and metrics["max_length"] == 16
    (tmp_path / "unlabelled.csv").write_text("text\nsome film\n")
    with pytest.raises(SDBertError, match="expected 'text' and 'label'"):
        evaluate(EvaluateConfig(model=str(folder), data=DataSettings(source=str(tmp_path / "unlabelled.csv")),
                                split="train", progress=False))


def test_a_single_file_is_evaluated_whole_with_named_classes(saved):
    """`evaluate --data test.csv` scores that file (its default split, test, is not asked of a single file)."""
    folder, data, _ = saved
    metrics, out = evaluate(EvaluateConfig(model=str(folder), data=DataSettings(source=str(data)), progress=False))
    assert out == folder / "eval_test.json" and metrics["examples"] == 12
    assert metrics["split"] == "test.csv (the whole file)"
    assert metrics["labels"] == ["neg", "pos"] and metrics["f1_average"] == "macro"
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
