"""Validation split and size limits: exact sizes, class balance, seeding, derived fingerprints."""

from __future__ import annotations

from collections import Counter

import pytest

from sdbert.data import TextDataset, stratified_subset, train_validation_split
from sdbert.data.dataset import make_dataset
from sdbert.data.splits import validation_size
from sdbert.errors import DataError


def _dataset(counts: dict[int, int]) -> TextDataset:
    labels = [label for label, count in counts.items() for _ in range(count)]
    texts = [f"text {i} of class {label}" for i, label in enumerate(labels)]
    return make_dataset(texts, labels, {label: f"c{label}" for label in counts})


def test_validation_size_rule() -> None:
    assert validation_size(1000) == 100
    assert validation_size(25000) == 2000  # capped when train is large
    assert validation_size(25000, max_size=None) == 2500
    assert validation_size(15) == 2  # rounded up
    assert validation_size(2, fraction=0.9) == 1  # always leaves one for training
    with pytest.raises(DataError, match="fraction"):
        validation_size(10, fraction=1.5)


def test_split_is_a_stratified_partition() -> None:
    ds = _dataset({0: 600, 1: 300, 2: 100})
    train, val = train_validation_split(ds, seed=3)
    assert len(val) == 100 and len(train) == 900
    assert Counter(val.labels) == {0: 60, 1: 30, 2: 10}
    assert sorted(train.texts + val.texts) == sorted(ds.texts)
    assert train.id2label == val.id2label == ds.id2label


def test_split_is_seeded_and_fingerprinted() -> None:
    ds = _dataset({0: 50, 1: 50})
    a_train, a_val = train_validation_split(ds, seed=1)
    b_train, b_val = train_validation_split(ds, seed=1)
    _, c_val = train_validation_split(ds, seed=2)
    assert a_val.texts == b_val.texts and a_val.fingerprint == b_val.fingerprint
    assert a_val.texts != c_val.texts and a_val.fingerprint != c_val.fingerprint
    assert len({ds.fingerprint, a_train.fingerprint, a_val.fingerprint}) == 3


def test_split_rounds_classes_by_largest_remainder() -> None:
    ds = _dataset({0: 7, 1: 7, 2: 6})  # 10% of 20 = 2 -> shares 0.7, 0.7, 0.6
    _, val = train_validation_split(ds, seed=0)
    assert len(val) == 2 and Counter(val.labels) == {0: 1, 1: 1}


def test_split_of_unlabelled_data_and_too_small() -> None:
    ds = make_dataset([f"t{i}" for i in range(30)], None, {})
    train, val = train_validation_split(ds, fraction=0.2)
    assert len(val) == 6 and val.labels is None and len(train) == 24
    with pytest.raises(DataError, match="from 1 example"):
        train_validation_split(make_dataset(["only"], [0], {0: "a"}))


def test_stratified_subset() -> None:
    ds = _dataset({0: 500, 1: 500})
    sub = stratified_subset(ds, 100, seed=7)
    assert len(sub) == 100 and Counter(sub.labels) == {0: 50, 1: 50}
    assert sub.texts == stratified_subset(ds, 100, seed=7).texts
    assert sub.texts != stratified_subset(ds, 100, seed=8).texts
    assert sub.fingerprint != ds.fingerprint
    assert stratified_subset(ds, 5000) is ds
    with pytest.raises(DataError, match="positive size"):
        stratified_subset(ds, 0)
