"""Distillation, the workflow behind `sdbert distill`: a fine-tuned teacher -> a small block-sparse student.

The pieces it puts together (losses, student initialisation, the teacher-logit cache) live in `sdbert.training.kd`.

    from sdbert.training.distill import DistillConfig, distill
    from sdbert.training.loop import TrainingArguments

    distill(DistillConfig(teacher="runs/teacher", training=TrainingArguments(output_dir="runs/student")))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import nn

from sdbert.checkpoint import weights_fingerprint
from sdbert.classifier import Classifier
from sdbert.cli_args import arg, fraction, non_negative_float, non_negative_int, positive_float, positive_int
from sdbert.config import InferenceSettings
from sdbert.data import EncodedDataset, TextDataset, encode_dataset, tokenizer_hash
from sdbert.data.augment import AugmentSettings, augment_dataset
from sdbert.data.tokenization import mask_token
from sdbert.data.vocabulary import VocabularyCut, cut_vocabulary
from sdbert.errors import ConfigError
from sdbert.io import write_json
from sdbert.model_card import write_model_card
from sdbert.precision import PrecisionChoice, resolve_precision
from sdbert.training.kd import (
    HiddenProjections,
    TeacherLogits,
    cached_teacher_logits,
    check_hidden_layer_map,
    init_student,
    kd_loss_fn,
    online_kd_loss_fn,
    starting_checkpoint,
    student_config,
    teacher_logits_key,
)
from sdbert.training.loop import TrainingArguments, cross_entropy_loss, prepare_output_dir, setup_distributed, train
from sdbert.training.setup import DataSettings, data_record, load_unlabeled, prepare_data, with_unlabeled


@dataclass
class DistillConfig:
    """One student: its teacher, its shape and start, the loss (fields with help are the `distillation`
    flags), its data and the training loop's settings."""

    teacher: str = arg(help="fine-tuned teacher model folder", metavar="DIR")
    training: TrainingArguments = field(default_factory=lambda: TrainingArguments(output_dir="student"))
    data: DataSettings = field(default_factory=DataSettings)
    alpha: float = arg(0.5, "weight of the label loss; 1 - alpha weighs the distillation term", type=fraction)
    kind: Literal["mse", "kl"] = arg("mse", "distillation term: squared L2 of logits (the paper's) or Hinton's KL")
    temperature: float = arg(2.0, "KL temperature", type=positive_float)
    layers: int = arg(3, "student layers", type=positive_int)
    heads: int = arg(4, "student attention heads", type=positive_int)
    hidden: int | None = arg(None, "student width (default: the teacher's)", type=positive_int)
    embedding_size: int | None = arg(None, "factorised (ALBERT-style) embedding tables this wide, projected to "
                                           "the student width; with --init pretrained|teacher they start from a "
                                           "truncated SVD of the source's tables (default: the teacher's layout)",
                                     type=positive_int, metavar="E")
    vocab_size: int | None = arg(None, "cut the student's vocabulary to at most N wordpieces: the special tokens, "
                                       "the single characters of its transfer texts, then the pieces they use "
                                       "most, their embedding rows copied with --init pretrained|teacher; rarer "
                                       "words split into shorter pieces (WordPiece or SentencePiece Unigram "
                                       "tokenizers; default: the teacher's vocabulary)", type=positive_int,
                                 metavar="N")
    init: Literal["random", "pretrained", "teacher"] = arg(
        "random", "student start: random (the paper's); pretrained: embeddings, evenly spaced layers and pooler "
                  "of the checkpoint the teacher was fine-tuned from, with a new classifier (a clean KD ablation: "
                  "nothing fine-tuned reaches the student); teacher: the same layers of the fine-tuned teacher, "
                  "head included (DistilBERT-style recipe, not an ablation)")
    init_from: str | None = arg(None, "with --init pretrained: the teacher's starting checkpoint (default: the "
                                      "folder recorded in the teacher's config.json as init_checkpoint)",
                                metavar="DIR")
    layer_map: list[int] | None = arg(None, "layers copied with --init pretrained|teacher (default: evenly spaced, "
                                      "e.g. 0,4,8)", metavar="I,J,K")
    unlabeled: str | None = arg(None, "extra unlabelled transfer text: a split of --data (e.g. 'unsup' for IMDb) "
                                      "or another source; only the distillation term is used on it",
                                metavar="SRC|SPLIT")
    unlabeled_limit: int | None = arg(None, "use N unlabelled texts", type=positive_int, metavar="N")
    augment: int = arg(0, "add N augmented copies of every labelled text to the transfer set, labelled by the "
                          "teacher: 10%% of words masked, a random window of the text in a quarter of the copies "
                          "(Tang et al. 2019)", type=non_negative_int, metavar="N")
    max_length: int | None = arg(None, "tokens per text (default: the teacher's)", type=positive_int)
    dropout: float | None = arg(None, "student hidden-state dropout (default: the teacher's)", type=fraction)
    attention_dropout: float = arg(0.0, "student dropout on the attention probabilities; 0 (the default) lets "
                                        "every fused attention kernel run, 0.1 is BERT's original recipe",
                                   type=fraction)
    teacher_mode: Literal["cached", "online"] | None = arg(
        None, "cached: the teacher's logits are computed once and stored on disk (the default); online: the "
              "teacher runs on every batch (eval mode, no gradient), slower but needed for --hidden-weight, "
              "which selects it automatically; neither runs at --alpha 1 without --hidden-weight")
    hidden_weight: float = arg(0.0, "add W x the MSE between student and teacher hidden states (beyond the "
                                    "paper; 0 = off): each student layer's output against one teacher layer's "
                                    "output, over real tokens, through a learned linear map when --hidden differs "
                                    "from the teacher's width (trained and checkpointed, not saved with the model)",
                               type=non_negative_float, metavar="W")
    gradient_checkpointing: bool = arg(False, "trade compute for memory")
    hidden_layer_map: list[int] | None = arg(None, "teacher layers (from 0) whose outputs the student's layers are "
                                             "matched to, one per student layer (default: the last of each even "
                                             "run, e.g. 3,7,11 for 12 -> 3)", metavar="I,J,K")

    def __post_init__(self) -> None:
        # The flags give "0,4,8"; from here on a layer map is a list, parsed once.
        self.layer_map = layer_list("--layer-map", self.layer_map)
        self.hidden_layer_map = layer_list("--hidden-layer-map", self.hidden_layer_map)

    @property
    def teacher_use(self) -> Literal["none", "cached", "online"]:
        """How the teacher's signal reaches the student: not at all (alpha 1 without the hidden-state loss: it
        weighs 0, so the no-KD baseline pays nothing for a teacher it ignores), through logits computed once
        and cached, or with the teacher running on every batch (the hidden-state loss needs its hidden states)."""
        if self.alpha == 1.0 and self.hidden_weight == 0:
            return "none"
        return "online" if self.teacher_mode == "online" or self.hidden_weight > 0 else "cached"

    @property
    def labels_only(self) -> bool:
        return self.teacher_use == "none"

    @property
    def online(self) -> bool:
        return self.teacher_use == "online"

    def check(self) -> None:
        """Flag combinations that cannot work, before anything is loaded."""
        if self.layer_map is not None and self.init == "random":
            raise ConfigError("--layer-map only applies with --init pretrained or --init teacher")
        if self.init_from is not None and self.init != "pretrained":
            raise ConfigError("--init-from only applies with --init pretrained")
        if self.hidden_weight > 0 and self.teacher_mode == "cached":
            raise ConfigError("--hidden-weight needs the teacher's hidden states, which are not cached: "
                              "use --teacher-mode online (the default with --hidden-weight)")
        if self.hidden_layer_map is not None and self.hidden_weight == 0:
            raise ConfigError("--hidden-layer-map only applies with --hidden-weight > 0")
        if self.vocab_size is not None and self.online:
            raise ConfigError("--vocab-size tokenises the student's texts differently from the teacher's, so the "
                              "teacher cannot run on the student's batches: use cached logits (no --hidden-weight)")
        if self.labels_only and (self.unlabeled or self.augment):
            raise ConfigError("--alpha 1 trains on the labels alone: the texts of --unlabeled and --augment have "
                              "none, so they would only cost time; lower --alpha or drop them")


