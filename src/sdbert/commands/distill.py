"""`sdbert distill`: a small block-sparse student trained from a teacher's cached logits (or, with
`--teacher-mode online`, from the teacher run on every batch, which the hidden-state loss needs)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sdbert.commands.common import (
    add_data_arguments,
    add_training_arguments,
    check_output_dir,
    data_settings,
    fraction,
    is_main_process,
    positive_float,
    positive_int,
    ranged,
    write_json,
)
from sdbert.errors import ConfigError

logger = logging.getLogger(__name__)

non_negative_float = ranged(float, 0.0, what="a number >= 0")


def layer_list(flag: str, text: str | None) -> list[int] | None:
    """`"0,4,8"` -> `[0, 4, 8]`; the range is checked against the models later."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated layer numbers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Beyond the paper, a hidden-state loss: e.g. --hidden-weight 1 --hidden 256 matches each "
                     "student layer's output to a teacher layer's through a learned projection; the teacher then "
                     "runs online, on every batch, instead of from cached logits. The output folder holds the "
                     "student alone, like any model folder.")
    group = parser.add_argument_group("distillation")
    group.add_argument("--teacher", required=True, metavar="DIR", help="fine-tuned teacher model folder")
    group.add_argument("--alpha", type=fraction, default=0.5,
                       help="weight of the label loss; 1 - alpha weighs the distillation term (default 0.5)")
    group.add_argument("--kind", choices=["mse", "kl"], default="mse",
                       help="distillation term: squared L2 of logits (the paper's, default) or Hinton's KL")
    group.add_argument("--temperature", type=positive_float, default=2.0, help="KL temperature (default 2)")
    group.add_argument("--layers", type=positive_int, default=3, help="student layers (default 3)")
    group.add_argument("--heads", type=positive_int, default=4, help="student attention heads (default 4)")
    group.add_argument("--hidden", type=positive_int, help="student width (default: the teacher's)")
    group.add_argument("--init", choices=["random", "pretrained", "teacher"], default="random",
                       help="student start: random (the paper's); pretrained: embeddings, evenly spaced layers and "
                            "pooler of the checkpoint the teacher was fine-tuned from, with a new classifier (a "
                            "clean KD ablation: nothing fine-tuned reaches the student); teacher: the same layers "
                            "of the fine-tuned teacher, head included (DistilBERT-style recipe, not an ablation)")
    group.add_argument("--init-from", metavar="DIR",
                       help="with --init pretrained: the teacher's starting checkpoint (default: the folder recorded "
                            "in the teacher's config.json as init_checkpoint)")
    group.add_argument("--layer-map", metavar="I,J,K",
                       help="layers copied with --init pretrained|teacher (default: evenly spaced, e.g. 0,4,8)")
    group.add_argument("--unlabeled", metavar="SRC|SPLIT",
                       help="extra unlabelled transfer text: a split of --data (e.g. 'unsup' for IMDb) or "
                            "another source; only the distillation term is used on it")
    group.add_argument("--unlabeled-limit", type=positive_int, metavar="N", help="use N unlabelled texts")
    group.add_argument("--max-length", type=positive_int, help="tokens per text (default: the teacher's)")
    group.add_argument("--dropout", type=fraction, help="student hidden and attention dropout (default: the teacher's)")
    group.add_argument("--teacher-mode", choices=["cached", "online"],
                       help="cached: the teacher's logits are computed once and stored on disk (the default); "
                            "online: the teacher runs on every batch (eval mode, no gradient), slower but needed "
                            "for --hidden-weight, which selects it automatically")
    group.add_argument("--hidden-weight", type=non_negative_float, default=0.0, metavar="W",
                       help="add W x the MSE between student and teacher hidden states (beyond the paper; "
                            "default 0 = off): each student layer's output against one teacher layer's output, "
                            "over real tokens, through a learned linear map when --hidden differs from the "
                            "teacher's width (trained and checkpointed, not saved with the model)")
    group.add_argument("--hidden-layer-map", metavar="I,J,K",
                       help="teacher layers (from 0) whose outputs the student's layers are matched to, one per "
                            "student layer (default: the last of each even run, e.g. 3,7,11 for 12 -> 3)")
    add_data_arguments(parser)
    add_training_arguments(parser, lr=1e-4)


def check_init_flags(args: argparse.Namespace, layer_map: list[int] | None) -> None:
    if layer_map is not None and args.init == "random":
        raise ConfigError("--layer-map only applies with --init pretrained or --init teacher")
    if args.init_from is not None and args.init != "pretrained":
        raise ConfigError("--init-from only applies with --init pretrained")


