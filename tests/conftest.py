"""Fixtures shared by the test files: the real IMDb archive (or a skip that says how to get it), a tiny
model config and model, and a tiny WordPiece tokenizer. Each test builds anything bigger in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sdbert import SDBertConfig, SDBertForSequenceClassification

SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "aclImdb_v1.tar.gz"
TEXTS = ["a wonderful film with great acting and a clever script", "a terrible boring movie, the worst plot",
         "the start was slow but the ending is beautiful", "never watch this again, predictable and long"] * 8


def imdb_archive_path() -> Path | None:
    """`$SDBERT_DATA` when it names a file, else the shared copy beside the repository, else None."""
    env = os.environ.get("SDBERT_DATA")
    for candidate in (Path(env) if env else None, SHARED_ARCHIVE):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


IMDB_MISSING = f"IMDb archive not found: set SDBERT_DATA or place it at {SHARED_ARCHIVE}"


@pytest.fixture(scope="session")
def imdb_archive() -> Path:
    path = imdb_archive_path()
    if path is None:
        pytest.skip(IMDB_MISSING)
    return path


def make_tiny_config(**overrides) -> SDBertConfig:
    """Two layers, four heads, 32 wide, blocks of 8: small enough for any test, block-sparse past 80 tokens."""
    base = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=256, block_size=8, num_random_blocks=1,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return SDBertConfig(**{**base, **overrides})


@pytest.fixture
def tiny_config():
    """A factory: `tiny_config(**overrides)`."""
    return make_tiny_config


@pytest.fixture
def tiny_model():
    """A factory: `tiny_model(seed=0, **config_overrides)`, in eval mode."""

    def build(seed: int = 0, **overrides) -> SDBertForSequenceClassification:
        torch.manual_seed(seed)
        return SDBertForSequenceClassification(make_tiny_config(**overrides)).eval()

    return build


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from sdbert.data.wordpiece import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(TEXTS, vocab_size=150, min_frequency=1)



@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory) -> Path:
    """One tiny from-scratch teacher shared by every test that distils (read it, never write into it):
    `ROOT/teacher` trained by the real command on `ROOT/reviews.csv` (160 marker reviews) with the recipe
    of the pinned logits (test_pinned.py)."""
    from helpers import CLI_TRAIN, PINNED_RECIPE, sdbert, write_review_csv

    root = tmp_path_factory.mktemp("trained_teacher")
    data = write_review_csv(root / "reviews.csv", 160)
    run = sdbert("train", "--data", data, "--output", root / "teacher", *CLI_TRAIN, *PINNED_RECIPE,
                 env_extra={"SDBERT_CACHE": str(root / "cache")})
    assert run.returncode == 0, run.stderr
    return root