def layer_list(flag: str, value: str | list[int] | None) -> list[int] | None:
    """`"0,4,8"` (a flag's text) or `[0, 4, 8]` -> `[0, 4, 8]`; the range is checked against the models later."""
    if value is None or isinstance(value, list):
        return value
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated layer numbers, got {value!r}") from None


@dataclass
class Transfer:
    """What the student learns from: the encoded transfer and validation sets, and the teacher's logits on
    the transfer set when they are cached (None when the teacher runs online)."""

    train_set: EncodedDataset
    val_set: EncodedDataset
    max_length: int
    teacher: TeacherLogits | None = None
    vocabulary: VocabularyCut | None = None
    """the student's cut vocabulary (`--vocab-size`): its tokenizer encoded the two sets"""


def transfer_texts(labelled: TextDataset, settings: DataSettings, *, unlabeled: str | None = None,
                   unlabeled_limit: int | None = None, augment: AugmentSettings | None = None,
                   mask: str | None = None) -> list[TextDataset]:
    """What a student learns from, in order: the labelled texts, then unlabelled ones (a split of the data
    or another source) and augmented copies of the labelled ones (`sdbert.data.augment`); the teacher labels
    both, only the distillation term sees them."""
    parts = [labelled]
    if unlabeled:
        parts.append(load_unlabeled(unlabeled, settings, limit=unlabeled_limit))
    if augment is not None:
        parts.append(augment_dataset(labelled, augment, mask))
    return parts


