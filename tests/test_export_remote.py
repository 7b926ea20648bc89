"""Custom-code export: any sdbert model loads in plain `transformers` with `trust_remote_code=True`
and gives our logits (< 1e-4), block-sparse attention, mean pooling and tanh head included.

The student has the quick preset's shape where it matters (block 16, one random block, mean pooling,
tanh head, 4 heads) but is tiny and random (hidden 64, 2 layers, 4,096 positions); weights larger
than the default init keep attention far from uniform, so a wrong mask, seed or block moves the
logits well above the tolerance. transformers copies custom code into its modules cache, read once
at import: the `hf_modules` fixture points it (and the environment of subprocesses) at a temporary
folder, so nothing is written to ~/.cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.attention import bigbird_block_layout, block_sparse_attention
from sdbert.classifier import Classifier, InferenceSettings
from sdbert.cli import main
from sdbert.errors import CheckpointError, ConfigError
from sdbert.export import choose_hf_architecture, export_hf, probe_batch, verify_hf
from sdbert.export.remote import AUTO_MAP, REMOTE_CODE_FILES

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
LABELS = {0: "neg", 1: "pos"}
TEXTS = ["a wonderful film with great acting and a clever script", "a terrible boring movie, the worst plot",
         "the start was slow but the ending is beautiful", "never watch this again, predictable and long"] * 8
TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "sdbert" / "export" / "remote"


@pytest.fixture(scope="module", autouse=True)
def hf_modules(tmp_path_factory):
    """transformers' modules cache in a temporary folder, for this process and its subprocesses."""
    import transformers.dynamic_module_utils as dynamic

    home = tmp_path_factory.mktemp("hf_home")
    modules = home / "modules"
    modules.mkdir()
    (modules / "__init__.py").touch()
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "transformers_modules"}
    patch = pytest.MonkeyPatch()
    for name, value in (("HF_HOME", home), ("HF_MODULES_CACHE", modules), ("HF_HUB_OFFLINE", 1)):
        patch.setenv(name, str(value))
    patch.setattr(dynamic, "HF_MODULES_CACHE", str(modules))
    patch.syspath_prepend(str(modules))  # ahead of any other cache, and init_hf_modules sees it there
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    yield modules
    for name in [n for n in sys.modules if n.split(".")[0] == "transformers_modules"]:
        del sys.modules[name]
    sys.modules.update(saved)
    patch.undo()


def student(tokenizer, seed=0, **overrides) -> Classifier:
    """A classifier whose texts may use every position of its model."""
    settings = dict(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=4096, block_size=16,
                    num_random_blocks=1, attention_type="block_sparse", classifier_pooling="mean",
                    pooler_activation="tanh", hidden_act="gelu", initializer_range=0.2, id2label=LABELS)
    torch.manual_seed(seed)
    model = SDBertForSequenceClassification(SDBertConfig(**{**settings, **overrides})).eval()
    return Classifier(model, tokenizer, InferenceSettings(max_length=model.config.max_position_embeddings))


@pytest.fixture(scope="module")
def exported(tiny_tokenizer, tmp_path_factory, hf_modules):
    classifier = student(tiny_tokenizer)
    model = classifier.model
    folder = tmp_path_factory.mktemp("export") / "student_hf"
    # auto: no stock class is exact for this model
    result = export_hf(model, folder, tokenizer=classifier.tokenizer, settings=classifier.settings)
    cached = sorted(p.name for p in (hf_modules / "transformers_modules").iterdir() if not p.name.startswith("_"))
    return model, folder, result, cached


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def remote_classifier(folder):
    return transformers.AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()


# --- choice of form -----------------------------------------------------------------------------------


