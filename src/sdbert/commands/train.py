"""`sdbert train`: fine-tune a (block-sparse) classifier from a checkpoint or from scratch."""

from __future__ import annotations

import argparse
import logging
import time

from sdbert.commands.common import (
    add_data_arguments,
    add_training_arguments,
    check_output_dir,
    data_settings,
    is_main_process,
    positive_int,
    write_json,
)
from sdbert.pipeline import SIZE_PRESETS, build_model, encode, prepare_data
from sdbert.train import TrainingArguments, setup_distributed, train

logger = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--init", metavar="CKPT",
                       help="start from this model folder (sdbert, or a local HF BERT/RoBERTa/BigBird checkpoint); "
                            "without it a --size preset starts from random weights with a new tokenizer")
    group.add_argument("--size", choices=sorted(SIZE_PRESETS), default="small",
                       help="random-init size when there is no --init (default small)")
    group.add_argument("--vocab-size", type=positive_int, default=16000,
                       help="WordPiece vocabulary trained when there is no --init (default 16000)")
    group.add_argument("--attention", choices=["block_sparse", "full"], default="block_sparse",
                       help="attention of the model (default block_sparse)")
    group.add_argument("--max-length", type=positive_int, default=512, help="tokens per text (default 512)")
    group.add_argument("--block-size", type=positive_int, default=64, help="sparse attention block (default 64)")
    group.add_argument("--random-blocks", type=int, default=3, help="random blocks per query block (default 3)")
    group.add_argument("--dropout", type=float, help="override hidden and attention dropout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_training_arguments(parser)


def training_arguments(args: argparse.Namespace, model, **extra) -> TrainingArguments:
    """The loop's settings from the shared training flags; block size and padding come from the model."""
    return TrainingArguments(
        output_dir=args.output, epochs=args.epochs, batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, weight_decay=args.weight_decay,
        warmup_ratio=args.warmup, max_steps=args.max_steps, seed=args.seed, eval_every=args.eval_every,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints,
        early_stopping_patience=args.patience, eval_batch_size=args.eval_batch_size, bf16=args.bf16,
        resume=args.resume, progress=not args.no_progress, block_size=model.config.block_size,
        max_length=model.config.max_length or model.config.max_position_embeddings,
        pad_token_id=model.config.pad_token_id, extra=extra,
    )


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.output, resume=args.resume, overwrite=args.overwrite)
    if args.random_blocks < 0:
        from sdbert.errors import ConfigError

        raise ConfigError(f"--random-blocks must be >= 0, got {args.random_blocks}")
    distributed = setup_distributed()
    import torch

    torch.manual_seed(args.seed)
    data = prepare_data(data_settings(args))
    model = build_model(
        init=args.init, size=args.size, attention_type=args.attention, block_size=args.block_size,
        num_random_blocks=args.random_blocks, max_length=args.max_length, id2label=data.id2label,
        tokenizer_texts=data.train.texts, vocab_size=args.vocab_size, dropout=args.dropout,
    )
    model.config.gradient_checkpointing = args.gradient_checkpointing
    model.config.max_length, model.config.truncation = args.max_length, args.truncation
    train_set = encode(model, data.train, max_length=args.max_length, truncation=args.truncation)
    val_set = encode(model, data.validation, max_length=args.max_length, truncation=args.truncation)
    if is_main_process():
        print(f"model: {model.num_parameters():,} parameters, {model.config.attention_type} attention; "
              f"train {len(train_set):,} / validation {len(val_set):,} examples")
    started = time.perf_counter()
    result = train(model, train_set, val_set, training_arguments(args, model), distributed=distributed)
    if is_main_process():
        from pathlib import Path

        summary = {"validation": result.best_metrics, "train_seconds": round(result.train_seconds, 2),
                   "wall_seconds": round(time.perf_counter() - started, 2),
                   "examples_per_second": round(result.examples_per_second, 2), "steps": result.final_step,
                   "parameters": model.num_parameters(), "stopped_early": result.stopped_early}
        write_json(Path(args.output) / "summary.json", summary)
        accuracy, f1 = (result.best_metrics.get(k, float("nan")) for k in ("accuracy", "f1"))
        print(f"done: validation accuracy {accuracy:.4f}, F1 {f1:.4f}"
              f" | {result.final_step} steps in {result.train_seconds:.1f}s ({result.examples_per_second:.1f} "
              f"examples/s) | model in {args.output}")
    return 0