def initialise_student(student, teacher, start, args: argparse.Namespace, layer_map: list[int] | None) -> None:
    """The student's start per `--init` (`start`: the teacher's starting checkpoint, for `pretrained`);
    `random` keeps the weights it was built with. The config records where the weights came from."""
    from sdbert.distill import init_student_from_pretrained, init_student_from_teacher

    if args.init == "teacher":
        init_student_from_teacher(student, teacher, layer_map)
        student.config.init_checkpoint = str(Path(args.teacher).resolve())
    elif args.init == "pretrained":
        init_student_from_pretrained(student, start, layer_map)
        student.config.init_checkpoint = str(Path(args.init_from).resolve()) if args.init_from else \
            teacher.config.init_checkpoint


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.output, resume=args.resume, overwrite=args.overwrite)
    layer_map = layer_list("--layer-map", args.layer_map)
    hidden_map = layer_list("--hidden-layer-map", args.hidden_layer_map)
    check_init_flags(args, layer_map)
    hidden = args.hidden_weight > 0
    if hidden and args.teacher_mode == "cached":
        raise ConfigError("--hidden-weight needs the teacher's hidden states, which are not cached: "
                          "use --teacher-mode online (the default with --hidden-weight)")
    if hidden_map is not None and not hidden:
        raise ConfigError("--hidden-layer-map only applies with --hidden-weight > 0")
    online = args.teacher_mode == "online" or hidden
    import torch

    from sdbert.checkpoint import weights_fingerprint
    from sdbert.commands.train import training_arguments
    from sdbert.data import tokenizer_hash
    from sdbert.distill import (
        HiddenProjections,
        cached_teacher_logits,
        check_hidden_layer_map,
        kd_loss_fn,
        online_kd_loss_fn,
        starting_checkpoint,
        student_config,
        teacher_logits_key,
    )
    from sdbert.model import SDBertForSequenceClassification
    from sdbert.pipeline import encode, load_unlabeled, prepare_data, with_unlabeled
    from sdbert.train import setup_distributed, train

    distributed = setup_distributed()
    teacher = SDBertForSequenceClassification.from_pretrained(args.teacher)
    if teacher.tokenizer is None:
        raise ConfigError(f"teacher {args.teacher} has no tokenizer.json")
    if hidden:
        hidden_map = check_hidden_layer_map(hidden_map, teacher.config.num_hidden_layers, args.layers)
    # Resolved before the data and the teacher-logit pass, so a missing checkpoint fails at once.
    start = starting_checkpoint(teacher, args.init_from) if args.init == "pretrained" else None
    max_length = args.max_length or teacher.config.max_length or 512
    truncation = args.truncation

    torch.manual_seed(args.seed)
    settings = data_settings(args)
    data = prepare_data(settings, id2label=teacher.config.id2label)
    train_set = encode(teacher, data.train, max_length=max_length, truncation=truncation)
    val_set = encode(teacher, data.validation, max_length=max_length, truncation=truncation)
    transfer_fingerprint = data.train.fingerprint
    if args.unlabeled:
        extra = load_unlabeled(args.unlabeled, settings, limit=args.unlabeled_limit)
        train_set = with_unlabeled(train_set, encode(teacher, extra, max_length=max_length, truncation=truncation))
        transfer_fingerprint += extra.fingerprint

    logits, teacher_seconds, cached = None, 0.0, False
    if not online:
        key = teacher_logits_key(weights_fingerprint(args.teacher), transfer_fingerprint,
                                 tokenizer_hash(teacher.tokenizer), max_length, truncation)
        logits, teacher_seconds, cached = cached_teacher_logits(teacher, train_set, key=key,
                                                                batch_size=args.eval_batch_size,
                                                                progress=not args.no_progress and is_main_process())

    config = student_config(teacher.config, layers=args.layers, heads=args.heads, hidden=args.hidden)
    config = config.replace(max_length=max_length, truncation=truncation,
                            gradient_checkpointing=args.gradient_checkpointing)
    if args.dropout is not None:
        config = config.replace(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    student = SDBertForSequenceClassification(config)
    student.tokenizer = teacher.tokenizer
    initialise_student(student, teacher, start, args, layer_map)
    projections = None
    if online:
        if hidden:
            projections = HiddenProjections(config.hidden_size, teacher.config.hidden_size, args.layers)
        loss_fn = online_kd_loss_fn(teacher, alpha=args.alpha, kind=args.kind, temperature=args.temperature,
                                    hidden_weight=args.hidden_weight, hidden_layer_map=hidden_map,
                                    projections=projections)
        teacher_note = "teacher runs on every batch"
        if hidden:
            teacher_note += (f", hidden-state loss x{args.hidden_weight:g} against teacher layers {hidden_map}"
                             f" ({sum(p.numel() for p in projections.parameters()):,} projection parameters)")
    else:
        loss_fn = kd_loss_fn(logits, alpha=args.alpha, kind=args.kind, temperature=args.temperature)
        teacher_note = f"teacher logits {'from cache' if cached else f'computed in {teacher_seconds:.1f}s'}"
        del teacher
    if is_main_process():
        print(f"student: {student.num_parameters():,} parameters ({args.layers} layers, {args.heads} heads); "
              f"{teacher_note}; transfer set {len(train_set):,}, validation {len(val_set):,}")
    started = time.perf_counter()
    result = train(student, train_set, val_set, training_arguments(args, student), loss_fn=loss_fn,
                   distributed=distributed, aux_module=projections)
    if is_main_process():
        summary = {"validation": result.best_metrics, "train_seconds": round(result.train_seconds, 2),
                   "teacher_mode": "online" if online else "cached",
                   "wall_seconds": round(time.perf_counter() - started, 2),
                   "examples_per_second": round(result.examples_per_second, 2), "steps": result.final_step,
                   "parameters": student.num_parameters(), "alpha": args.alpha, "kind": args.kind}
        if online:
            summary.update(hidden_weight=args.hidden_weight, hidden_layer_map=hidden_map)
        else:
            summary.update(teacher_logits_seconds=round(teacher_seconds, 2), teacher_logits_cached=cached)
        write_json(Path(args.output) / "summary.json", summary)
        print(f"done: validation accuracy {result.best_metrics.get('accuracy', float('nan')):.4f} | "
              f"{result.final_step} steps in {result.train_seconds:.1f}s | model in {args.output}")
    return 0
