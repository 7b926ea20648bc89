"""Knowledge distillation: the paper's loss and the construction of a small student.

The paper's loss is `alpha * CE(labels, student) + (1 - alpha) * ||z_teacher - z_student||^2`, the
squared L2 distance of the logit vectors, summed over classes and averaged over the batch. (The
seed paper's equation (1) writes a minus before the second term; both terms are minimised.)

The teacher's logits are computed once and cached (`cached_teacher_logits`, `kd_loss_fn`). Beyond the
paper, an online teacher (`online_kd_loss_fn`) runs per batch and adds an optional hidden-state MSE
between chosen student and teacher layers (`hidden_state_loss`, `HiddenProjections`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sdbert.config import SDBertConfig
from sdbert.data.cache import cache_dir as default_cache_dir
from sdbert.data.vocabulary import VocabularyCut
from sdbert.errors import ConfigError
from sdbert.io import atomic_open
from sdbert.model import SDBertForSequenceClassification
from sdbert.training.loop import dataset_logits

logger = logging.getLogger(__name__)

IGNORE_LABEL = -100
WORD_TABLE = "bert.embeddings.word_embeddings.weight"
"""Label of transfer-set examples without a label (e.g. IMDb `unsup`): distillation term only."""


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    alpha: float,
    kind: str = "mse",
    temperature: float = 2.0,
) -> torch.Tensor:
    """`alpha * CE + (1 - alpha) * D`; D is the mean squared-L2 logit distance (`kind="mse"`, the
    paper's) or Hinton's `T^2 * KL(teacher_T || student_T)` (`kind="kl"`). The teacher gets no
    gradient. Labels equal to -100 (unlabelled) contribute only D."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
    if kind not in ("mse", "kl"):
        raise ConfigError(f"kind must be 'mse' or 'kl', got {kind!r}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    student = student_logits.float()
    teacher = teacher_logits.detach().float()
    if kind == "mse":
        distill = (teacher - student).pow(2).sum(-1).mean()
    else:
        log_p_student = F.log_softmax(student / temperature, dim=-1)
        log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
        distill = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * temperature**2
    ce = student.new_zeros(())
    if labels is not None and bool((labels != IGNORE_LABEL).any()):
        ce = F.cross_entropy(student, labels, ignore_index=IGNORE_LABEL)
    return alpha * ce + (1.0 - alpha) * distill


def student_config(teacher: SDBertConfig, *, layers: int = 3, heads: int = 4, hidden: int | None = None,
                   intermediate: int | None = None, embedding_size: int | None = None,
                   vocabulary: VocabularyCut | None = None) -> SDBertConfig:
    """The teacher's config with fewer layers and heads (and, with `embedding_size`, factorised
    embeddings; with `vocabulary`, a cut vocabulary); attention stays block-sparse."""
    hidden = hidden or teacher.hidden_size
    if intermediate is None:
        intermediate = teacher.intermediate_size * hidden // teacher.hidden_size
    config = teacher.replace(num_hidden_layers=layers, num_attention_heads=heads, hidden_size=hidden,
                             intermediate_size=intermediate, attention_type="block_sparse", init_checkpoint=None,
                             embedding_size=embedding_size or teacher.embedding_size)
    return config if vocabulary is None else with_vocabulary(config, vocabulary)


def with_vocabulary(config: SDBertConfig, vocabulary: VocabularyCut) -> SDBertConfig:
    """`config` over a cut vocabulary: its size, and the pad token's new id."""
    return config.replace(vocab_size=len(vocabulary.ids), pad_token_id=vocabulary.ids.index(config.pad_token_id))


def init_student(config: SDBertConfig, init: str = "random", *, teacher=None, start=None,
                 layer_map: list[int] | None = None,
                 vocab_ids: list[int] | None = None) -> SDBertForSequenceClassification:
    """A new student of `config` (its head and any layer not copied drawn from torch's RNG), started per
    `init`: `random`, `pretrained` (the mapped layers of `start`, the checkpoint the teacher was
    fine-tuned from) or `teacher` (the fine-tuned teacher's). With a cut vocabulary, `vocab_ids` are the
    source's word-table rows it keeps (`sdbert.data.vocabulary`)."""
    student = SDBertForSequenceClassification(config)
    if init == "teacher":
        init_student_from_teacher(student, teacher, layer_map, vocab_ids)
    elif init == "pretrained":
        init_student_from_pretrained(student, start, layer_map, vocab_ids)
    return student


def default_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, starting at 0: 12 -> 3 gives [0, 4, 8] (DistilBERT-style)."""
    if student_layers > teacher_layers:
        raise ConfigError(f"student has {student_layers} layers, teacher only {teacher_layers}")
    return [int(x) for x in np.floor(np.arange(student_layers) * teacher_layers / student_layers)]


def copy_mapped_weights(student, source, layer_map: list[int] | None = None, *,
                        skip: tuple[str, ...] = (), vocab_ids: list[int] | None = None) -> list[str]:
    """Copy embeddings, the mapped `source` layers and every other tensor whose name and shape match
    into `student`, except names starting with a prefix in `skip`. Needs the same hidden size.
    With fewer heads at the same width, q/k/v are copied unchanged and re-split into fewer, wider
    heads: an initialisation, not an equivalent model. `vocab_ids` keeps those rows of the word table (a
    cut vocabulary). Returns the copied names."""
    s_cfg, t_cfg = student.config, source.config
    if s_cfg.hidden_size != t_cfg.hidden_size:
        raise ConfigError(f"initialising the student needs the source's hidden size {t_cfg.hidden_size}, "
                          f"student has {s_cfg.hidden_size}")
    layer_map = layer_map or default_layer_map(t_cfg.num_hidden_layers, s_cfg.num_hidden_layers)
    if len(layer_map) != s_cfg.num_hidden_layers or not all(0 <= i < t_cfg.num_hidden_layers for i in layer_map):
        raise ConfigError(f"layer map {layer_map} does not fit {s_cfg.num_hidden_layers} student layers and "
                          f"{t_cfg.num_hidden_layers} source layers")
    source_state, student_state = source.state_dict(), student.state_dict()
    if vocab_ids is not None:
        source_state[WORD_TABLE] = source_state[WORD_TABLE][vocab_ids]
    copied = {}
    for name in student_state:
        origin = name
        if name.startswith("bert.encoder.layer."):
            parts = name.split(".")
            parts[3] = str(layer_map[int(parts[3])])
            origin = ".".join(parts)
        if name.startswith(skip) or origin not in source_state:
            continue
        if source_state[origin].shape == student_state[name].shape:
            copied[name] = source_state[origin].clone()
    student.load_state_dict(copied, strict=False)
    if s_cfg.embedding_size != t_cfg.embedding_size:  # other tables (their shapes may still match at full width)
        factorise_embeddings(student, source, vocab_ids)
        copied.update(dict.fromkeys(n for n in student_state if n.startswith("bert.embeddings.")))
    logger.info("student initialised from layers %s (%d tensors copied)", layer_map, len(copied))
    return sorted(copied)


def embedding_tables(embeddings, vocab_ids: list[int] | None = None) -> list[torch.Tensor]:
    """The word (its `vocab_ids` rows, if given), position and type tables of an embeddings module at the
    hidden size (a factorised module's tables times its projection)."""
    words = embeddings.word_embeddings.weight
    tables = [words if vocab_ids is None else words[vocab_ids], embeddings.position_embeddings.weight,
              embeddings.token_type_embeddings.weight]
    if embeddings.projection is not None:
        tables = [table @ embeddings.projection.weight.T for table in tables]
    return [table.detach().float() for table in tables]


@torch.no_grad()
def factorise_embeddings(student, source, vocab_ids: list[int] | None = None) -> None:
    """The student's narrower embedding tables from `source`'s, ALBERT-style: every table projected onto
    the top `embedding_size` right singular vectors of the stacked tables (one truncated SVD), which then
    form the projection back to the hidden size. At full width the student embeds exactly as `source`."""
    mine = student.bert.embeddings
    if mine.projection is None:
        raise ConfigError("the student's embedding tables differ from the source's: give it an embedding_size "
                          "(factorised embeddings) or the source's vocabulary and positions")
    tables = embedding_tables(source.bert.embeddings, vocab_ids)
    targets = (mine.word_embeddings, mine.position_embeddings, mine.token_type_embeddings)
    for table, target in zip(tables, targets, strict=True):
        if table.shape[0] != target.num_embeddings:
            raise ConfigError(f"cannot factorise the source's embeddings: a table of {table.shape[0]} rows for "
                              f"the student's {target.num_embeddings}")
    basis = torch.linalg.svd(torch.cat(tables), full_matrices=False).Vh[:student.config.embedding_size]
    for table, target in zip(tables, targets, strict=True):
        target.weight.copy_(table @ basis.T)
    mine.projection.weight.copy_(basis.T)


def init_student_from_teacher(student, teacher, layer_map: list[int] | None = None,
                              vocab_ids: list[int] | None = None) -> list[str]:
    """`--init teacher`: everything mapped from the *fine-tuned* teacher, classifier included. A recipe
    for a good small model, not an ablation of KD (the student starts with the teacher's task knowledge)."""
    return copy_mapped_weights(student, teacher, layer_map, vocab_ids=vocab_ids)


def init_student_from_pretrained(student, checkpoint, layer_map: list[int] | None = None,
                                 vocab_ids: list[int] | None = None) -> list[str]:
    """`--init pretrained`: embeddings, mapped layers and pooler from the checkpoint the teacher was
    fine-tuned *from*; the classifier stays the student's own new head. Nothing fine-tuned leaks in."""
    return copy_mapped_weights(student, checkpoint, layer_map, skip=("classifier.",), vocab_ids=vocab_ids)


def starting_checkpoint(teacher, init_from: str | None = None):
    """The model the teacher was fine-tuned from (`init_from`, else the folder its config records),
    loaded to fit the teacher: same positions and labels, and checked to share its vocabulary."""
    path = init_from or teacher.config.init_checkpoint
    if not path:
        raise ConfigError("--init pretrained needs the checkpoint the teacher was fine-tuned from: its config does "
                          "not record one (trained from scratch?); pass --init-from PATH")
    if not Path(path).is_dir():
        raise ConfigError(f"starting checkpoint {path} is not a folder (pass --init-from PATH)")
    t_cfg = teacher.config
    checkpoint = SDBertForSequenceClassification.from_pretrained(
        path, max_position_embeddings=t_cfg.max_position_embeddings, id2label=t_cfg.id2label)
    c_cfg = checkpoint.config
    if (c_cfg.vocab_size, c_cfg.hidden_size) != (t_cfg.vocab_size, t_cfg.hidden_size):
        raise ConfigError(f"{path} (vocabulary {c_cfg.vocab_size}, width {c_cfg.hidden_size}) is not what the "
                          f"teacher was fine-tuned from (vocabulary {t_cfg.vocab_size}, width {t_cfg.hidden_size})")
    return checkpoint


# --- teacher logits, computed once and cached -------------------------------------------------


def teacher_logits_key(teacher_fingerprint: str, data_fingerprint: str, tokenizer_digest: str, max_length: int,
                       truncation: str, precision: str = "fp32") -> str:
    """The cache key of one teacher-logit pass; bf16 logits differ from fp32 ones, so the format is part of it."""
    spec = [1, teacher_fingerprint, data_fingerprint, tokenizer_digest, max_length, truncation]
    spec = json.dumps(spec if precision == "fp32" else [*spec, precision])
    return hashlib.sha256(spec.encode()).hexdigest()[:32]


@dataclass
class TeacherLogits:
    """The teacher's logits on a transfer set and what they cost."""

    logits: torch.Tensor
    """`(N, num_labels)`, row i for example i of the transfer set"""
    seconds: float
    """what this run spent on them (0 when read from the cache)"""
    cached: bool
    cost: float | None
    """what the pass cost when it ran (read back beside a cached copy, so a rerun reports what a user pays;
    None where the cache did not record it)"""


def cached_teacher_logits(
    teacher,
    examples,
    *,
    key: str,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    precision=None,
) -> TeacherLogits:
    """Teacher logits `(N, C)` for `examples`: read from `<cache>/teacher_logits/<key>.npy` or computed
    once in eval mode (in `precision`, a resolved `PrecisionChoice` or a name; None: fp32) and stored
    atomically."""
    path = default_cache_dir(cache_dir) / "teacher_logits" / f"{key}.npy"
    if path.is_file():
        try:
            logits = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # cut short or overwritten: compute them again
            logger.warning("teacher logits cache %s is unreadable (%s); computing them again", path, exc)
            logits = None
        if logits is not None and logits.ndim == 2 and logits.shape[0] == len(examples):
            logger.info("teacher logits for %d examples read from %s", len(examples), path)
            cost = teacher_logits_cost(key, cache_dir)
            if cost is None:
                logger.warning("teacher logits came from a cache without their cost: KD time is training only")
            return TeacherLogits(torch.from_numpy(logits), 0.0, True, cost)
    start = time.perf_counter()
    logits = dataset_logits(teacher, examples, batch_size=batch_size, progress=progress, desc="teacher logits",
                            precision=precision or "fp32")
    seconds = time.perf_counter() - start
    try:
        with atomic_open(path) as f:
            np.save(f, logits.numpy())
        with atomic_open(path.with_suffix(".json"), "w") as f:  # what the pass cost, for runs that reuse it
            f.write(json.dumps({"seconds": seconds, "examples": len(examples)}))
    except OSError as exc:
        logger.warning("could not cache teacher logits in %s: %s", path, exc)
    return TeacherLogits(logits, seconds, False, seconds)


def teacher_logits_cost(key: str, cache_dir: str | Path | None = None) -> float | None:
    """Seconds the teacher-logit pass stored under `key` took when it was computed; None if unknown."""
    record = default_cache_dir(cache_dir) / "teacher_logits" / f"{key}.json"
    try:
        return float(json.loads(record.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def kd_loss_fn(teacher_logits: torch.Tensor, *, alpha: float, kind: str = "mse", temperature: float = 2.0):
    """A `train` loss: the student's logits against the cached teacher logits of the batch's examples."""

    def loss(model, batch):
        logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
        teacher = teacher_logits[batch.indices.cpu()].to(logits.device)
        return distillation_loss(logits, teacher, batch.labels, alpha, kind, temperature)

    return loss


# --- online teacher and the hidden-state loss (beyond the paper) ------------------------------
#
# The paper distils logits only, which the cache above serves. Matching intermediate hidden states
# (DistilBERT's cosine loss, TinyBERT's MSE) needs the teacher's hidden states for every batch, so
# the teacher runs online: per batch, on the same padded batch as the student, in eval mode under
# `torch.no_grad`. Student layer `i` is compared with teacher layer `m[i]`, both taken at the layer's
# output (after its last LayerNorm; `hidden_states[i + 1]` of the model, index 0 being the
# embeddings). When the widths differ, a learned `nn.Linear` maps the student's state to the
# teacher's width; it is trained with the student and dropped afterwards.


def default_hidden_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layers whose outputs the student's layer outputs are matched to: the last layer of each
    of `student_layers` equal runs of teacher layers (TinyBERT's uniform map), so the student's last
    layer meets the teacher's last. 12 -> 3 gives [3, 7, 11]; 6 -> 3 gives [1, 3, 5]. (The `--init
    teacher` map, [0, 4, 8], names the layers *copied*; this one names the outputs *matched*.)"""
    if student_layers > teacher_layers:
        raise ConfigError(f"student has {student_layers} layers, teacher only {teacher_layers}")
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def check_hidden_layer_map(layer_map: list[int] | None, teacher_layers: int, student_layers: int) -> list[int]:
    """`layer_map`, or the default, after checking it names one teacher layer per student layer."""
    if layer_map is None:
        return default_hidden_layer_map(teacher_layers, student_layers)
    if len(layer_map) != student_layers:
        raise ConfigError(f"hidden layer map {layer_map} names {len(layer_map)} teacher layers; the student has "
                          f"{student_layers}, one teacher layer each")
    bad = [i for i in layer_map if not 0 <= i < teacher_layers]
    if bad:
        raise ConfigError(f"hidden layer map {layer_map}: layer {bad[0]} is out of range, the teacher has layers "
                          f"0..{teacher_layers - 1}")
    return list(layer_map)


class HiddenProjections(nn.Module):
    """One map per matched layer pair from the student's width to the teacher's: a learned `nn.Linear`
    when the widths differ, the identity (no parameters) when they are equal."""

    def __init__(self, student_hidden: int, teacher_hidden: int, pairs: int):
        super().__init__()
        same = student_hidden == teacher_hidden
        self.maps = nn.ModuleList(nn.Identity() if same else nn.Linear(student_hidden, teacher_hidden)
                                  for _ in range(pairs))

    def forward(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        return [project(state) for project, state in zip(self.maps, states, strict=True)]


def hidden_state_loss(
    student_states: list[torch.Tensor],
    teacher_states: list[torch.Tensor],
    attention_mask: torch.Tensor | None,
    projections: HiddenProjections | None = None,
) -> torch.Tensor:
    """Mean over layer pairs of the MSE between (projected) student and teacher states `(B, S, H)`:
    for each example the mean over its real tokens (`attention_mask` 1; padding ignored) and the
    teacher's features, then the mean over the batch. Per example, like the logit terms, so a batch
    split over processes or accumulation steps gives the same loss. The teacher gets no gradient."""
    if len(student_states) != len(teacher_states) or not student_states:
        raise ConfigError(f"{len(student_states)} student states for {len(teacher_states)} teacher states")
    if projections is not None:
        student_states = projections(student_states)
    losses = []
    for student, teacher in zip(student_states, teacher_states, strict=True):
        squared = (student.float() - teacher.detach().float()).pow(2).mean(-1)  # (B, S)
        if attention_mask is None:
            losses.append(squared.mean())
            continue
        real = attention_mask.to(squared.dtype)  # (B, S)
        per_example = (squared * real).sum(-1) / real.sum(-1).clamp(min=1.0)  # (B,)
        losses.append(per_example.mean())
    return torch.stack(losses).mean()


def online_kd_loss_fn(
    teacher,
    *,
    alpha: float,
    kind: str = "mse",
    temperature: float = 2.0,
    hidden_weight: float = 0.0,
    hidden_layer_map: list[int] | None = None,
    projections: HiddenProjections | None = None,
):
    """A `train` loss that runs `teacher` on each batch (eval mode, no gradient, moved to the batch's
    device on first use): `distillation_loss + hidden_weight * hidden_state_loss`. With
    `hidden_weight > 0`, student layer `i`'s output is matched to teacher layer `hidden_layer_map[i]`'s
    (default `default_hidden_layer_map`) through `projections`, which the caller must train with the
    student (`train(..., aux_module=projections)`). `teacher` is put in eval mode and frozen here."""
    if hidden_weight < 0:
        raise ConfigError(f"hidden weight must be >= 0, got {hidden_weight}")
    teacher.eval().requires_grad_(False)
    pairs: list[int] = []
    if hidden_weight > 0:
        if projections is None:
            raise ConfigError("a hidden-state loss needs the student-to-teacher projections")
        pairs = check_hidden_layer_map(hidden_layer_map, teacher.config.num_hidden_layers, len(projections.maps))
    want_states = bool(pairs)

    def loss(model, batch):
        ids, mask = batch.input_ids, batch.attention_mask
        if next(teacher.parameters()).device != ids.device:
            teacher.to(ids.device)
        with torch.no_grad():
            target = teacher(ids, attention_mask=mask, output_hidden_states=want_states)
        out = model(ids, attention_mask=mask, output_hidden_states=want_states)
        total = distillation_loss(out.logits, target.logits, batch.labels, alpha, kind, temperature)
        if want_states:
            student_states = list(out.hidden_states[1:])  # output of each student layer
            teacher_states = [target.hidden_states[m + 1] for m in pairs]
            total = total + hidden_weight * hidden_state_loss(student_states, teacher_states, mask, projections)
        return total

    return loss
