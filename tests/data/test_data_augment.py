"""Augmented transfer-set copies (Tang et al. 2019): deterministic, unlabelled, fingerprinted, and doing
what their settings say."""

import random

import pytest

from sdbert.data.augment import AugmentSettings, augment_dataset, augment_text
from sdbert.data.dataset import make_dataset
from sdbert.errors import ConfigError

TEXTS = ["one two three four five six seven eight nine ten", "a short review", "great"]


def dataset():
    return make_dataset(list(TEXTS), [1, 0, 1], {0: "neg", 1: "pos"})


def test_copies_are_unlabelled_deterministic_and_fingerprinted():
    settings = AugmentSettings(copies=3, seed=7)
    first, again = augment_dataset(dataset(), settings, "[MASK]"), augment_dataset(dataset(), settings, "[MASK]")
    assert len(first) == 9 and first.labels is None and first.texts == again.texts
    assert first.fingerprint == again.fingerprint != dataset().fingerprint
    other = augment_dataset(dataset(), AugmentSettings(copies=3, seed=8), "[MASK]")
    assert other.fingerprint != first.fingerprint and other.texts != first.texts
    assert augment_dataset(dataset(), settings, "<mask>").fingerprint != first.fingerprint


def test_settings_do_what_they_say():
    rng = random.Random(0)
    plain = AugmentSettings(mask_probability=0.0, window_probability=0.0)
    assert [augment_text(t, rng, plain, "[MASK]") for t in TEXTS] == TEXTS
    masked = AugmentSettings(mask_probability=1.0, window_probability=0.0)
    assert augment_text(TEXTS[0], rng, masked, "[MASK]") == " ".join(["[MASK]"] * 10)
    assert augment_text(TEXTS[0], rng, masked, None) == "one"  # no mask token: words dropped, never empty
    assert augment_text("  ", rng, masked, None) == augment_text("", rng, masked, "[MASK]") == ""  # nothing to copy
    windows = AugmentSettings(mask_probability=0.0, window_probability=1.0, min_window=0.5)
    words = TEXTS[0].split()
    for _ in range(20):
        kept = augment_text(TEXTS[0], rng, windows, "[MASK]").split()
        start = words.index(kept[0])
        assert len(kept) >= 5 and kept == words[start:start + len(kept)]  # a contiguous window, half at least


@pytest.mark.parametrize("bad", [dict(copies=0), dict(mask_probability=1.5), dict(min_window=-0.1)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        AugmentSettings(**bad)
