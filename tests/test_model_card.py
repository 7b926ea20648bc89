"""Model cards: the YAML header parses as the hub's model-card metadata (model-index included), the
numbers are the run record's with their Wilson interval (80 of 100: 0.7112-0.8666, as computed by hand
from the Wilson formula), and a folder without a run record claims no accuracy."""

from __future__ import annotations

import json

import pytest

from sdbert.model_card import evaluation, read_run, render, write_model_card

yaml = pytest.importorskip("yaml")

SPARSE_CONFIG = {"num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 384, "attention_type": "block_sparse",
                 "block_size": 16, "num_random_blocks": 1, "classifier_pooling": "mean", "pooler_activation": "tanh",
                 "id2label": {"0": "neg", "1": "pos"}, "max_length": 256, "truncation": "head+tail",
                 "init_checkpoint": "/models/all-MiniLM-L6-v2"}
DISTILL_SUMMARY = {"validation": {"accuracy": 0.8, "examples": 100}, "train_seconds": 52.1, "parameters": 17390594,
                   "alpha": 0.5, "kind": "mse", "teacher_logits_seconds": 48.0,
                   "data": {"source": "/data/aclImdb_v1.tar.gz", "train_examples": 1600, "validation_examples": 100},
                   "settings": {"epochs": 1, "learning_rate": 0.0002, "seed": 42},
                   "precision": {"precision": "bf16", "requested": "auto",
                                 "reason": "bf16 matmul measured 2.10x fp32 on this CPU"},
                   "dropout": {"hidden": 0.1, "attention": 0.0}}
REPRODUCE_RESULT = {"accuracy": 0.796, "eval_examples": 1000, "train_seconds": 52.1,
                    "run_spec": {"loss": "kd mse alpha=0.5 T=2.0", "epochs": 1, "learning_rate": 0.0002, "seed": 42}}


def header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_distilled_student_card_has_hub_metadata_and_its_validation_interval():
    card = render(SPARSE_CONFIG, DISTILL_SUMMARY, "student")
    meta = header(card)
    assert meta["library_name"] == "sdbert" and meta["datasets"] == ["imdb"] and meta["metrics"] == ["accuracy"]
    assert {"block-sparse-attention", "knowledge-distillation"} <= set(meta["tags"])
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == 0.8 and result["dataset"]["split"] == "validation"
    assert "Accuracy **0.8000** (95% Wilson interval 0.7112-0.8666) on 100 validation texts" in card
    assert "optimistic" in card  # the split that chose the checkpoint is not a test score
    assert "block 16, 1 random blocks" in card and "the mean of its tokens" in card
    assert "Started from: /models/all-MiniLM-L6-v2" in card and "alpha = 0.5" in card
    assert "- Precision: bf16 (bf16 matmul measured 2.10x fp32 on this CPU)" in card
    assert "- Dropout: hidden states 0.1, attention probabilities 0.0" in card


def test_a_labels_only_distill_card_claims_no_distillation():
    run = {k: v for k, v in DISTILL_SUMMARY.items() if k != "teacher_logits_seconds"} | {"alpha": 1.0,
                                                                                         "teacher_mode": "none"}
    card = render(SPARSE_CONFIG, run, "student")
    assert "knowledge-distillation" not in header(card)["tags"]
    assert "- Loss: cross-entropy on the labels (alpha = 1: no distillation term)" in card
    assert "distillation, alpha" not in card


def test_the_model_index_reads_back_with_huggingface_hub():
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = hub.ModelCard(render(SPARSE_CONFIG, REPRODUCE_RESULT, "student"))
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert name == "student" and [(r.metric_type, r.metric_value, r.dataset_split) for r in results] == [
        ("accuracy", 0.796, "test")]


def test_a_reproduce_run_is_scored_on_test_reviews():
    scored = evaluation(REPRODUCE_RESULT)
    assert scored["split"] == "test" and scored["examples"] == 1000
    assert scored["interval"] == pytest.approx((0.7699, 0.8198), abs=1e-4)
    card = render(SPARSE_CONFIG, REPRODUCE_RESULT, "seed_42")
    assert "optimistic" not in card and "knowledge-distillation" in header(card)["tags"]


def test_a_folder_without_a_run_record_claims_no_accuracy(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(SPARSE_CONFIG, attention_type="full")))
    assert read_run(tmp_path) == {}
    card = write_model_card(tmp_path).read_text()
    meta = header(card)
    assert "model-index" not in meta and "datasets" not in meta and "full-attention" in meta["tags"]
    assert "Not evaluated by sdbert" in card and "how it was trained is not known" in card


@pytest.mark.parametrize("fmt, words", [("hf_custom", "trust_remote_code=True"), ("hf_stock", 'pipeline("text'),
                                        ("onnx", "onnxruntime"), ("sdbert", "Classifier.from_pretrained")])
def test_usage_matches_the_folder_format(fmt, words):
    card = render(SPARSE_CONFIG, DISTILL_SUMMARY, "m", fmt)
    assert words in card
    assert ("trust_remote_code" in card) == (fmt == "hf_custom")
