"""Train a BERT-style WordPiece tokenizer from scratch, reproducibly.

`tokenizers`' WordPiece trainer (BPE underneath) is not deterministic: it creates the `##c`
continuing-subword tokens while iterating a hash map with a per-process random seed, and their
ids break ties between equally frequent merges, so two runs on the same texts can learn different
vocabularies (huggingface/tokenizers#1794). Training twice must give the same tokenizer here
(same seed, same numbers; every DDP rank the same ids), so we hand the trainer every `##c` up
front, in sorted order, as extra special tokens. That fixes their ids; afterwards they are
demoted to ordinary vocabulary entries so they are neither matched in raw text nor skipped when
decoding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Tokenizer, models, trainers

from sdbert.data.tokenization import SPECIAL_TOKENS, bert_pipeline, bert_post_processor
from sdbert.errors import ConfigError

_PREFIX = "##"


def _continuing_tokens(tokenizer: Tokenizer, texts: list[str]) -> list[str]:
    """`##c` for every character the normalizer can produce from `texts`, sorted."""
    raw: set[str] = set()
    for text in texts:
        raw.update(text)
    # Normalising each distinct character (alone, and after a letter for context-dependent
    # lowercasing such as a final sigma) is far cheaper than normalising every text.
    normalize = tokenizer.normalizer.normalize_str
    chars = {c for r in raw for c in normalize(r) + normalize("a" + r)}
    return [_PREFIX + c for c in sorted(chars) if not c.isspace()]


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 30522,
    *,
    min_frequency: int = 2,
    lowercase: bool = True,
    progress: bool = False,
) -> Tokenizer:
    """A BERT-style WordPiece tokenizer trained on `texts`: [PAD] = 0, [UNK], [CLS], [SEP], [MASK]; its
    post-processor adds [CLS] ... [SEP]. Deterministic for the same texts and settings."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    texts = list(texts)
    tokenizer = bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")), lowercase=lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS + _continuing_tokens(tokenizer, texts),
        continuing_subword_prefix=_PREFIX,
        show_progress=progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    bert_post_processor(tokenizer)
    return tokenizer
