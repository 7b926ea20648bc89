"""Length-bucketed batches and padding to block multiples, so short reviews cost little.

IMDb reviews run from a few dozen to over a thousand tokens. Random batches pad everything to the
longest member; instead the sampler shuffles the data, cuts it into large chunks ("buckets" of
`bucket_batches` global batches), sorts each chunk by length and slices it into batches, then
shuffles the order of the batches. Batches stay random from epoch to epoch, but their members
have similar lengths. `collate` then pads only to the smallest multiple of the attention block
size that fits, which is all block-sparse attention needs.

Distributed training: every rank builds the same global batches of `batch_size * num_replicas`
examples (same seed, same epoch) and takes its contiguous slice of each. So a run on R ranks
sees exactly the examples, in exactly the groups, that one process with batch size
`batch_size * R` sees, and every rank gets the same number of batches. For the gradients to
match too, reduce the loss as a sum divided by the global batch size (the last global batch may
be smaller and split unevenly).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


class LengthBucketedBatchSampler(Sampler[list[int]]):
    """Yields this rank's list of dataset indices for each batch; call `set_epoch` every epoch."""

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        bucket_batches: int = 50,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if bucket_batches <= 0:
            raise ValueError(f"bucket_batches must be positive, got {bucket_batches}")
        if num_replicas <= 0 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        # Buckets are whole numbers of global batches, so only the very last batch can be short.
        self.global_batch = batch_size * num_replicas
        self.bucket_size = bucket_batches * self.global_batch
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch`; the same (seed, epoch) gives the same batches on every rank."""
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """All global batches of this epoch, in order, before splitting across ranks."""
        n = len(self.lengths)
        if not self.shuffle:
            # Evaluation: one bucket sorted by length (stable, so ties keep dataset order) gives
            # the least padding and a fixed order.
            order = np.argsort(self.lengths, kind="stable")
            return self._keep([order[i : i + self.global_batch] for i in range(0, n, self.global_batch)])
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(n)
        batches = []
        for start in range(0, n, self.bucket_size):
            bucket = perm[start : start + self.bucket_size]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            batches += [bucket[i : i + self.global_batch] for i in range(0, len(bucket), self.global_batch)]
        batches = self._keep(batches)
        return [batches[i] for i in rng.permutation(len(batches))]

    def _keep(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        # A short last batch is kept unless drop_last, or unless it cannot give every rank an example.
        if batches and len(batches[-1]) < self.global_batch:
            if self.drop_last or len(batches[-1]) < self.num_replicas:
                batches = batches[:-1]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield np.array_split(batch, self.num_replicas)[self.rank].tolist()

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.global_batch)
        keep_rest = rest > 0 and not self.drop_last and rest >= self.num_replicas
        return full + int(keep_rest)


def collate(
    batch_ids: Sequence[Sequence[int] | np.ndarray],
    pad_id: int,
    multiple_of: int = 64,
    *,
    labels: Sequence[int] | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad to the smallest multiple of `multiple_of` that fits the longest sequence.

    Returns `input_ids` and `attention_mask` (int64, 1 = real token, as Hugging Face does), both
    `(B, L)`, and `labels` `(B,)` when given. With `max_length`, `L` never exceeds it rounded up to
    a multiple; a longer sequence is a bug upstream (it should have been truncated) and raises.
    """
    if not batch_ids:
        raise ValueError("cannot collate an empty batch")
    if multiple_of <= 0:
        raise ValueError(f"multiple_of must be positive, got {multiple_of}")
    sizes = [len(s) for s in batch_ids]
    width = max(1, math.ceil(max(sizes) / multiple_of)) * multiple_of
    if max_length is not None:
        cap = math.ceil(max_length / multiple_of) * multiple_of
        if max(sizes) > cap:
            raise ValueError(f"a sequence of {max(sizes)} tokens exceeds max_length {max_length}")
        width = min(width, cap)
    input_ids = np.full((len(batch_ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(batch_ids), width), dtype=np.int64)
    for row, (seq, size) in enumerate(zip(batch_ids, sizes, strict=True)):
        input_ids[row, :size] = seq
        attention_mask[row, :size] = 1
    out = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
    if labels is not None:
        out["labels"] = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return out


@dataclass
class Collator:
    """`collate` as a DataLoader `collate_fn` over `EncodedDataset` items."""

    pad_id: int
    multiple_of: int = 64
    max_length: int | None = None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [item["labels"] for item in items] if "labels" in items[0] else None
        return collate(
            [item["input_ids"] for item in items],
            self.pad_id,
            self.multiple_of,
            labels=labels,
            max_length=self.max_length,
        )
