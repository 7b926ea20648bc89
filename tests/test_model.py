import json

import pytest
import torch

import sdbert.model as model_module
from conftest import make_tiny_config as tiny_config
from sdbert import SDBertConfig, SDBertForSequenceClassification
from sdbert.attention import bigbird_block_layout, dense_attention, layout_to_token_mask
from sdbert.errors import CheckpointError, ConfigError


def batch(seq=100, lengths=(100, 61), vocab=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), seq), generator=g)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids * mask, mask


def test_config_json_round_trip(tmp_path):
    config = tiny_config(id2label={0: "bad", 1: "good", 2: "meh"}, num_labels=3)
    config.to_json_file(tmp_path / "config.json")
    again = SDBertConfig.from_json_file(tmp_path / "config.json")
    assert again == config
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "sdbert"
    assert again.label2id == {"bad": 0, "good": 1, "meh": 2}


@pytest.mark.parametrize("bad,match", [
    (dict(hidden_size=30), "divisible"),
    (dict(attention_type="sparse"), "attention_type"),
    (dict(num_labels=3), "id2label"),
    (dict(block_size=0), "block_size"),
    (dict(hidden_act="swish2"), "hidden_act"),
    (dict(embedding_size=0), "embedding_size"),
    (dict(embedding_size=10_000), "embedding_size"),
])
def test_impossible_configs_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(**bad)


@pytest.mark.parametrize("attention_type", ["full", "block_sparse"])
def test_forward_shapes_and_loss(attention_type):
    model = SDBertForSequenceClassification(tiny_config(attention_type=attention_type)).eval()
    ids, mask = batch()
    out = model(ids, attention_mask=mask, labels=torch.tensor([0, 1]), output_hidden_states=True)
    assert out.logits.shape == (2, 2)
    assert out.loss is not None and out.loss.ndim == 0
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (2, 100, 32)


def test_block_sparse_model_equals_dense_oracle_model(monkeypatch):
    torch.manual_seed(0)
    config = tiny_config(attention_type="block_sparse")
    model = SDBertForSequenceClassification(config).eval().double()
    ids, mask = batch()
    sparse_logits = model(ids, attention_mask=mask).logits

    def oracle_fn(q, k, v, *, key_padding_mask, config, layer_idx, seed, dropout_p):
        nb = -(-q.shape[2] // config.block_size)
        layout = bigbird_block_layout(nb, config.num_random_blocks, num_heads=q.shape[1], seed=seed)
        token_mask = layout_to_token_mask(layout, config.block_size, q.shape[2])[None]
        return dense_attention(q, k, v, attn_mask=token_mask & key_padding_mask[:, None, None, :])

    monkeypatch.setitem(model_module.ATTENTION_FUNCTIONS, "block_sparse", oracle_fn)
    oracle_logits = model(ids, attention_mask=mask).logits
    assert (sparse_logits - oracle_logits).abs().max() < 1e-10


def test_layers_use_different_fixed_patterns_and_forward_changes_no_state():
    model = SDBertForSequenceClassification(tiny_config())
    seeds = [layer.attention.self.attention_seed() for layer in model.bert.encoder.layer]
    assert len(set(seeds)) == len(seeds)
    before = model.config.to_dict()
    ids, mask = batch()
    model.eval()
    first = model(ids, attention_mask=mask).logits
    model(ids[:, :30], attention_mask=mask[:, :30])  # short: dense this call only
    model.train()
    model(ids, attention_mask=mask)
    model.eval()
    assert torch.equal(first, model(ids, attention_mask=mask).logits), "same pattern in eval after training"
    assert model.config.to_dict() == before


def test_resample_random_blocks_changes_pattern_in_training_only():
    model = SDBertForSequenceClassification(tiny_config(resample_random_blocks=True))
    attn = model.bert.encoder.layer[0].attention.self
    model.train()
    assert len({attn.attention_seed() for _ in range(5)}) > 1
    model.eval()
    assert attn.attention_seed() == model.config.attention_seed


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_logits_of_real_tokens(pooling):
    model = SDBertForSequenceClassification(tiny_config(attention_type="full", classifier_pooling=pooling)).eval()
    ids, mask = batch(seq=64, lengths=(40, 64))
    padded = model(ids, attention_mask=mask).logits[0]
    alone = model(ids[:1, :40], attention_mask=mask[:1, :40]).logits[0]
    assert (padded - alone).abs().max() < 1e-5


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    ids, mask = batch()
    labels = torch.tensor([1, 0])
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SDBertForSequenceClassification(tiny_config(gradient_checkpointing=checkpointing)).train()
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_num_parameters_counts_every_weight():
    model = SDBertForSequenceClassification(tiny_config())
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - 100 * 32


def test_save_and_load_round_trip(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from sdbert.classifier import Classifier, InferenceSettings

    model = SDBertForSequenceClassification(tiny_config(id2label={0: "no", 1: "yes"})).eval()
    tokenizer = Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1, "hi": 2}, unk_token="[UNK]"))
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer, settings=InferenceSettings(200, "head"))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors",
                                                                   "tokenizer.json"]
    loaded = SDBertForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    ids, mask = batch()
    assert torch.equal(model(ids, attention_mask=mask).logits, loaded(ids, attention_mask=mask).logits)
    assert loaded.config == model.config
    classifier = Classifier.from_pretrained(tmp_path / "m")  # the bundle: model, tokenizer and settings
    assert classifier.tokenizer.encode("hi").ids == [2]
    assert classifier.settings == InferenceSettings(200, "head") and classifier.max_length() == 200
    classifier.save_pretrained(tmp_path / "copy")
    again = Classifier.from_pretrained(tmp_path / "copy")
    assert again.settings == classifier.settings and again.config == model.config
    assert (tmp_path / "copy" / "config.json").read_text() == (tmp_path / "m" / "config.json").read_text()
    loaded.save_pretrained(tmp_path / "resaved")  # a loaded model keeps its folder's tokenizer and settings
    for name in ("config.json", "tokenizer.json"):
        assert (tmp_path / "resaved" / name).read_text() == (tmp_path / "m" / name).read_text()


