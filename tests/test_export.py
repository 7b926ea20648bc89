"""Export: Hugging Face folders that plain transformers loads, and ONNX graphs that onnxruntime runs,
both giving our logits (max abs diff < 1e-4) wherever the two sides compute the same attention.

Models are tiny and random (hidden 32); weights larger than the default init make attention far
from uniform, so a wrong mask, position or random block moves the logits well above the tolerance.
The ONNX graph is exported once per module (the slow part, ~15-25 s on two cores).
"""

from __future__ import annotations

import json

import pytest
import torch

from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.attention import block_sparse_attention
from sdbert.attention.traceable import random_block_table, traceable_block_sparse_attention
from sdbert.classifier import Classifier, InferenceSettings
from sdbert.cli import main
from sdbert.data.wordpiece import train_wordpiece_tokenizer
from sdbert.errors import CheckpointError, ConfigError
from sdbert.export import TraceableClassifier, choose_hf_architecture, export_hf, probe_batch

ATOL = 1e-4
LABELS = {0: "negative", 1: "positive"}
TEXTS = ["a wonderful film with great acting and a clever script", "a terrible boring movie, the worst plot",
         "the start was slow but the ending is beautiful", "never watch this again, predictable and long"] * 8


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(TEXTS, vocab_size=150, min_frequency=1)


def tiny_model(tokenizer, *, attention_type="block_sparse", pooler_activation="tanh", hidden_act="gelu",
               max_position_embeddings=512, seed=0, **overrides) -> SDBertForSequenceClassification:
    overrides = {"num_hidden_layers": 2, **overrides}
    config = SDBertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=32,
                          num_attention_heads=4, intermediate_size=48, max_position_embeddings=max_position_embeddings,
                          block_size=16, num_random_blocks=1, initializer_range=0.2, attention_type=attention_type,
                          pooler_activation=pooler_activation, hidden_act=hidden_act, id2label=LABELS, **overrides)
    torch.manual_seed(seed)
    return SDBertForSequenceClassification(config).eval()


def settings_of(model) -> InferenceSettings:
    """Texts may use every position of the model."""
    return InferenceSettings(max_length=model.config.max_position_embeddings)


def save(model, path, tokenizer) -> None:
    """A model folder as training writes it: weights, config with settings, tokenizer."""
    Classifier(model, tokenizer, settings_of(model)).save_pretrained(path)


def padded(config, length, seed=0):
    return probe_batch(config, length, seed=seed)


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


# --- the traceable kernel ---------------------------------------------------------------------------


