"""Tokenizers saved with checkpoints, their special tokens, and truncation of long texts.

Truncation is done here on the untruncated ids rather than by the tokenizer, because `tokenizers`
can only keep a head or a tail; `head+tail` keeps the first `head_tokens` (128) content tokens and
fills the rest of `max_length` with the last ones (382 at 512 with [CLS] and [SEP]), which Sun et
al. (2019, "How to Fine-Tune BERT for Text Classification?") found best on IMDb. The special
tokens the tokenizer's post-processor would add (`[CLS] ... [SEP]` for BERT, `<s> ... </s>` for
RoBERTa) are found once by probing it and then put back around the kept ids, so any template
works without knowing its token names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from sdbert.config import TRUNCATIONS
from sdbert.data.progress import progress_bar
from sdbert.errors import CheckpointError, ConfigError, require
from sdbert.hub import resolve_model_dir
from sdbert.io import atomic_open

logger = logging.getLogger(__name__)

Truncation = Literal["head", "tail", "head+tail"]
SENTENCEPIECE_NAME = "spiece.model"  # BigBird's, ALBERT's and T5's name for it
# BERT's special tokens, in the order that gives [PAD] id 0 (the model's pad_token_id default).
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>", "[pad]")
# Texts per encode_batch call: big enough for the Rust thread pool, small enough to bound the
# memory of the Encoding objects (offsets, masks) that we throw away.
_ENCODE_CHUNK = 1024


def _plain(tokenizer: Tokenizer) -> Tokenizer:
    """`tokenizer` without built-in truncation or padding (a copy when they are set)."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def bert_pipeline(tokenizer: Tokenizer, lowercase: bool) -> Tokenizer:
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def bert_post_processor(tokenizer: Tokenizer) -> None:
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise CheckpointError("the vocabulary has no [CLS] or [SEP] token")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )


def load_tokenizer(model_dir: str | os.PathLike[str], *, revision: str | None = None) -> Tokenizer:
    """The tokenizer saved with a model: `tokenizer.json`, else one converted from a SentencePiece
    `spiece.model` (BigBird's hub folder) by `transformers`, else a BERT WordPiece from `vocab.txt`.
    `model_dir` may be a hub name (`org/name`, at `revision`).

    Built-in truncation and padding are switched off: `encode` truncates and `collate` pads.
    """
    model_dir = resolve_model_dir(model_dir, revision=revision)
    tokenizer_file, vocab_file = model_dir / "tokenizer.json", model_dir / "vocab.txt"
    if tokenizer_file.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises plain Exception subclasses from Rust
            raise CheckpointError(f"cannot read {tokenizer_file}: {exc}") from exc
    elif (model_dir / SENTENCEPIECE_NAME).is_file():
        tokenizer = sentencepiece_tokenizer(model_dir)
    elif vocab_file.is_file():
        tokenizer = bert_pipeline(
            Tokenizer(models.WordPiece.from_file(str(vocab_file), unk_token="[UNK]")),
            lowercase=_do_lower_case(model_dir),
        )
        bert_post_processor(tokenizer)
    else:
        raise CheckpointError(f"no tokenizer in {model_dir}: expected tokenizer.json, {SENTENCEPIECE_NAME} or "
                              "vocab.txt")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def sentencepiece_tokenizer(model_dir: Path) -> Tokenizer:
    """The `tokenizers` form of a folder's SentencePiece model, as `transformers` builds its fast
    tokenizer from it (normaliser, pieces, `[CLS] ... [SEP]` template from the folder's tokenizer class)."""
    purpose = f"reading the SentencePiece tokenizer {model_dir / SENTENCEPIECE_NAME}"
    transformers = require("transformers", purpose)
    require("sentencepiece", purpose)  # and protobuf, which transformers names itself when it is missing
    try:
        converted = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError... from many places
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot convert {model_dir / SENTENCEPIECE_NAME}: {first_line}") from exc
    backend = getattr(converted, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(f"cannot convert {model_dir / SENTENCEPIECE_NAME}: transformers gave no fast tokenizer")
    return Tokenizer.from_str(backend.to_str())


def _do_lower_case(model_dir: Path) -> bool:
    # HF writes the casing of a vocab.txt-only tokenizer into tokenizer_config.json; uncased is the default.
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text()).get("do_lower_case", True))
        except (json.JSONDecodeError, OSError):
            pass
    return True