def augment_settings(copies: int, seed: int) -> AugmentSettings | None:
    return AugmentSettings(copies=copies, seed=seed) if copies else None


def encode_transfer(parts: list[TextDataset], encode: Callable[[TextDataset], EncodedDataset], *,
                    labelled: EncodedDataset | None = None) -> EncodedDataset:
    """One encoded transfer set: the labelled texts first (`labelled`, when the caller has already encoded
    them with `encode`), then the others with label -100."""
    encoded = encode(parts[0]) if labelled is None else labelled
    for extra in parts[1:]:
        encoded = with_unlabeled(encoded, encode(extra))
    return encoded


def transfer_fingerprint(parts: list[TextDataset]) -> str:
    return "".join(part.fingerprint for part in parts)


def transfer_vocabulary(tokenizer, parts: list[TextDataset], size: int, pad_token_id: int) -> VocabularyCut:
    """A student's vocabulary cut to the pieces its transfer texts use most, the model's pad id kept."""
    return cut_vocabulary(tokenizer, [text for part in parts for text in part.texts], size, keep=[pad_token_id])


def teacher_logits(model, tokenizer, teacher_dir: str | Path, transfer: EncodedDataset, fingerprint: str, *,
                   max_length: int, truncation: str, precision: PrecisionChoice, batch_size: int,
                   progress: bool) -> TeacherLogits:
    """The teacher's logits on `transfer`, computed once per teacher, data, tokenizer, length and format
    and cached on disk."""
    key = teacher_logits_key(weights_fingerprint(teacher_dir), fingerprint, tokenizer_hash(tokenizer), max_length,
                             truncation, precision.precision)
    return cached_teacher_logits(model, transfer, key=key, batch_size=batch_size, progress=progress,
                                 precision=precision)