@pytest.mark.parametrize("settings, auto, refused", [
    (dict(attention_type="full"), "bert", ["big_bird"]),
    (dict(attention_type="full", pooler_activation="gelu"), "big_bird", ["bert"]),
    (dict(pooler_activation="gelu"), "sdbert", ["bert"]),  # BigBird: exact up to the fallback only
    (dict(), "sdbert", ["big_bird"]),  # a BERT start: tanh head
    (dict(max_position_embeddings=112), "bert", ["big_bird"]),  # never longer than the dense fallback
    (dict(classifier_pooling="mean"), "sdbert", ["bert", "big_bird"]),
    (dict(attention_type="full", pooler_activation="relu"), "sdbert", ["bert", "big_bird"]),
    (dict(attention_type="full", embedding_size=8), "sdbert", ["bert", "big_bird"]),  # factorised embeddings
])
def test_auto_picks_a_stock_class_only_where_it_is_exact_at_every_length(settings, auto, refused):
    base = dict(hidden_size=32, num_attention_heads=4, max_position_embeddings=512, block_size=16, num_random_blocks=1)
    config = SDBertConfig(**{**base, **settings})  # dense fallback: (5 + 2) * 16 = 112 tokens
    assert choose_hf_architecture(config) == auto
    assert choose_hf_architecture(config, "sdbert") == "sdbert"
    for stock in refused:
        with pytest.raises(ConfigError, match="sdbert"):  # the message names the exact alternative
            choose_hf_architecture(config, stock)


# --- the exported folder ------------------------------------------------------------------------------