def save_tokenizer(tokenizer: Tokenizer, directory: str | os.PathLike[str]) -> Path:
    """Write `tokenizer.json` into `directory` atomically; returns its path."""
    path = Path(directory) / "tokenizer.json"
    with atomic_open(path, "w") as f:
        f.write(_plain(tokenizer).to_str(pretty=True))
    return path


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's definition, ignoring truncation/padding (which `encode` overrides)."""
    spec = json.loads(tokenizer.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """(prefix, suffix) ids the post-processor puts around a single sequence, e.g. ([101], [102])."""
    probe = _plain(tokenizer).encode("hello world", add_special_tokens=True)
    mask = probe.special_tokens_mask
    start = 0
    while start < len(mask) and mask[start]:
        start += 1
    end = len(mask)
    while end > start and mask[end - 1]:
        end -= 1
    return list(probe.ids[:start]), list(probe.ids[end:])


def mask_token(tokenizer: Tokenizer) -> str | None:
    """The mask token's text (BERT's [MASK], RoBERTa's <mask>), or None for a tokenizer without one."""
    return next((t for t in ("[MASK]", "<mask>") if tokenizer.token_to_id(t) is not None), None)


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The padding id: the tokenizer's padding setting, else a token named like [PAD], else 0."""
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    for name in _PAD_NAMES:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    return 0


def truncate_ids(ids: Sequence[int], budget: int, truncation: Truncation = "head", head_tokens: int = 128) -> list[int]:
    """At most `budget` content ids: the first ones, the last ones, or `head_tokens` of each end."""
    if len(ids) <= budget:
        return list(ids)
    if truncation == "head":
        return list(ids[:budget])
    if truncation == "tail":
        return list(ids[len(ids) - budget :])
    if truncation == "head+tail":
        head = min(head_tokens, budget)
        return list(ids[:head]) + list(ids[len(ids) - (budget - head) :])
    raise ConfigError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")


def encode(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_length: int,
    truncation: Truncation = "head",
    *,
    head_tokens: int = 128,
    progress: bool | None = None,
    full_lengths: list[int] | None = None,
) -> list[list[int]]:
    """Token ids per text, special tokens included, at most `max_length` each.

    Texts longer than that keep their head, their tail, or (`head+tail`) their first `head_tokens`
    content tokens plus as many of the last ones as fit. `full_lengths`, when given, receives each
    text's length before truncation (special tokens included), so callers can say what was cut.
    """
    if truncation not in TRUNCATIONS:
        raise ConfigError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    if head_tokens < 0:
        raise ConfigError(f"head_tokens must be >= 0, got {head_tokens}")
    tok = _plain(tokenizer)
    prefix, suffix = special_tokens(tok)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ConfigError(
            f"max_length {max_length} leaves no room for text beside {len(prefix) + len(suffix)} special tokens"
        )
    # encode_batch_fast skips character offsets, which we never use; older tokenizers lack it.
    encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)
    out: list[list[int]] = []
    with progress_bar(progress, total=len(texts), desc="tokenising", unit="text") as bar:
        for start in range(0, len(texts), _ENCODE_CHUNK):
            chunk = list(texts[start : start + _ENCODE_CHUNK])
            for enc in encode_batch(chunk, add_special_tokens=False):
                out.append(prefix + truncate_ids(enc.ids, budget, truncation, head_tokens) + suffix)
                if full_lengths is not None:
                    full_lengths.append(len(enc.ids) + len(prefix) + len(suffix))
            bar.update(len(chunk))
    return out