@pytest.mark.parametrize("seq_len", [1, 40, 112, 113, 130, 300, 517])
@pytest.mark.parametrize("r", [0, 1, 2])
def test_traceable_attention_equals_block_sparse_kernel(seq_len, r):
    """The export kernel reproduces `block_sparse_attention` (dense fallback, padding to a block
    multiple, global/window/random blocks, key padding) at every real query position."""
    g = torch.Generator().manual_seed(seq_len + r)
    batch, heads, dim, bs, seed = 2, 3, 8, 16, 7
    q, k, v = (torch.randn(batch, heads, seq_len, dim, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(batch, seq_len, dtype=torch.bool)
    mask[1, max(1, seq_len - 37):] = False
    table = random_block_table(-(-600 // bs), r, heads, seed)
    got = traceable_block_sparse_attention(q, k, v, mask, table, block_size=bs, num_random_blocks=r)
    expected = block_sparse_attention(q, k, v, block_size=bs, num_random_blocks=r, key_padding_mask=mask, seed=seed)
    real = mask[:, None, :, None]
    assert max_diff(got * real, expected * real) < 1e-10
    assert (got[~mask[:, None, :].expand(-1, heads, -1)] == 0).all()  # padding query rows are zero


@pytest.mark.parametrize("attention_type, pooling, embedding_size",
                         [("block_sparse", "cls", None), ("full", "cls", None), ("block_sparse", "mean", None),
                          ("block_sparse", "mean", 8)])  # the last: factorised embeddings (the small student)
def test_traceable_classifier_matches_model_in_eager_mode(tokenizer, attention_type, pooling, embedding_size):
    model = tiny_model(tokenizer, attention_type=attention_type, classifier_pooling=pooling,
                       embedding_size=embedding_size)
    wrapper = TraceableClassifier(model).eval()
    with torch.inference_mode():
        for length in (50, 112, 200, 512):
            ids, mask = padded(model.config, length)
            assert max_diff(wrapper(ids, mask), model(ids, attention_mask=mask).logits) < 1e-5


# --- Hugging Face -----------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def hf_logits(folder, ids, mask, *, attention_type=None):
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    if attention_type is not None:
        hf.bert.set_attention_type(attention_type)
    with torch.inference_mode():
        return hf, hf(input_ids=ids, attention_mask=mask).logits


def test_full_model_exports_as_bert_with_equal_logits_and_labels(tokenizer, tmp_path):
    model = tiny_model(tokenizer, attention_type="full")
    result = export_hf(model, tmp_path / "hf", tokenizer=tokenizer, settings=settings_of(model))
    assert result.architecture == "bert" and result.max_abs_diff < ATOL
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    for length in (37, 300, 512):
        ids, mask = padded(model.config, length, seed=length)
        hf, logits = hf_logits(tmp_path / "hf", ids, mask)
        assert type(hf).__name__ == "BertForSequenceClassification"
        with torch.inference_mode():
            assert max_diff(logits, model(ids, attention_mask=mask).logits) < ATOL


def test_block_sparse_model_exports_as_bigbird(tokenizer, tmp_path):
    """Equal where both run dense attention: inputs up to the fallback length (HF switches itself to
    original_full), and longer inputs with HF set to original_full against our model run dense."""
    model = tiny_model(tokenizer, pooler_activation="gelu")
    assert choose_hf_architecture(model.config) == "sdbert"  # auto: exact at every length only as custom code
    result = export_hf(model, tmp_path / "hf", tokenizer=tokenizer, settings=settings_of(model),
                       architecture="big_bird")
    assert result.architecture == "big_bird" and result.max_abs_diff < ATOL
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["attention_type"] == "block_sparse"
    assert (config["block_size"], config["num_random_blocks"]) == (16, 1)
    fallback = model.config.dense_fallback_length  # 112
    for length in (20, fallback):
        ids, mask = padded(model.config, length, seed=length)
        hf, logits = hf_logits(tmp_path / "hf", ids, mask)
        assert type(hf).__name__ == "BigBirdForSequenceClassification"
        with torch.inference_mode():
            assert max_diff(logits, model(ids, attention_mask=mask).logits) < ATOL

    dense = SDBertForSequenceClassification(model.config.replace(attention_type="full")).eval()
    dense.load_state_dict(model.state_dict())
    ids, mask = padded(model.config, 400, seed=3)
    _, logits = hf_logits(tmp_path / "hf", ids, mask, attention_type="original_full")
    with torch.inference_mode():
        assert max_diff(logits, dense(ids, attention_mask=mask).logits) < ATOL


def test_hf_bigbird_eval_random_blocks_differ_from_ours(tokenizer, tmp_path):
    """Documented, not hidden: above the fallback length HF BigBird in eval mode uses block 0 for
    every random block, so its logits differ from ours (which keep a seeded random pattern)."""
    model = tiny_model(tokenizer, pooler_activation="gelu")
    export_hf(model, tmp_path / "hf", tokenizer=tokenizer, settings=settings_of(model),
              architecture="big_bird", verify=False)
    ids, mask = padded(model.config, 400, seed=5)
    _, logits = hf_logits(tmp_path / "hf", ids, mask)
    with torch.inference_mode():
        assert max_diff(logits, model(ids, attention_mask=mask).logits) > 1e-3


def test_pipeline_and_tokenizer_load_offline(tokenizer, tmp_path):
    model = tiny_model(tokenizer, attention_type="full")
    export_hf(model, tmp_path / "hf", tokenizer=tokenizer, settings=settings_of(model))
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert tok.model_max_length == 512 and tok.pad_token == "[PAD]" and tok.cls_token == "[CLS]"
    text = "a wonderful film, the worst ending"
    assert tok(text)["input_ids"] == tokenizer.encode(text).ids
    classifier = transformers.pipeline("text-classification", model=str(tmp_path / "hf"), device="cpu")
    out = classifier([text, "boring"], top_k=None)

    ours = Classifier(model, tokenizer, settings_of(model))([text, "boring"])
    for got, expected in zip(out, ours, strict=True):
        scores = {d["label"]: d["score"] for d in got}
        assert set(scores) == {"negative", "positive"}
        for label, p in expected["probabilities"].items():
            assert abs(scores[label] - p) < ATOL


def test_a_cut_vocabulary_model_exports_as_plain_bert_with_its_own_tokenizer(tokenizer, tmp_path):
    """`--vocab-size`'s students are stock BERTs over a smaller table: transformers reads the cut tokenizer and
    gives our probabilities."""
    from sdbert.data.vocabulary import cut_vocabulary

    cut = cut_vocabulary(tokenizer, TEXTS[:2], 60)
    model = tiny_model(cut.tokenizer, attention_type="full")
    export_hf(model, tmp_path / "hf", tokenizer=cut.tokenizer, settings=settings_of(model))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == 60
    text = "a wonderful film, the worst ending"
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))(text)["input_ids"] == \
        cut.tokenizer.encode(text).ids
    out = transformers.pipeline("text-classification", model=str(tmp_path / "hf"), device="cpu")([text], top_k=None)
    ours = Classifier(model, cut.tokenizer, settings_of(model))([text])[0]["probabilities"]
    assert all(abs(d["score"] - ours[d["label"]]) < ATOL for d in out[0])


def test_tanh_head_block_sparse_model_is_refused_as_bigbird_or_exported_as_bert(tokenizer, tmp_path):
    """BigBird's head applies hidden_act: a tanh pooler cannot be expressed, so big_bird is refused
    (auto takes the custom code, tests/test_export_remote.py), and architecture='bert' gives the
    exact head with full attention (equal up to the fallback length)."""
    model = tiny_model(tokenizer)  # block-sparse, pooler tanh, hidden_act gelu: a BERT-initialised student
    assert choose_hf_architecture(model.config) == "sdbert"
    with pytest.raises(ConfigError, match="hidden_act"):
        export_hf(model, tmp_path / "refused", architecture="big_bird")
    assert not (tmp_path / "refused").exists()
    result = export_hf(model, tmp_path / "bert", tokenizer=tokenizer, settings=settings_of(model),
                       architecture="bert")
    assert result.architecture == "bert" and result.notes
    ids, mask = padded(model.config, model.config.dense_fallback_length, seed=1)
    _, logits = hf_logits(tmp_path / "bert", ids, mask)
    with torch.inference_mode():
        assert max_diff(logits, model(ids, attention_mask=mask).logits) < ATOL


def test_mean_pooled_model_has_no_stock_hf_form(tokenizer, tmp_path):
    model = tiny_model(tokenizer, attention_type="full", classifier_pooling="mean")
    assert choose_hf_architecture(model.config) == "sdbert"
    with pytest.raises(ConfigError, match="mean"):
        export_hf(model, tmp_path / "hf", tokenizer=tokenizer, settings=settings_of(model), architecture="bert")
    assert not (tmp_path / "hf").exists()


def test_export_cli_hf(tokenizer, tmp_path, capsys):
    model = tiny_model(tokenizer, attention_type="full")
    save(model, tmp_path / "model", tokenizer)
    out = tmp_path / "hf"
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "hf", "--output", str(out)]) == 0
    assert "BertForSequenceClassification" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "tokenizer.json", "tokenizer_config.json"]  # + model card
    # A non-empty output is not replaced without --overwrite; a one-line error, exit status 2.
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "hf", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--overwrite" in err and len(err.splitlines()) == 1
    # Exporting over the model it reads is refused, even with --overwrite; the model is untouched.
    before = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "hf", "--overwrite",
                 "--output", str(tmp_path / "model")]) == 2
    assert "is (inside) the --model folder" in capsys.readouterr().err
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before
    # The HF folder loads back into sdbert with the same logits.
    back = SDBertForSequenceClassification.from_pretrained(out).eval()
    ids, mask = padded(model.config, 64)
    with torch.inference_mode():
        assert max_diff(back(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits) < ATOL


def test_export_cli_refuses_inexact_bigbird_in_one_line(tokenizer, tmp_path, capsys):
    save(tiny_model(tokenizer), tmp_path / "model", tokenizer)
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "hf", "--hf-architecture", "big_bird",
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--hf-architecture sdbert" in err and "--hf-architecture bert" in err
    assert not (tmp_path / "o").exists()


# --- ONNX -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_export(tokenizer, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from sdbert.export import export_onnx

    model = tiny_model(tokenizer, max_position_embeddings=2048, num_hidden_layers=1)
    folder = tmp_path_factory.mktemp("onnx") / "model"
    result = export_onnx(model, folder, tokenizer=tokenizer, settings=settings_of(model))
    return model, folder, result


def test_onnx_logits_equal_pytorch_at_512_and_2048(onnx_export):
    from sdbert.onnx_runtime import OnnxClassifier

    model, folder, result = onnx_export
    assert result.max_abs_diff < ATOL
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.onnx", "tokenizer.json"]
    onnx_model = OnnxClassifier.from_pretrained(folder)
    assert onnx_model.num_parameters() == model.num_parameters()
    # Dynamic batch and sequence axes: dense (<= 112 tokens) and sparse regimes, lengths that are not a
    # block multiple, padded rows, batch sizes 1 and 3.
    for length, batch in ((512, 2), (2048, 2), (100, 1), (777, 3)):
        ids, mask = probe_batch(model.config, length, seed=length)
        ids, mask = ids.repeat(2, 1)[:batch], mask.repeat(2, 1)[:batch]
        with torch.inference_mode():
            expected = model(ids, attention_mask=mask).logits
        assert max_diff(onnx_model(ids, attention_mask=mask).logits, expected) < ATOL, length


def test_predict_accepts_onnx_export(onnx_export, tmp_path, capsys, tokenizer):
    model, folder, _ = onnx_export
    save(model, tmp_path / "torch", tokenizer)
    files = []
    for i, text in enumerate(TEXTS[:3] + [" ".join(TEXTS) * 3]):  # the last one is truncated to max_length
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(text)
    outputs = {}
    for name, args in (("onnx", [str(folder), "--backend", "onnx", "--threads", "1"]),
                       ("torch", [str(tmp_path / "torch"), "--precision", "fp32"])):
        assert main(["predict", "--model", *args, *map(str, files)]) == 0
        outputs[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for a, b in zip(outputs["onnx"], outputs["torch"], strict=True):
        assert a["label"] == b["label"]
        for label in LABELS.values():
            assert abs(a["probabilities"][label] - b["probabilities"][label]) < ATOL


def test_serve_app_accepts_onnx_model(onnx_export, tokenizer):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sdbert.serving.app import create_app

    model, folder, _ = onnx_export
    onnx_classifier = Classifier.from_pretrained(folder)
    assert onnx_classifier.backend == "onnxruntime"
    with TestClient(create_app(onnx_classifier, name="student")) as client:
        info = client.get("/v1/model").json()
        assert info["backend"] == "onnxruntime" and info["labels"] == ["negative", "positive"]
        assert info["quantization"] is None
        response = client.post("/v1/classify", json={"texts": TEXTS[:2]})
    assert response.status_code == 200
    expected = Classifier(model, tokenizer, settings_of(model))(TEXTS[:2])
    for got, want in zip(response.json()["results"], expected, strict=True):
        assert got["label"] == want["label"] and abs(got["score"] - want["score"]) < ATOL


# --- ONNX: dynamic int8, evaluate and bench model on an export ---------------------------------------


@pytest.fixture(scope="module")
def onnx_int8(onnx_export, tmp_path_factory):
    """The fixture's fp32 graph quantised by `quantize_onnx` (the step `export --quantize int8` adds)."""
    import shutil

    from sdbert.export.onnx import quantize_onnx

    model, folder, _ = onnx_export
    out = tmp_path_factory.mktemp("onnx-int8") / "model"
    out.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(folder / name, out / name)
    quantize_onnx(folder / "model.onnx", out / "model.onnx")
    return model, out


def test_int8_export_runs_in_onnxruntime_close_to_fp32_and_smaller(onnx_export, onnx_int8):
    """Dynamic int8 keeps the interface (int64 ids/mask of any batch and length -> float logits) and
    moves logits by about 1% of their size: 0.25 + 25% of the largest logit is the self-check's
    allowance (`INT8_TOLERANCE`, derived from the real student in its comment). The file shrinks:
    the quick preset's student goes from 67.0 to 17.3 MiB; this tiny model's weights are too few for
    more than ~25% (its graph and random-block tables stay as they are)."""
    from sdbert.export import INT8_TOLERANCE, verify_onnx
    from sdbert.onnx_runtime import OnnxClassifier

    model, fp32_folder, _ = onnx_export
    _, folder = onnx_int8
    assert (folder / "model.onnx").stat().st_size < 0.8 * (fp32_folder / "model.onnx").stat().st_size
    int8 = OnnxClassifier.from_pretrained(folder)
    assert int8.quantization == "int8-dynamic" and OnnxClassifier.from_pretrained(fp32_folder).quantization is None
    assert int8.num_parameters() == model.num_parameters()  # the metadata survives quantisation
    absolute, relative = INT8_TOLERANCE
    for length, batch in ((100, 1), (512, 2), (777, 3)):
        ids, mask = probe_batch(model.config, length, seed=length)
        ids, mask = ids.repeat(2, 1)[:batch], mask.repeat(2, 1)[:batch]
        with torch.inference_mode():
            expected = model(ids, attention_mask=mask).logits
        got = int8(ids, attention_mask=mask).logits
        assert got.dtype == torch.float32 and got.shape == expected.shape
        diff = max_diff(got, expected)
        assert 0 < diff < absolute + relative * expected.abs().max().item(), length  # close, not equal
    assert verify_onnx(model, folder / "model.onnx", tolerance=INT8_TOLERANCE) > 0
    with pytest.raises(CheckpointError, match="disagrees"):  # the exact check would refuse it
        verify_onnx(model, folder / "model.onnx")


def test_export_cli_quantize_int8(onnx_export, tmp_path, capsys, monkeypatch, tokenizer, caplog):
    """`export --format onnx --quantize int8` end to end; the (slow) trace is replaced by the fixture's
    graph of the same weights, so what runs here is verify fp32 -> quantise -> verify int8 -> write."""
    import logging
    import shutil

    caplog.set_level(logging.INFO, logger="sdbert.export")

    import sdbert.export.onnx

    model, folder, _ = onnx_export
    save(model, tmp_path / "torch", tokenizer)
    monkeypatch.setattr(sdbert.export.onnx, "_torch_onnx_export",
                        lambda _model, path, _opset: shutil.copy(folder / "model.onnx", path))
    out = tmp_path / "int8"
    assert main(["export", "--model", str(tmp_path / "torch"), "--format", "onnx", "--quantize", "int8",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "int8-dynamic weights" in printed and "int8 tolerance" in printed
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.onnx", "tokenizer.json"]
    assert "onnxruntime" in (out / "README.md").read_text()
    assert (out / "model.onnx").stat().st_size < 0.8 * (folder / "model.onnx").stat().st_size
    stages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("export: ")]
    assert stages == ["export: tracing the model into an ONNX graph",  # each slow stage is announced
                      "export: checking the fp32 graph's logits against the model's in onnxruntime",
                      "export: quantising the weights to int8",
                      "export: checking the quantised graph's logits in onnxruntime"]

    assert main(["export", "--model", str(tmp_path / "torch"), "--format", "hf", "--quantize", "int8",
                 "--output", str(tmp_path / "hf")]) == 2
    assert "--format onnx only" in capsys.readouterr().err and not (tmp_path / "hf").exists()


def test_evaluate_accepts_onnx_export(onnx_export, onnx_int8, tmp_path, capsys, tokenizer):
    """`sdbert evaluate` on the ONNX folder gives the PyTorch folder's predictions (same accuracy and
    confusion matrix); the int8 one runs too and says it is quantised."""
    import csv

    model, folder, _ = onnx_export
    save(model, tmp_path / "torch", tokenizer)
    data = tmp_path / "reviews.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i, text in enumerate(TEXTS):
            writer.writerow([text * (1 + i % 20), LABELS[i % 2]])  # 10 to 200+ tokens: dense and sparse batches
    metrics = {}
    for name, path in (("torch", tmp_path / "torch"), ("onnx", folder), ("int8", onnx_int8[1])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--model", str(path), "--data", str(data), "--split", "train", "--no-progress",
                     "--batch-size", "8", "--output-json", str(out)]) == 0
        capsys.readouterr()
        metrics[name] = json.loads(out.read_text())
    assert metrics["onnx"]["examples"] == len(TEXTS)
    assert metrics["onnx"]["confusion_matrix"] == metrics["torch"]["confusion_matrix"]
    assert metrics["onnx"]["backend"] == "onnxruntime" and metrics["torch"]["backend"] == "torch"
    assert metrics["int8"]["quantization"] == "int8-dynamic" and "quantization" not in metrics["onnx"]


def test_bench_model_compares_onnxruntime_with_pytorch(onnx_export, onnx_int8, tmp_path, capsys, tokenizer):
    model, folder, _ = onnx_export
    save(model, tmp_path / "torch", tokenizer)
    out = tmp_path / "bench"
    out.mkdir()
    assert main(["bench", "model", "--model", f"torch={tmp_path / 'torch'}", "--model", f"onnx={folder}",
                 "--model", f"int8={onnx_int8[1]}", "--lengths", "64,4096", "--batch-sizes", "2", "--repeats", "1",
                 "--warmup", "0", "--threads", "1", "--no-progress", "--name", "onnx", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "onnx/torch speed-up" in printed and "onnxruntime int8" in printed
    assert "issue-4 goal" not in printed  # that goal compares a student with its teacher, not runtimes
    result = json.loads((out / "onnx.json").read_text())
    models = {m["label"]: m for m in result["models"]}
    assert [models[k]["backend"] for k in ("torch", "onnx", "int8")] == ["torch", "onnxruntime", "onnxruntime int8"]
    assert models["onnx"]["parameters"] == models["torch"]["parameters"] == model.num_parameters()
    assert models["int8"]["size_mb"] < models["onnx"]["size_mb"]
    rows = {(r["model"], r["length"]): r for r in result["rows"]}
    assert all(rows[(m, 64)]["examples_per_second"] > 0 for m in models)
    # The torch model's positions are tiled up to 4096; a graph's position table is fixed (2048): n/a.
    assert "skipped" in rows[("onnx", 4096)] and rows[("torch", 4096)]["median_ms"] > 0
    markdown = (out / "BENCHMARKS.md").read_text()
    assert "generated:onnx:begin" in markdown and "generated:model:begin" not in markdown
    assert "--name onnx" in result["command"] and "onnxruntime" in result["machine"]


@pytest.mark.parametrize(("truncation", "side", "warned"), [("head+tail", "right", True), ("tail", "left", False),
                                                            ("head", "right", False)])
def test_hf_export_keeps_the_truncation_it_can_and_warns_where_it_cannot(tokenizer, tmp_path, capsys, truncation,
                                                                         side, warned):
    model = tiny_model(tokenizer, attention_type="full")
    Classifier(model, tokenizer, InferenceSettings(max_length=64, truncation=truncation)).save_pretrained(
        tmp_path / "model")
    out = tmp_path / "hf"
    assert main(["export", "--model", str(tmp_path / "model"), "--format", "hf", "--output", str(out)]) == 0
    assert json.loads((out / "tokenizer_config.json").read_text())["truncation_side"] == side
    err = capsys.readouterr().err
    assert ("warning: this model reads the head and the tail of a text longer than 64 tokens" in err) == warned