def test_a_bare_model_folder_has_default_settings_and_no_tokenizer(tmp_path):
    from sdbert.checkpoint import read_inference_settings
    from sdbert.classifier import Classifier, InferenceSettings
    from sdbert.errors import CheckpointError

    SDBertForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "m")
    assert read_inference_settings(tmp_path / "m") == InferenceSettings()
    with pytest.raises(CheckpointError, match="no tokenizer"):
        Classifier.from_pretrained(tmp_path / "m")


def test_inference_settings_are_checked_and_bounded_by_the_positions():
    from sdbert.classifier import InferenceSettings
    from sdbert.errors import ConfigError

    with pytest.raises(ConfigError, match="truncation"):
        InferenceSettings(truncation="middle")
    with pytest.raises(ConfigError, match="positive"):
        InferenceSettings(max_length=0)
    settings = InferenceSettings(max_length=300)
    assert settings.tokens_per_text(512) == 300 and settings.tokens_per_text(256) == 256
    assert settings.tokens_per_text(512, requested=100) == 100
    with pytest.raises(ConfigError, match="exceeds the model's 512 positions"):
        settings.tokens_per_text(512, requested=1000)
    # a Hugging Face config's max_length is a generation setting, not ours
    assert InferenceSettings.from_config_dict({"model_type": "bert", "max_length": 20}) == InferenceSettings()


def test_load_with_overrides_extends_positions_and_resets_classifier(tmp_path):
    model = SDBertForSequenceClassification(tiny_config())
    model.save_pretrained(tmp_path)
    loaded = SDBertForSequenceClassification.from_pretrained(tmp_path, max_position_embeddings=600, num_labels=3)
    table = model.bert.embeddings.position_embeddings.weight
    new = loaded.bert.embeddings.position_embeddings.weight
    assert new.shape == (600, 32)
    assert torch.equal(new[:256], table) and torch.equal(new[256:512], table)
    assert loaded.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    old_dense, new_dense = (m.bert.encoder.layer[1].output.dense.weight for m in (model, loaded))
    assert torch.equal(old_dense, new_dense)


def test_too_long_input_is_a_clear_error():
    model = SDBertForSequenceClassification(tiny_config())
    with pytest.raises(ValueError, match="positions"):
        model(torch.ones(1, 300, dtype=torch.long))


def test_bad_model_folders(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        SDBertForSequenceClassification.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json"):
        SDBertForSequenceClassification.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        SDBertForSequenceClassification.from_pretrained(tmp_path)
    model = SDBertForSequenceClassification(tiny_config())
    model.save_pretrained(tmp_path / "ok")
    with pytest.raises(ConfigError, match="unknown config field"):
        SDBertForSequenceClassification.from_pretrained(tmp_path / "ok", hidden_sise=3)
    (tmp_path / "ok" / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        SDBertForSequenceClassification.from_pretrained(tmp_path / "ok")


def test_mean_pooling_averages_real_tokens_only():
    model = SDBertForSequenceClassification(tiny_config(classifier_pooling="mean")).eval()
    hidden = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled = model.bert.pooler(hidden, mask)
    expected = torch.tanh(model.bert.pooler.dense(hidden[0, :3].mean(0)))
    assert torch.allclose(pooled[0], expected, atol=1e-6)


def test_sentence_transformers_folder_classifies_from_the_mean(tmp_path):
    model = SDBertForSequenceClassification(tiny_config())
    model.save_pretrained(tmp_path)
    from sdbert.checkpoint import sentence_transformers_mean_pooling

    assert not sentence_transformers_mean_pooling(tmp_path)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    assert sentence_transformers_mean_pooling(tmp_path)


def test_inference_mode_first_then_training_at_the_same_length():
    """Cached layouts built under inference_mode must still serve a later backward pass."""
    model = SDBertForSequenceClassification(tiny_config(attention_seed=977))  # a seed no other test caches
    ids, mask = batch(seq=136, lengths=(136, 120))
    with torch.inference_mode():
        model.eval()(ids, attention_mask=mask)
    model.train()(ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
    assert model.classifier.weight.grad is not None
