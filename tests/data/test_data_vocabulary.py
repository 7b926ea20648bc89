"""Cutting a WordPiece vocabulary to the pieces a corpus uses (`sdbert.data.vocabulary`)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from data_fixtures import IMDB_REVIEWS
from sdbert.data import pad_token_id, train_wordpiece_tokenizer
from sdbert.data.vocabulary import cut_vocabulary, piece_counts
from sdbert.errors import ConfigError

CORPUS = [text for _, _, text in IMDB_REVIEWS]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_wordpiece_tokenizer(CORPUS * 3, vocab_size=400, min_frequency=1)


def test_the_cut_keeps_specials_characters_and_the_most_used_pieces(tokenizer):
    cut = cut_vocabulary(tokenizer, CORPUS, 90)
    assert cut.tokenizer.get_vocab_size() == len(cut.ids) == 90 < tokenizer.get_vocab_size()
    assert cut.ids == sorted(cut.ids)  # kept pieces keep their order: [PAD] stays 0
    assert pad_token_id(cut.tokenizer) == cut.ids.index(pad_token_id(tokenizer)) == 0
    old, new = tokenizer.get_vocab(), cut.tokenizer.get_vocab()
    for piece, new_id in new.items():
        assert cut.ids[new_id] == old[piece]  # the new id indexes the old embedding rows
    for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert special in new
    counts = piece_counts(tokenizer, CORPUS)
    (most_used, _), = counts.most_common(1)
    assert cut.ids.index(most_used) >= 0
    dropped = [i for i in counts if i not in cut.ids]
    assert dropped and max(counts[i] for i in dropped) <= min(counts[i] for i in cut.ids if i in counts)


def test_kept_words_tokenise_as_before_and_dropped_ones_split_without_unk(tokenizer):
    cut = cut_vocabulary(tokenizer, CORPUS, 90)
    unk = cut.tokenizer.token_to_id("[UNK]")
    changed = 0
    for text in CORPUS:
        before, after = tokenizer.encode(text), cut.tokenizer.encode(text)
        assert unk not in after.ids  # every character of the corpus still spells out
        assert after.tokens[0] == "[CLS]" and after.tokens[-1] == "[SEP]"  # the post-processor's ids follow
        if all(i in cut.ids for i in before.ids):
            assert [cut.ids[i] for i in after.ids] == before.ids
        else:
            changed += 1
            assert len(after.ids) > len(before.ids)  # a dropped piece becomes shorter kept ones
            assert "".join(after.tokens).replace("##", "") == "".join(before.tokens).replace("##", "")
    assert changed > 0


def test_the_cut_is_reproducible_and_never_larger_than_what_the_corpus_uses(tokenizer):
    assert cut_vocabulary(tokenizer, CORPUS, 90).ids == cut_vocabulary(tokenizer, CORPUS, 90).ids
    used = len(piece_counts(tokenizer, CORPUS[:2]).keys() | {0, 1, 2, 3, 4})
    roomy = cut_vocabulary(tokenizer, CORPUS[:2], 10_000)
    assert len(roomy.ids) < tokenizer.get_vocab_size() and len(roomy.ids) >= used


def test_a_cut_too_small_for_the_specials_and_characters_or_not_wordpiece_is_refused(tokenizer):
    with pytest.raises(ConfigError, match="ask for at least"):
        cut_vocabulary(tokenizer, CORPUS, 10)
    bpe = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ConfigError, match="WordPiece"):
        cut_vocabulary(bpe, ["a b"], 10)


def test_a_sentencepiece_unigram_vocabulary_is_cut_the_same_way():
    """BigBird's and ALBERT's tokenizers are Unigram: the kept pieces keep their scores, the best split of a
    word whose pieces were all kept does not change, and no text of the corpus gains an unknown piece."""
    from tokenizers import normalizers, trainers

    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.Lowercase()
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(CORPUS * 3, trainers.UnigramTrainer(vocab_size=300, unk_token="<unk>",
                                                                     special_tokens=["<pad>", "<unk>"]))
    cut = cut_vocabulary(unigram, CORPUS, 70)
    assert len(cut.ids) == cut.tokenizer.get_vocab_size() == 70 < unigram.get_vocab_size()
    unk = cut.tokenizer.token_to_id("<unk>")
    changed = 0
    for text in CORPUS:
        before, after = unigram.encode(text), cut.tokenizer.encode(text)
        assert unk not in after.ids
        if all(i in cut.ids for i in before.ids):
            assert [cut.ids[i] for i in after.ids] == before.ids
        else:
            changed += 1
    assert changed > 0