def distill(config: DistillConfig) -> dict:
    """Train a student into `config.training.output_dir`; returns (and writes) its `summary.json`."""
    run = config.training
    prepare_output_dir(run.output_dir, resume=run.resume, overwrite=run.overwrite)
    layer_map, hidden_map = config.layer_map, config.hidden_layer_map
    config.check()
    distributed = setup_distributed()
    teacher, start, hidden_map = load_teacher(config, hidden_map)
    torch.manual_seed(run.seed)
    transfer = transfer_set(config, teacher, progress=run.progress and distributed.is_main)
    student = new_student(config, teacher, start, layer_map, transfer.max_length, transfer.vocabulary)
    loss_fn, projections, note = student_loss(config, teacher.model, transfer, hidden_map)
    if not config.online:
        del teacher  # its logits are all the loss needs: free its memory for training
    if distributed.is_main:
        print(f"student: {student.model.num_parameters():,} parameters ({config.layers} layers, {config.heads} heads); "
              f"{note}; transfer set {len(transfer.train_set):,}, validation {len(transfer.val_set):,}")
    started = time.perf_counter()
    result = train(student, transfer.train_set, transfer.val_set, run.for_model(student), loss_fn=loss_fn,
                   distributed=distributed, aux_module=projections)
    summary = distill_summary(config, result, student.model, transfer, hidden_map, time.perf_counter() - started)
    summary.update(data=data_record(config.data, transfer.train_set, transfer.val_set), settings=run.record(),
                   teacher=config.teacher)
    if distributed.is_main:
        write_json(Path(run.output_dir) / "summary.json", summary)
        write_model_card(run.output_dir, summary)
        print(f"done: validation accuracy {result.best_metrics.get('accuracy', float('nan')):.4f} | "
              f"{result.final_step} steps in {result.train_seconds:.1f}s | model in {run.output_dir}")
    return summary


class Teacher(NamedTuple):
    """What distillation reads from the teacher's side, resolved before the data and the logit pass."""

    classifier: Classifier
    """the fine-tuned teacher (the student reads its tokenizer)"""
    start: nn.Module | None
    """the checkpoint it was fine-tuned from, for `--init pretrained`"""
    hidden_map: list[int] | None
    """teacher layer per student layer for the hidden-state loss, checked against both models"""


class StudentLoss(NamedTuple):
    loss_fn: Callable
    """`loss_fn(model, batch)` for the training loop"""
    projections: nn.Module | None
    """the hidden-state projections it trains alongside the student (not saved with it)"""
    note: str
    """one line that says where the teacher's signal comes from"""


def load_teacher(config: DistillConfig, hidden_map: list[int] | None) -> Teacher:
    """The teacher, its starting checkpoint and the hidden-state layer map: a missing checkpoint fails at once."""
    teacher = Classifier.from_pretrained(config.teacher, backend="torch")
    if config.hidden_weight > 0:
        hidden_map = check_hidden_layer_map(hidden_map, teacher.config.num_hidden_layers, config.layers)
    start = starting_checkpoint(teacher.model, config.init_from) if config.init == "pretrained" else None
    return Teacher(teacher, start, hidden_map)


def transfer_set(config: DistillConfig, teacher, *, progress: bool) -> Transfer:
    """Labelled (+ unlabelled) reviews encoded with the student's tokenizer (the teacher's, or its cut with
    `--vocab-size`), and the teacher's cached logits on its own encoding of them."""
    max_length, truncation = config.max_length or teacher.settings.max_length or 512, config.data.truncation
    data = prepare_data(config.data, id2label=teacher.config.id2label)
    parts = transfer_texts(data.train, config.data, unlabeled=config.unlabeled, unlabeled_limit=config.unlabeled_limit,
                           augment=augment_settings(config.augment, config.training.seed),
                           mask=mask_token(teacher.tokenizer))
    vocabulary = None if config.vocab_size is None else \
        transfer_vocabulary(teacher.tokenizer, parts, config.vocab_size, teacher.config.pad_token_id)
    def encode(tokenizer):
        return lambda texts: encode_dataset(tokenizer, texts, max_length, truncation, progress=progress)
    student_encode = encode(teacher.tokenizer if vocabulary is None else vocabulary.tokenizer)
    transfer = Transfer(encode_transfer(parts, student_encode), student_encode(data.validation), max_length,
                        vocabulary=vocabulary)
    if config.teacher_use == "cached":  # the logits are per example, in order: on the teacher's own encoding
        teacher_set = transfer.train_set if vocabulary is None else encode_transfer(parts, encode(teacher.tokenizer))
        precision = resolve_precision(config.training.precision, next(teacher.model.parameters()).device)
        transfer.teacher = teacher_logits(teacher.model, teacher.tokenizer, config.teacher, teacher_set,
                                          transfer_fingerprint(parts), max_length=max_length, truncation=truncation,
                                          precision=precision, batch_size=config.training.eval_batch_size,
                                          progress=progress)
    return transfer


