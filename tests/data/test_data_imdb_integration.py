"""The real IMDb archive, when it is available (`$SDBERT_DATA` or ../shared/data/aclImdb_v1.tar.gz).

The archive is read once for the whole module (one streaming pass for all three splits).
"""

from __future__ import annotations

from collections import Counter

import pytest

from sdbert.data import TextDataset, load_splits, resolve_source, train_validation_split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imdb(imdb_archive) -> dict[str, TextDataset]:
    archive = imdb_archive
    assert resolve_source(archive).kind == "imdb_archive"
    return load_splits(archive, ["train", "test", "unsup"], progress=False)


def test_split_sizes_and_balance(imdb: dict[str, TextDataset]) -> None:
    assert {split: len(ds) for split, ds in imdb.items()} == {"train": 25000, "test": 25000, "unsup": 50000}
    for split in ("train", "test"):
        assert Counter(imdb[split].labels) == {0: 12500, 1: 12500}
        assert imdb[split].id2label == {0: "neg", 1: "pos"}
    assert imdb["unsup"].labels is None
    assert len({ds.fingerprint for ds in imdb.values()}) == 3


def test_order_is_by_member_name(imdb: dict[str, TextDataset]) -> None:
    train = imdb["train"]
    # aclImdb/train/neg/0_3.txt sorts first, so the first half is negative and the second positive.
    assert train.labels[:12500] == [0] * 12500 and train.labels[12500:] == [1] * 12500
    assert all(t.strip() for t in train.texts[:100])


def test_validation_split_of_real_train(imdb: dict[str, TextDataset]) -> None:
    train, val = train_validation_split(imdb["train"], seed=0)
    assert (len(train), len(val)) == (23000, 2000)
    assert Counter(val.labels) == {0: 1000, 1: 1000}