def test_export_writes_self_contained_custom_code_and_auto_map(exported):
    model, folder, result, cached = exported
    assert result.architecture == "sdbert" and result.max_abs_diff < ATOL
    assert any("trust_remote_code=True" in note for note in result.notes)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", *REMOTE_CODE_FILES])
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # The self-check's load is cached under the output's own name, the entry a later load reuses.
    assert cached == ["student_hf"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "sdbert" and config["auto_map"] == AUTO_MAP
    assert config["architectures"] == ["SDBertForSequenceClassification"]
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert (config["classifier_pooling"], config["pooler_activation"], config["block_size"]) == ("mean", "tanh", 16)
    assert "init_checkpoint" not in config and "gradient_checkpointing" not in config
    for name in REMOTE_CODE_FILES:
        code = (folder / name).read_text()
        assert code == (TEMPLATES / name).read_text()  # copied from the package, not generated
        assert not re.search(r"^\s*(import|from)\s+sdbert\b", code, flags=re.M)


def test_remote_code_logits_equal_ours_at_256_and_4096_tokens_with_padding(exported):
    """Padded batches (a full row and one padded to two thirds) in the dense regime (100 tokens) and
    the sparse one (256, 4,096), and one unpadded text whose length is not a block multiple."""
    model, folder, _, _ = exported
    hf = remote_classifier(folder)
    assert type(hf).__name__ == "SDBertForSequenceClassification"
    assert type(hf).__module__.startswith("transformers_modules.")  # the folder's code, not sdbert's
    batches = [probe_batch(model.config, length, seed=length) for length in (100, 256, 4096)]
    ids, mask = probe_batch(model.config, 3001, seed=1)
    batches.append((ids[:1], None))
    with torch.inference_mode():
        for ids, mask in batches:
            expected = model(ids, attention_mask=mask).logits
            assert max_diff(hf(input_ids=ids, attention_mask=mask).logits, expected) < ATOL, ids.shape
        # 256 tokens (16 blocks) really ran block-sparse attention: full attention gives other logits.
        dense = SDBertForSequenceClassification(model.config.replace(attention_type="full")).eval()
        dense.load_state_dict(model.state_dict())
        ids, mask = batches[1]
        assert max_diff(dense(ids, attention_mask=mask).logits, hf(input_ids=ids, attention_mask=mask).logits) > 1e-3


def test_remote_base_model_gives_our_hidden_states_and_pooled_output(exported):
    model, folder, _, _ = exported
    base = transformers.AutoModel.from_pretrained(str(folder), trust_remote_code=True).eval()
    assert type(base).__name__ == "SDBertModel"
    ids, mask = probe_batch(model.config, 256, seed=2)
    with torch.inference_mode():
        out = base(input_ids=ids, attention_mask=mask)
        key_padding_mask = mask.bool()
        hidden, _ = model.bert(ids, key_padding_mask)
        real = key_padding_mask[..., None]
        assert max_diff(out.last_hidden_state * real, hidden * real) < ATOL
        assert max_diff(out.pooler_output, model.bert.pooler(hidden, key_padding_mask)) < ATOL


def test_pipeline_labels_equal_sdbert_predict(exported, tiny_tokenizer, tmp_path, capsys):
    """pipeline(trust_remote_code=True) on texts in the dense and the sparse regime gives the labels
    and probabilities of `sdbert predict` and of the `Classifier` (and sdbert reads the exported folder too)."""
    model, folder, _, _ = exported
    ours = Classifier(model, tiny_tokenizer, InferenceSettings(max_length=4096))
    texts = [TEXTS[0], TEXTS[1], " ".join(TEXTS[:12]), " ".join(TEXTS[1:40])]  # ~10 to ~400 tokens
    assert len(ours.tokenizer.encode(texts[-1]).ids) > model.config.dense_fallback_length
    classifier = transformers.pipeline("text-classification", model=str(folder), trust_remote_code=True,
                                       device="cpu")
    got = classifier(texts, top_k=None)
    ours.save_pretrained(tmp_path / "model")
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(text)
    predicted = {}
    for name, path in (("sdbert", tmp_path / "model"), ("export", folder)):
        assert main(["predict", "--model", str(path), "--precision", "fp32", *map(str, files)]) == 0
        predicted[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert predicted["sdbert"] == predicted["export"]
    for scores, line, expected in zip(got, predicted["sdbert"], ours(texts), strict=True):
        probabilities = {d["label"]: d["score"] for d in scores}
        assert max(probabilities, key=probabilities.get) == line["label"] == expected["label"]
        for label, p in expected["probabilities"].items():
            assert abs(probabilities[label] - p) < ATOL and abs(line["probabilities"][label] - p) < ATOL
    assert {line["label"] for line in predicted["sdbert"]} <= set(LABELS.values())


_CHILD = """
import json, os, sys

sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "sdbert"))]

class NoSdbert:  # the exported folder must work where sdbert is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "sdbert":
            raise ImportError("sdbert is blocked in this process")
        return None

sys.meta_path.insert(0, NoSdbert())
import torch, transformers

folder, probes = sys.argv[1], torch.load(sys.argv[2])
model = transformers.AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.inference_mode():
    logits = [model(input_ids=ids, attention_mask=mask).logits.tolist() for ids, mask in probes]
pipe = transformers.pipeline("text-classification", model=folder, trust_remote_code=True, device="cpu")
print(json.dumps({"logits": logits, "labels": [r["label"] for r in pipe(json.loads(sys.argv[3]))],
                  "sdbert": sorted(m for m in sys.modules if m.split(".")[0] == "sdbert")}))
"""


def test_generated_code_runs_where_sdbert_cannot_be_imported(exported, tiny_tokenizer, tmp_path):
    model, folder, _, _ = exported
    ours = Classifier(model, tiny_tokenizer, InferenceSettings(max_length=4096))
    probes = [probe_batch(model.config, length, seed=length) for length in (256, 4096)]
    torch.save(probes, tmp_path / "probes.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    texts = TEXTS[:4]
    run = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(tmp_path / "probes.pt"), json.dumps(texts)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["sdbert"] == []
    with torch.inference_mode():
        for (ids, mask), logits in zip(probes, out["logits"], strict=True):
            assert max_diff(torch.tensor(logits), model(ids, attention_mask=mask).logits) < ATOL
    assert out["labels"] == [r["label"] for r in ours(texts)]


# --- the templates against sdbert's kernel ------------------------------------------------------------


def test_template_kernel_equals_sdbert_block_sparse_attention():
    """The copy in modeling_sdbert.py draws the same layouts and computes the same attention as
    `sdbert.attention` (dense fallback, padding to a block multiple, key padding, random blocks)."""
    from sdbert.export.remote import modeling_sdbert as remote

    for nb, r, heads, seed in ((6, 0, 1, 0), (7, 1, 2, 3), (8, 1, 3, 5), (20, 2, 4, 11), (64, 3, 2, 1)):
        assert torch.equal(remote.bigbird_block_layout(nb, r, num_heads=heads, seed=seed),
                           bigbird_block_layout(nb, r, num_heads=heads, seed=seed))
    for seq_len, r in ((40, 1), (112, 1), (113, 1), (300, 1), (517, 2), (1000, 3)):
        g = torch.Generator().manual_seed(seq_len)
        q, k, v = (torch.randn(2, 3, seq_len, 8, generator=g, dtype=torch.float64) for _ in range(3))
        mask = torch.ones(2, seq_len, dtype=torch.bool)
        mask[1, max(1, seq_len - 37):] = False
        for key_padding_mask in (mask, None):
            kwargs = dict(block_size=16, num_random_blocks=r, key_padding_mask=key_padding_mask, seed=7)
            got = remote.block_sparse_attention(q, k, v, **kwargs)
            assert max_diff(got, block_sparse_attention(q, k, v, **kwargs)) < 1e-10, (seq_len, r)


# --- self-check and command line ----------------------------------------------------------------------


def test_verify_catches_a_folder_that_differs_only_in_the_sparse_regime(exported, tmp_path):
    """Another random-block seed leaves dense inputs unchanged: the self-check must probe a sparse length."""
    model, folder, _, _ = exported
    assert verify_hf(model, folder) < ATOL
    shutil.copytree(folder, tmp_path / "other_seed")
    config = json.loads((tmp_path / "other_seed" / "config.json").read_text())
    config["attention_seed"] += 1
    (tmp_path / "other_seed" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="disagrees"):
        verify_hf(model, tmp_path / "other_seed")


def test_export_cli_custom_code(tiny_tokenizer, tmp_path, capsys):
    """Default: custom code for a block-sparse tanh-head model (it used to be refused); a stock class
    that cannot be exact is refused in one line naming the alternative; full attention exports as
    custom code on request."""
    sparse = student(tiny_tokenizer, classifier_pooling="cls", max_position_embeddings=512)
    sparse.save_pretrained(tmp_path / "sparse")
    assert main(["export", "--model", str(tmp_path / "sparse"), "--format", "hf", "--output", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "SDBertForSequenceClassification (custom code)" in printed and "logits match ours" in printed
    assert "trust_remote_code=True" in printed and "--hf-architecture bert" in printed
    assert "custom code which must be executed" not in printed  # the self-check asks no question
    assert (tmp_path / "a" / "modeling_sdbert.py").is_file()
    card = (tmp_path / "a" / "README.md").read_text()  # no run record in the source: no accuracy claimed
    assert "trust_remote_code=True" in card and "Not evaluated by sdbert" in card and "block-sparse" in card

    assert main(["export", "--model", str(tmp_path / "sparse"), "--format", "hf", "--hf-architecture", "big_bird",
                 "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--hf-architecture sdbert" in err and not (tmp_path / "b").exists()

    full = student(tiny_tokenizer, attention_type="full", max_position_embeddings=256, seed=1)
    full.save_pretrained(tmp_path / "full")
    assert main(["export", "--model", str(tmp_path / "full"), "--format", "hf", "--hf-architecture", "sdbert",
                 "--output", str(tmp_path / "c")]) == 0
    assert "logits match ours" in capsys.readouterr().out
    ids, mask = probe_batch(full.config, 200, seed=4)
    with torch.inference_mode():
        logits = remote_classifier(tmp_path / "c")(input_ids=ids, attention_mask=mask).logits
        assert max_diff(logits, full.model(ids, attention_mask=mask).logits) < ATOL


def test_factorised_embeddings_export_and_give_our_logits(tiny_tokenizer, tmp_path):
    """A student with ALBERT-style factorised embeddings (the small Table 1 row) exports as custom code
    whose logits are ours, in the dense and the sparse regime."""
    classifier = student(tiny_tokenizer, seed=3, embedding_size=16)
    model = classifier.model
    result = export_hf(model, tmp_path / "small", tokenizer=classifier.tokenizer, settings=classifier.settings)
    assert result.architecture == "sdbert" and result.max_abs_diff < ATOL
    assert json.loads((tmp_path / "small" / "config.json").read_text())["embedding_size"] == 16
    hf = remote_classifier(tmp_path / "small")
    assert hf.bert.embeddings.word_embeddings.weight.shape[1] == 16
    with torch.inference_mode():
        for length in (100, 256):
            ids, mask = probe_batch(model.config, length, seed=length)
            expected = model(ids, attention_mask=mask).logits
            assert max_diff(hf(input_ids=ids, attention_mask=mask).logits, expected) < ATOL
