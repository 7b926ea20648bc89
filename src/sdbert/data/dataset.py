"""The in-memory text dataset every source produces, and its fingerprint.

A fingerprint is a content hash: two sources holding the same texts and labels (the IMDb archive
and its extracted folder, say) get the same one, so the token cache keyed on it is shared, while
any edit to a text or a label gives a new key. Datasets derived by a deterministic selection
(splits, subsets) get a fingerprint derived from the parent's and the selected indices, which is
as exact and much cheaper than rehashing the text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Bump when the meaning of a fingerprint changes, so stale cache entries are never reused.
_FINGERPRINT_VERSION = b"sdbert-text-v1"


@dataclass
class TextDataset:
    """Texts with optional integer labels; `labels` is None for unlabelled data (IMDb `unsup`)."""

    texts: list[str]
    labels: list[int] | None
    # Label id -> name, dense over 0..num_labels-1 so it can go straight into the model config.
    id2label: dict[int, str]
    # Stable hex digest of the content; the token cache uses it as part of its key.
    fingerprint: str

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}

    def select(self, indices: Sequence[int] | np.ndarray, tag: str = "select") -> TextDataset:
        """The examples at `indices`, in that order, with a fingerprint derived from them."""
        idx = np.asarray(indices, dtype=np.int64)
        h = hashlib.sha256(self.fingerprint.encode())
        h.update(tag.encode())
        h.update(idx.tobytes())
        return TextDataset(
            texts=[self.texts[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            id2label=dict(self.id2label),
            fingerprint=h.hexdigest(),
        )


def content_fingerprint(texts: Iterable[str], labels: Iterable[int] | None, id2label: dict[int, str]) -> str:
    """SHA-256 over the texts, labels and label names; lengths are prefixed so joins cannot collide."""
    h = hashlib.sha256(_FINGERPRINT_VERSION)
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    if labels is None:
        h.update(b"unlabelled")
    else:
        h.update(np.asarray(list(labels), dtype=np.int64).tobytes())
    h.update(repr(sorted(id2label.items())).encode())
    return h.hexdigest()


def make_dataset(
    texts: list[str],
    labels: list[int] | None,
    id2label: dict[int, str],
) -> TextDataset:
    """A dataset with its content fingerprint computed."""
    return TextDataset(
        texts=texts,
        labels=labels,
        id2label=id2label,
        fingerprint=content_fingerprint(texts, labels, id2label),
    )
