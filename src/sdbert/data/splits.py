"""Seeded, stratified selections: the validation split carved from train, and size limits.

Stratifying keeps the class balance of the parent in every selection, so a 1,000-review
`--train-limit` of IMDb is still 50/50 and validation accuracy is comparable across runs. Each
class gets its proportional share rounded by largest remainder, so the sizes are exact. The test
split is never touched here: model selection uses validation only.
"""

from __future__ import annotations

import math

import numpy as np

from sdbert.data.dataset import TextDataset
from sdbert.errors import DataError


def _stratified_pick(labels: list[int] | None, n_total: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """`k` indices out of `n_total`, proportional per class (plain random without labels), sorted."""
    if labels is None:
        return np.sort(rng.choice(n_total, size=k, replace=False))
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    quotas = counts * k / n_total
    take = np.floor(quotas).astype(np.int64)
    # Largest remainder; ties go to the smaller class id, which keeps the result deterministic.
    order = np.lexsort((classes, -(quotas - take)))
    take[order[: k - int(take.sum())]] += 1
    picked = [
        rng.choice(np.flatnonzero(y == c), size=int(t), replace=False) for c, t in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def stratified_subset(dataset: TextDataset, n: int, *, seed: int = 0) -> TextDataset:
    """`n` examples with the class balance of `dataset` (all of it when `n >= len(dataset)`)."""
    if n <= 0:
        raise DataError(f"a subset needs a positive size, got {n}")
    if n >= len(dataset):
        return dataset
    idx = _stratified_pick(dataset.labels, len(dataset), n, np.random.default_rng(seed))
    return dataset.select(idx, tag=f"subset:{n}:{seed}")


def validation_size(n: int, fraction: float = 0.1, max_size: int | None = 2000) -> int:
    """`fraction` of `n` rounded up, capped at `max_size`, and leaving at least one for training."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    size = math.ceil(n * fraction)
    if max_size is not None:
        size = min(size, max_size)
    return max(1, min(size, n - 1))


def train_validation_split(
    dataset: TextDataset,
    *,
    fraction: float = 0.1,
    max_size: int | None = 2000,
    seed: int = 0,
) -> tuple[TextDataset, TextDataset]:
    """(train, validation): 10% of train by default, at most 2,000 examples, stratified and seeded."""
    n = len(dataset)
    if n < 2:
        raise DataError(f"cannot carve a validation split from {n} example(s)")
    k = validation_size(n, fraction, max_size)
    val_idx = _stratified_pick(dataset.labels, n, k, np.random.default_rng(seed))
    train_mask = np.ones(n, dtype=bool)
    train_mask[val_idx] = False
    tag = f"{fraction}:{max_size}:{seed}"
    return (
        dataset.select(np.flatnonzero(train_mask), tag=f"train-part:{tag}"),
        dataset.select(val_idx, tag=f"validation-part:{tag}"),
    )
