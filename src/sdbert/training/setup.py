"""The glue between data, model and training that every command shares.

`prepare_data` loads a source once (train + test for the IMDb archive is a single pass), carves
the validation split from train and applies the seeded stratified limits; `build_model` starts a
model from a checkpoint or from a size preset with a freshly trained tokenizer; `encode` tokenises
through the on-disk cache.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sdbert.checkpoint import load_config
from sdbert.classifier import Classifier
from sdbert.cli_args import arg, fraction, positive_int
from sdbert.config import InferenceSettings, SDBertConfig
from sdbert.data import (
    EncodedDataset,
    TextDataset,
    load_split,
    load_splits,
    load_tokenizer,
    pad_token_id,
    stratified_subset,
    train_validation_split,
    train_wordpiece_tokenizer,
)
from sdbert.data.sources import DATA_ENV
from sdbert.errors import ConfigError
from sdbert.model import SDBertForSequenceClassification
from sdbert.training.kd import IGNORE_LABEL

logger = logging.getLogger(__name__)

# Random-initialisation sizes for `--size` when there is no `--init` checkpoint.
SIZE_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


@dataclass
class DataSettings:
    """Where the examples come from and how many of them. Fields with help are the commands' data flags."""

    source: str | None = arg(None, "IMDb aclImdb_v1.tar.gz, an aclImdb/ folder, a CSV/JSONL/Parquet file (or a "
                                   "folder of train.csv/test.csv), or 'imdb' to download once (default: "
                                   "$SDBERT_DATA)", flag="--data", metavar="SRC")
    text_column: str = arg("text", "column holding the text")
    label_column: str = arg("label", "column holding the label")
    encoding_errors: Literal["strict", "replace"] = arg(
        "strict", "non-UTF-8 text: fail naming the rows (strict) or decode with U+FFFD (replace)")
    truncation: Literal["head", "tail", "head+tail"] = arg(
        "head+tail", "which tokens of a long text to keep (head+tail: first 128 and the rest from the end, "
                     "best on IMDb per Sun et al. 2019)")
    train_limit: int | None = arg(None, "train on a seeded stratified subset of N examples", type=positive_int,
                                  metavar="N")
    eval_limit: int | None = arg(None, "validate on a seeded stratified subset of N examples", type=positive_int,
                                 metavar="N")
    val_fraction: float = arg(0.1, "share of train held out for validation (at most --val-max)", type=fraction)
    val_max: int | None = arg(2000, "largest validation split", type=positive_int)
    min_class_count: int = arg(5, "refuse to train when a class has fewer examples than this (one mistyped label "
                                  "would otherwise become a class of its own)", type=positive_int, metavar="N")
    seed: int = 42
    progress: bool | None = None


TRAINING_DATA_FIELDS = ("train_limit", "eval_limit", "val_fraction", "val_max", "min_class_count")
"""Data flags that only commands which train have."""


def data_record(settings: DataSettings, train_set, val_set) -> dict:
    """What a run trained on, for its summary and model card (the source as resolved: --data or $SDBERT_DATA)."""
    return {"source": settings.source or os.environ.get(DATA_ENV), "train_examples": len(train_set),
            "validation_examples": len(val_set)}


@dataclass
class PreparedData:
    train: TextDataset | None
    validation: TextDataset | None
    test: TextDataset | None
    train_pool: TextDataset | None = None
    """All of train minus validation, before `train_limit` (for baselines that use every label)."""

    @property
    def id2label(self) -> dict[int, str]:
        for split in (self.train, self.validation, self.test):
            if split is not None:
                return split.id2label
        return {}


def prepare_data(settings: DataSettings, *, train: bool = True, test: bool = False,
                 id2label: dict[int, str] | None = None) -> PreparedData:
    """Train/validation (carved from train, seeded and stratified) and/or test, with limits applied."""
    for name, limit in (("train limit", settings.train_limit), ("eval limit", settings.eval_limit)):
        if limit is not None and limit < 1:
            raise ConfigError(f"{name} must be >= 1, got {limit}")
    splits = (["train"] if train else []) + (["test"] if test else [])
    loaded = load_splits(settings.source, splits, text_column=settings.text_column,
                         label_column=settings.label_column, id2label=id2label,
                         errors=settings.encoding_errors, progress=settings.progress)
    train_set = val_set = test_set = train_pool = None
    if train:
        check_class_counts(loaded["train"], settings.min_class_count)
        train_set, val_set = train_validation_split(loaded["train"], fraction=settings.val_fraction,
                                                    max_size=settings.val_max, seed=settings.seed)
        train_pool = train_set
        if settings.train_limit is not None and settings.train_limit < len(train_set):
            train_set = stratified_subset(train_set, settings.train_limit, seed=settings.seed)
        if settings.eval_limit is not None and settings.eval_limit < len(val_set):
            val_set = stratified_subset(val_set, settings.eval_limit, seed=settings.seed)
    if test:
        test_set = loaded["test"]
        if settings.eval_limit is not None and settings.eval_limit < len(test_set):
            test_set = stratified_subset(test_set, settings.eval_limit, seed=settings.seed)
    return PreparedData(train_set, val_set, test_set, train_pool)


