"""Tokenised datasets as flat arrays, cached on disk so a second run does not tokenise again.

Token ids of all examples live in one int32 array with an int64 offsets array (example `i` is
`ids[offsets[i]:offsets[i + 1]]`): compact, fast to save and load with NumPy, and cheap to slice
for batching. The cache key covers everything that changes the ids: the data fingerprint, the
tokenizer definition, `max_length`, the truncation strategy and its head size. Entries are
written atomically, so concurrent DDP ranks or a killed run never leave a torn file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from sdbert.data import tokenization
from sdbert.data.cache import cache_dir as default_cache_dir
from sdbert.data.dataset import TextDataset
from sdbert.io import atomic_open

logger = logging.getLogger(__name__)

# Bump when the stored layout or the truncation code changes meaning.
_CACHE_VERSION = 2  # 2: stores each text's length before truncation


@dataclass
class EncodedDataset:
    """Token ids of every example (flat, with offsets) and their labels."""

    ids: np.ndarray  # (total_tokens,) int32
    offsets: np.ndarray  # (n + 1,) int64
    labels: np.ndarray | None  # (n,) int64, None when unlabelled
    full_lengths: np.ndarray | None = None  # (n,) int64: tokens before truncation (None: not known)

    def truncation_report(self) -> dict | None:
        """How many texts were cut to fit and how many tokens that dropped (None when not known)."""
        if self.full_lengths is None:
            return None
        lost = np.maximum(self.full_lengths - self.lengths, 0)
        return {"texts": len(self), "truncated": int((lost > 0).sum()), "tokens_lost": int(lost.sum()),
                "tokens_kept": int(self.lengths.sum())}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """(n,) token count per example, special tokens included: what the batch sampler sorts by."""
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.sequence(i)}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item

    @classmethod
    def from_lists(cls, sequences: list[list[int]], labels: list[int] | None) -> EncodedDataset:
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sequences], out=offsets[1:])
        ids = np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences] or [np.zeros(0, np.int32)])
        return cls(ids, offsets, None if labels is None else np.asarray(labels, dtype=np.int64))


def token_cache_key(
    fingerprint: str, tokenizer_digest: str, max_length: int, truncation: str, head_tokens: int = 128
) -> str:
    spec = {
        "version": _CACHE_VERSION,
        "data": fingerprint,
        "tokenizer": tokenizer_digest,
        "max_length": max_length,
        "truncation": truncation,
        # head_tokens only matters for head+tail; leaving it out otherwise shares entries.
        "head_tokens": head_tokens if truncation == "head+tail" else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def encode_dataset(
    tokenizer: Tokenizer,
    dataset: TextDataset,
    max_length: int,
    truncation: tokenization.Truncation = "head",
    *,
    head_tokens: int = 128,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
) -> EncodedDataset:
    """Tokenise `dataset` (see `tokenization.encode`), reusing `<cache>/tokens/<key>.npz` when present."""
    key = token_cache_key(
        dataset.fingerprint, tokenization.tokenizer_hash(tokenizer), max_length, truncation, head_tokens
    )
    path = default_cache_dir(cache_dir) / "tokens" / f"{key}.npz"
    labels = None if dataset.labels is None else np.asarray(dataset.labels, dtype=np.int64)
    if use_cache:
        cached = _load(path, len(dataset))
        if cached is not None:
            logger.info("loaded %d tokenised examples from %s", len(dataset), path)
            return EncodedDataset(*cached[:2], labels, cached[2])
    full_lengths: list[int] = []
    encoded = EncodedDataset.from_lists(
        tokenization.encode(tokenizer, dataset.texts, max_length, truncation, head_tokens=head_tokens,
                            progress=progress, full_lengths=full_lengths),
        dataset.labels,
    )
    encoded.full_lengths = np.asarray(full_lengths, dtype=np.int64)
    if use_cache:
        try:
            with atomic_open(path) as f:
                np.savez(f, ids=encoded.ids, offsets=encoded.offsets, full_lengths=encoded.full_lengths)
        except OSError as exc:
            # A read-only or full cache costs speed next time, not this run.
            logger.warning("could not write token cache %s: %s", path, exc)
    return encoded


def _load(path: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            ids, offsets, full_lengths = data["ids"], data["offsets"], data["full_lengths"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable token cache %s: %s", path, exc)
        return None
    if len(offsets) != n + 1 or offsets[-1] != len(ids) or ids.dtype != np.int32 or len(full_lengths) != n:
        logger.warning("ignoring token cache %s: it does not match the dataset", path)
        return None
    return ids, offsets, full_lengths
