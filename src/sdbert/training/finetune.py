"""Fine-tuning, the workflow behind `sdbert train`: data -> model -> the training loop -> a model folder.

    from sdbert.training.finetune import FinetuneConfig, finetune
    from sdbert.training.loop import TrainingArguments

    finetune(FinetuneConfig(training=TrainingArguments(output_dir="runs/teacher"), init="path/to/bert"))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from sdbert.cli_args import arg, fraction, non_negative_int, positive_int
from sdbert.io import write_json
from sdbert.model_card import write_model_card
from sdbert.training.loop import TrainingArguments, TrainResult, prepare_output_dir, setup_distributed, train
from sdbert.training.setup import DataSettings, PreparedData, build_model, class_counts, data_record, prepare_data


@dataclass
class FinetuneConfig:
    """One fine-tuning run: the model to start from (fields with help are the `model` flags), its data and
    the training loop's settings."""

    training: TrainingArguments
    data: DataSettings = field(default_factory=DataSettings)
    init: str | None = arg(None, "start from this model folder (sdbert, or a local HF BERT/RoBERTa/BigBird "
                                 "checkpoint); without it a --size preset starts from random weights with a new "
                                 "tokenizer", metavar="CKPT")
    size: Literal["base", "small", "tiny"] = arg("small", "random-init size when there is no --init")
    vocab_size: int = arg(16000, "WordPiece vocabulary trained when there is no --init", type=positive_int)
    attention: Literal["block_sparse", "full"] = arg("block_sparse", "attention of the model")
    max_length: int = arg(512, "tokens per text", type=positive_int)
    block_size: int = arg(64, "sparse attention block", type=positive_int)
    random_blocks: int = arg(3, "random blocks per query block", type=non_negative_int)
    dropout: float | None = arg(None, "hidden-state dropout (default: the checkpoint's, BERT's 0.1)", type=fraction)
    attention_dropout: float = arg(0.0, "dropout on the attention probabilities; 0 (the default, as in ModernBERT) "
                                        "lets every fused attention kernel run, 0.1 is BERT's original recipe and "
                                        "takes the slower unfused paths", type=fraction)
    gradient_checkpointing: bool = arg(False, "trade compute for memory")


def finetune(config: FinetuneConfig) -> dict:
    """Train a classifier into `config.training.output_dir`; returns (and writes) its `summary.json`."""
    run = config.training
    prepare_output_dir(run.output_dir, resume=run.resume, overwrite=run.overwrite)
    distributed = setup_distributed()
    torch.manual_seed(run.seed)
    data = prepare_data(config.data)
    if distributed.is_main:
        counts = class_counts(data.train)
        print(f"classes ({len(counts)}): " + ", ".join(f"{name} {n:,}" for name, n in counts.items()))
    classifier = start_model(config, data)
    model = classifier.model
    train_set, val_set = (classifier.encode_dataset(split) for split in (data.train, data.validation))
    truncated = {"train": train_set.truncation_report(), "validation": val_set.truncation_report()}
    if distributed.is_main:
        print(f"model: {model.num_parameters():,} parameters, {model.config.attention_type} attention; "
              f"train {len(train_set):,} / validation {len(val_set):,} examples")
        print(truncation_line(truncated["train"], classifier.max_length(), "training"))
    started = time.perf_counter()
    result = train(classifier, train_set, val_set, run.for_model(classifier), distributed=distributed)
    summary = run_summary(result, model, wall_seconds=time.perf_counter() - started)
    summary.update(data=data_record(config.data, train_set, val_set), settings=run.record(),
                   truncation=truncated)
    if distributed.is_main:
        write_json(Path(run.output_dir) / "summary.json", summary)
        write_model_card(run.output_dir, summary)
        print_done(result, run.output_dir)
    return summary


def start_model(config: FinetuneConfig, data: PreparedData):
    """The `Classifier` before training: from `init` or a size preset, with this run's length and truncation."""
    return build_model(
        init=config.init, size=config.size, attention_type=config.attention, block_size=config.block_size,
        num_random_blocks=config.random_blocks, max_length=config.max_length, truncation=config.data.truncation,
        id2label=data.id2label, tokenizer_texts=data.train.texts, vocab_size=config.vocab_size,
        dropout=config.dropout, attention_dropout=config.attention_dropout,
        gradient_checkpointing=config.gradient_checkpointing,
    )


def truncation_line(report: dict | None, max_length: int, what: str) -> str:
    """What fitting the texts to `max_length` tokens cut, in one line."""
    if not report:
        return f"{what} texts: cut to {max_length} tokens where longer"
    share = report["truncated"] / max(report["texts"], 1)
    return (f"{what} texts cut to {max_length} tokens: {report['truncated']:,} of {report['texts']:,} ({share:.1%}), "
            f"{report['tokens_lost']:,} tokens dropped ({report['tokens_kept']:,} kept)")


def run_summary(result: TrainResult, model, *, wall_seconds: float) -> dict:
    return {"validation": result.best_metrics, "train_seconds": round(result.train_seconds, 2),
            "wall_seconds": round(wall_seconds, 2), "examples_per_second": round(result.examples_per_second, 2),
            "steps": result.final_step, "parameters": model.num_parameters(), "stopped_early": result.stopped_early,
            "precision": result.precision, "dropout": {"hidden": model.config.hidden_dropout_prob,
                                                       "attention": model.config.attention_probs_dropout_prob}}


def print_done(result: TrainResult, output_dir: str) -> None:
    accuracy, f1 = (result.best_metrics.get(k, float("nan")) for k in ("accuracy", "f1"))
    print(f"done: validation accuracy {accuracy:.4f}, F1 {f1:.4f} | {result.final_step} steps in "
          f"{result.train_seconds:.1f}s ({result.examples_per_second:.1f} examples/s) | model in {output_dir}")
