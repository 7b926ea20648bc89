"""Length-bucketed batches, DDP sharding equal to one process, and padding to block multiples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sdbert.data import Collator, EncodedDataset, LengthBucketedBatchSampler, collate


def _lengths(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 600, size=n)


def _padded_tokens(lengths: np.ndarray, batches: list[list[int]]) -> int:
    return sum(int(lengths[b].max()) * len(b) for b in batches)


def test_every_example_once_per_epoch() -> None:
    lengths = _lengths(1003)
    sampler = LengthBucketedBatchSampler(lengths, 16, bucket_batches=10, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 63
    assert sorted(i for b in batches for i in b) == list(range(1003))
    assert sorted(len(b) for b in batches)[0] == 1003 % 16


def test_buckets_cut_padding_versus_random_batches() -> None:
    lengths = _lengths(2000)
    bucketed = list(LengthBucketedBatchSampler(lengths, 16, seed=0))
    perm = np.random.default_rng(0).permutation(2000)
    random = [perm[i : i + 16].tolist() for i in range(0, 2000, 16)]
    assert _padded_tokens(lengths, bucketed) < 0.6 * _padded_tokens(lengths, random)


def test_epochs_reshuffle_batches_deterministically() -> None:
    lengths = _lengths(500)
    a = LengthBucketedBatchSampler(lengths, 8, bucket_batches=5, seed=3)
    b = LengthBucketedBatchSampler(lengths, 8, bucket_batches=5, seed=3)
    first = list(a)
    assert first == list(b) == list(a)  # same seed and epoch: same batches
    a.set_epoch(1)
    second = list(a)
    assert second != first and sorted(map(sorted, second)) != sorted(map(sorted, first))
    b.set_epoch(1)
    assert list(b) == second
    assert list(LengthBucketedBatchSampler(lengths, 8, bucket_batches=5, seed=4)) != first


def test_no_shuffle_is_sorted_by_length() -> None:
    lengths = _lengths(100)
    batches = list(LengthBucketedBatchSampler(lengths, 7, shuffle=False))
    flat = [i for b in batches for i in b]
    assert flat == np.argsort(lengths, kind="stable").tolist()


def test_drop_last() -> None:
    sampler = LengthBucketedBatchSampler(_lengths(100), 16, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6 and all(len(b) == 16 for b in batches)


@pytest.mark.parametrize(("n", "replicas"), [(1000, 2), (1001, 3), (997, 4), (64, 2)])
def test_ranks_together_equal_one_process_with_the_global_batch(n: int, replicas: int) -> None:
    lengths = _lengths(n, seed=n)
    single = LengthBucketedBatchSampler(lengths, 8 * replicas, bucket_batches=4, seed=5)
    ranks = [
        LengthBucketedBatchSampler(lengths, 8, bucket_batches=4, seed=5, num_replicas=replicas, rank=r)
        for r in range(replicas)
    ]
    for epoch in (0, 1):
        single.set_epoch(epoch)
        for sampler in ranks:
            sampler.set_epoch(epoch)
        per_rank = [list(sampler) for sampler in ranks]
        assert len({len(batches) for batches in per_rank}) == 1  # every rank the same number of steps
        assert all(len(batches) == len(sampler) for batches, sampler in zip(per_rank, ranks, strict=True))
        joined = [sum(step, []) for step in zip(*per_rank, strict=True)]
        assert joined == list(single)[: len(joined)]
        assert all(len(b) > 0 for batches in per_rank for b in batches)


def test_tail_smaller_than_replicas_is_dropped_everywhere() -> None:
    lengths = _lengths(17)  # 2 global batches of 8, then 1 example for 2 ranks
    ranks = [LengthBucketedBatchSampler(lengths, 4, num_replicas=2, rank=r) for r in range(2)]
    assert [len(list(s)) for s in ranks] == [2, 2] and len(ranks[0]) == 2


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        LengthBucketedBatchSampler([1, 2], 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        LengthBucketedBatchSampler([1, 2], 0)


def test_collate_pads_to_the_smallest_block_multiple() -> None:
    batch = collate([[5, 6, 7], list(range(1, 71)), [9]], pad_id=0, multiple_of=64, labels=[1, 0, 1])
    assert batch["input_ids"].shape == (3, 128) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [3, 70, 1]
    assert batch["input_ids"][0, :4].tolist() == [5, 6, 7, 0]
    assert batch["labels"].tolist() == [1, 0, 1] and batch["labels"].dtype == torch.long
    assert collate([[1] * 64], pad_id=3, multiple_of=64)["input_ids"].shape == (1, 64)
    assert "labels" not in collate([[1]], pad_id=3, multiple_of=64)


def test_collate_caps_at_max_length_rounded_up() -> None:
    assert collate([[1] * 100], 0, 64, max_length=100)["input_ids"].shape == (1, 128)
    assert collate([[1] * 100], 0, 16, max_length=100)["input_ids"].shape == (1, 112)
    with pytest.raises(ValueError, match="exceeds max_length"):
        collate([[1] * 200], 0, 64, max_length=100)


def test_dataloader_with_sampler_and_collator() -> None:
    seqs = [[101] + [7] * k + [102] for k in range(40)]
    data = EncodedDataset.from_lists(seqs, [k % 2 for k in range(40)])
    sampler = LengthBucketedBatchSampler(data.lengths, 8, seed=0)
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=Collator(pad_id=0, multiple_of=16, max_length=64))
    seen = 0
    for batch in loader:
        width = batch["input_ids"].shape[1]
        assert width % 16 == 0 and width - batch["attention_mask"].sum(1).max() < 16
        assert (batch["input_ids"][:, 0] == 101).all()
        seen += len(batch["labels"])
    assert seen == 40