def new_student(config: DistillConfig, teacher, start, layer_map: list[int] | None, max_length: int,
                vocabulary: VocabularyCut | None = None):
    """The student (a `Classifier` with the teacher's tokenizer, or its cut) before training: the teacher's
    config cut down, started per `--init`; its config records where the weights came from."""
    student_cfg = student_config(teacher.config, layers=config.layers, heads=config.heads, hidden=config.hidden,
                                 embedding_size=config.embedding_size, vocabulary=vocabulary)
    student_cfg = student_cfg.replace(gradient_checkpointing=config.gradient_checkpointing)
    student_cfg = student_cfg.replace(attention_probs_dropout_prob=config.attention_dropout)
    if config.dropout is not None:
        student_cfg = student_cfg.replace(hidden_dropout_prob=config.dropout)
    student = init_student(student_cfg, config.init, teacher=teacher.model, start=start, layer_map=layer_map,
                           vocab_ids=None if vocabulary is None else vocabulary.ids)
    if config.init == "teacher":
        student.config.init_checkpoint = str(Path(config.teacher).resolve())
    elif config.init == "pretrained":
        student.config.init_checkpoint = str(Path(config.init_from).resolve()) if config.init_from else \
            teacher.config.init_checkpoint
    tokenizer = teacher.tokenizer if vocabulary is None else vocabulary.tokenizer
    return Classifier(student, tokenizer, InferenceSettings(max_length, config.data.truncation))


def student_loss(config: DistillConfig, teacher, transfer: Transfer, hidden_map) -> StudentLoss:
    """The training loss: the labels alone, from cached logits, or with the teacher online."""
    if config.labels_only:
        return StudentLoss(cross_entropy_loss, None, "labels only (alpha 1: the teacher's logits are not computed)")
    if config.teacher_use == "cached":
        source = "from cache" if transfer.teacher.cached else f"computed in {transfer.teacher.seconds:.1f}s"
        loss = kd_loss_fn(transfer.teacher.logits, alpha=config.alpha, kind=config.kind, temperature=config.temperature)
        return StudentLoss(loss, None, f"teacher logits {source}")
    projections = None
    note = "teacher runs on every batch"
    if config.hidden_weight > 0:
        teacher_width = teacher.config.hidden_size
        projections = HiddenProjections(config.hidden or teacher_width, teacher_width, config.layers)
        note += (f", hidden-state loss x{config.hidden_weight:g} against teacher layers {hidden_map}"
                 f" ({sum(p.numel() for p in projections.parameters()):,} projection parameters)")
    loss = online_kd_loss_fn(teacher, alpha=config.alpha, kind=config.kind, temperature=config.temperature,
                             hidden_weight=config.hidden_weight, hidden_layer_map=hidden_map, projections=projections)
    return StudentLoss(loss, projections, note)


def distill_summary(config: DistillConfig, result, student, transfer: Transfer, hidden_map, wall: float) -> dict:
    summary = {"validation": result.best_metrics, "train_seconds": round(result.train_seconds, 2),
               "teacher_mode": config.teacher_use, "wall_seconds": round(wall, 2),
               "examples_per_second": round(result.examples_per_second, 2), "steps": result.final_step,
               "parameters": student.num_parameters(), "vocab_size": student.config.vocab_size,
               "alpha": config.alpha, "kind": config.kind,
               "precision": result.precision, "dropout": {"hidden": student.config.hidden_dropout_prob,
                                                          "attention": student.config.attention_probs_dropout_prob}}
    if config.online:
        summary.update(hidden_weight=config.hidden_weight, hidden_layer_map=hidden_map)
    elif config.teacher_use == "cached":
        summary.update(teacher_logits_seconds=round(transfer.teacher.seconds, 2),
                       teacher_logits_cached=transfer.teacher.cached)
    return summary
