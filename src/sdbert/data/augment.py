"""Cheap text augmentation for a distillation transfer set (Tang et al. 2019, "Distilling task-specific
knowledge from BERT into simple neural networks").

Each copy of a text masks words at random and, with some probability, keeps only a random window of
its words: Tang et al.'s masking and n-gram sampling, the window sized for documents rather than
sentences (their part-of-speech-guided replacement needs a tagger and is left out). The copies are
unlabelled: the teacher labels them, so no edit has to preserve the label.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from sdbert.data.dataset import TextDataset
from sdbert.errors import ConfigError


@dataclass(frozen=True)
class AugmentSettings:
    copies: int = 1
    """augmented copies of every text"""
    mask_probability: float = 0.1
    """each word becomes the mask token (or is dropped, for a tokenizer without one) with this probability"""
    window_probability: float = 0.25
    """a copy keeps only a random window of its text's words with this probability"""
    min_window: float = 0.5
    """the smallest share of the words a window keeps"""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ConfigError(f"augmented copies must be >= 1, got {self.copies}")
        for name in ("mask_probability", "window_probability", "min_window"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def augment_text(text: str, rng: random.Random, settings: AugmentSettings, mask_token: str | None) -> str:
    """One augmented copy of `text`: a random window of its words (sometimes), then random masking."""
    words = text.split()
    if len(words) > 1 and rng.random() < settings.window_probability:
        keep = max(1, round(len(words) * rng.uniform(settings.min_window, 1.0)))
        start = rng.randrange(len(words) - keep + 1)
        words = words[start:start + keep]
    out = [mask_token if rng.random() < settings.mask_probability else word for word in words]
    # Without a mask token masked words are dropped; a copy keeps its first word rather than none.
    return " ".join([word for word in out if word is not None] or words[:1])


def augment_dataset(dataset: TextDataset, settings: AugmentSettings, mask_token: str | None) -> TextDataset:
    """`settings.copies` augmented copies of every text, unlabelled, copy by copy; the fingerprint derives
    from the parent's and the settings, so a cache keyed on it changes with either."""
    rng = random.Random(settings.seed)
    texts = [augment_text(text, rng, settings, mask_token) for _ in range(settings.copies) for text in dataset.texts]
    digest = hashlib.sha256(dataset.fingerprint.encode())
    digest.update(repr((settings, mask_token)).encode())
    return TextDataset(texts=texts, labels=None, id2label=dict(dataset.id2label), fingerprint=digest.hexdigest())