def class_counts(dataset: TextDataset) -> dict[str, int]:
    """Examples per class name, in label-id order."""
    counts = Counter(dataset.labels)
    return {name: counts.get(i, 0) for i, name in sorted(dataset.id2label.items())}


def check_class_counts(dataset: TextDataset, least: int) -> None:
    if dataset.labels is None:
        return
    rare = {name: n for name, n in class_counts(dataset).items() if n < least}
    if rare:
        shown = ", ".join(f"{name!r} ({n})" for name, n in list(rare.items())[:5])
        raise ConfigError(f"the training data has classes with fewer than {least} examples: {shown}; fix the labels "
                          "or lower --min-class-count")


def build_model(
    *,
    init: str | None,
    size: str = "small",
    attention_type: str = "block_sparse",
    block_size: int = 64,
    num_random_blocks: int = 3,
    max_length: int = 512,
    truncation: str = "head+tail",
    id2label: dict[int, str],
    tokenizer_texts: list[str] | None = None,
    vocab_size: int = 16000,
    dropout: float | None = None,
    attention_dropout: float | None = None,
    gradient_checkpointing: bool = False,
) -> Classifier:
    """A classifier to train, from `init` (ours or a HF BERT/RoBERTa/BigBird folder) or from a size preset,
    with the tokenizer it reads and `max_length` / `truncation` as its inference settings."""
    if attention_type == "block_sparse" and max_length % block_size:
        raise ConfigError(f"--max-length {max_length} is not a multiple of --block-size {block_size}")
    overrides = dict(attention_type=attention_type, block_size=block_size, num_random_blocks=num_random_blocks,
                     id2label=id2label, gradient_checkpointing=gradient_checkpointing)
    settings = InferenceSettings(max_length=max_length, truncation=truncation)
    if dropout is not None:
        overrides.update(hidden_dropout_prob=dropout)
    if attention_dropout is not None:
        overrides.update(attention_probs_dropout_prob=attention_dropout)
    if init is not None:
        tokenizer = load_tokenizer(init)
        positions = max(load_config(init).max_position_embeddings, max_length)
        model = SDBertForSequenceClassification.from_pretrained(init, max_position_embeddings=positions, **overrides)
        model.config.init_checkpoint = str(Path(init).resolve())
        return Classifier(model, tokenizer, settings)
    if size not in SIZE_PRESETS:
        raise ConfigError(f"unknown size {size!r}; choose one of {', '.join(SIZE_PRESETS)}")
    if not tokenizer_texts:
        raise ConfigError("training from scratch needs texts to train a tokenizer on")
    logger.info("training a WordPiece tokenizer (vocabulary %d) on %d texts", vocab_size, len(tokenizer_texts))
    tokenizer = train_wordpiece_tokenizer(tokenizer_texts, vocab_size)
    config = SDBertConfig(vocab_size=tokenizer.get_vocab_size(), max_position_embeddings=max_length,
                          pad_token_id=pad_token_id(tokenizer), num_labels=len(id2label), **SIZE_PRESETS[size],
                          **overrides)
    return Classifier(SDBertForSequenceClassification(config), tokenizer, settings)


def load_unlabeled(spec: str, settings: DataSettings, *, limit: int | None = None) -> TextDataset:
    """Unlabelled transfer text: a split name of the main source (IMDb's `unsup`) or another source."""
    if Path(spec).exists() or spec == "imdb":
        dataset = load_split(spec, "train", text_column=settings.text_column, label_column=None,
                             errors=settings.encoding_errors, progress=settings.progress)
    else:
        dataset = load_split(settings.source, spec, text_column=settings.text_column, label_column=None,
                             errors=settings.encoding_errors, progress=settings.progress)
    if limit is not None and limit < len(dataset):
        dataset = stratified_subset(dataset, limit, seed=settings.seed)
    return dataset


def with_unlabeled(labelled: EncodedDataset, unlabelled: EncodedDataset) -> EncodedDataset:
    """One transfer set: labelled examples first, then unlabelled ones with label -100."""

    ids = np.concatenate([labelled.ids, unlabelled.ids])
    offsets = np.concatenate([labelled.offsets, unlabelled.offsets[1:] + labelled.offsets[-1]])
    labels = np.concatenate([labelled.labels, np.full(len(unlabelled), IGNORE_LABEL, dtype=np.int64)])
    full = None
    if labelled.full_lengths is not None and unlabelled.full_lengths is not None:
        full = np.concatenate([labelled.full_lengths, unlabelled.full_lengths])
    return EncodedDataset(ids, offsets, labels, full)
