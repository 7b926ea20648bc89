"""One training loop for fine-tuning and distillation.

AdamW, linear warm-up then decay, gradient clipping and accumulation, bf16 autocast where it is faster
(`sdbert.precision`),
evaluation on the validation split, best-model selection, early stopping, atomic checkpoints and
exact resume, DistributedDataParallel under `torchrun`.

Batch semantics: `batch_size` is the global batch, the examples behind one optimizer step, summed
over processes and accumulation steps. Each global batch is padded to one length (the smallest
block multiple that fits its longest example) and cut into `world_size * accumulation` micro-batches;
losses are weighted by micro-batch size, so a run on N processes takes the same steps as a run on
one (up to float summation order). One padded length per global batch also means block-sparse
layouts, which depend on the padded length, are the same however the batch is split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from sdbert.checkpoint import read_weights
from sdbert.classifier import Classifier
from sdbert.cli_args import arg, fraction, non_negative_float, positive_float, positive_int
from sdbert.data.batching import LengthBucketedBatchSampler, collate
from sdbert.data.encoded import EncodedDataset
from sdbert.errors import CheckpointError, ConfigError
from sdbert.inference import predict_logits as predict_ids
from sdbert.io import atomic_open, fsync_dir
from sdbert.metrics import classification_metrics
from sdbert.precision import PRECISION_HELP, Precision, PrecisionChoice, resolve_precision

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.pt"


@dataclass
class TrainingArguments:
    """Settings of one training run; validated on creation. Fields with help are `train`/`distill` flags."""

    output_dir: str = arg(help="model folder to write (best model by validation accuracy, metrics.jsonl, "
                               "checkpoints/)", flag="--output", metavar="DIR")
    epochs: int = arg(3, "passes over the data", type=positive_int)
    max_steps: int | None = arg(None, "stop after N optimizer steps (overrides epochs when smaller)",
                                type=positive_int, metavar="N")
    batch_size: int = arg(16, "global batch: examples per optimizer step over all processes and accumulation "
                              "steps", type=positive_int)
    gradient_accumulation_steps: int = arg(1, "gradient accumulation steps", flag="--grad-accum", type=positive_int)
    eval_batch_size: int = arg(64, "examples per evaluation batch", type=positive_int)
    learning_rate: float = arg(5e-5, "peak learning rate", flag="--lr", type=positive_float)
    weight_decay: float = arg(0.01, "AdamW weight decay (not on biases and LayerNorm)", type=non_negative_float)
    warmup_ratio: float = arg(0.1, "share of the steps spent warming the learning rate up from 0",
                              flag="--warmup", type=fraction)
    max_grad_norm: float = 1.0
    seed: int = arg(42, "seed of the data split, batch order, dropout and new weights")
    eval_every: int | None = arg(None, "validate every N steps (default: every epoch)", type=positive_int,
                                 metavar="N")
    save_every: int | None = arg(None, "checkpoint every N steps (default: at each validation)",
                                 type=positive_int, metavar="N")
    keep_checkpoints: int = arg(2, "checkpoints kept in output/checkpoints", type=positive_int)
    early_stopping_patience: int | None = arg(None, "stop after N validations without a better accuracy",
                                              flag="--patience", type=positive_int, metavar="N")
    precision: Precision = arg("auto", PRECISION_HELP)
    resume: bool = arg(False, "continue from the last checkpoint in --output")
    overwrite: bool = arg(False, "replace an existing model in --output")
    progress: bool = arg(True, "no progress bars", negate=True)
    log_every: int = 10
    block_size: int = 1
    """Pad every batch to a multiple of this (the model's block size)."""
    max_length: int = 512
    pad_token_id: int = 0
    extra: dict = field(default_factory=dict)
    """Free-form settings recorded in the summary (e.g. data source, distillation alpha)."""

    def record(self) -> dict:
        """The loop settings a reader needs to repeat the run (for its summary and model card)."""
        return {"epochs": self.epochs, "max_steps": self.max_steps, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "warmup_ratio": self.warmup_ratio, "seed": self.seed}

    def for_model(self, classifier, **changes) -> TrainingArguments:
        """These settings with the padding a `Classifier` needs (its block size, length and pad token)."""
        config = classifier.config
        return replace(self, block_size=config.block_size, pad_token_id=config.pad_token_id,
                       max_length=classifier.max_length(), **changes)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (self.learning_rate > 0, "learning rate must be positive"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.eval_every is None or self.eval_every >= 1, "eval_every must be >= 1"),
            (self.save_every is None or self.save_every >= 1, "save_every must be >= 1"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.max_length >= 1, "max_length must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class Batch:
    """One padded micro-batch, what every loss function (`loss_fn(model, batch)`) receives."""

    input_ids: torch.Tensor
    """(B, S) token ids, S a block multiple"""
    attention_mask: torch.Tensor
    """(B, S) 1 for real tokens, 0 for padding"""
    indices: torch.Tensor
    """(B,) the examples' positions in the training set: the key of per-example targets (cached teacher logits)"""
    labels: torch.Tensor | None = None
    """(B,) class ids; -100 (ignored by the label loss) for unlabelled transfer texts; None without labels"""

    def to(self, device) -> Batch:
        move = lambda t: None if t is None else t.to(device)
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.indices), move(self.labels))


def collate_padded(examples: EncodedDataset, indices, pad_to: int, pad_token_id: int) -> Batch:
    """Collate `indices` padded to exactly `pad_to` tokens; `indices` rides along for lookups."""
    sequences = [examples.sequence(i) for i in indices]
    labels = None if examples.labels is None else examples.labels[np.asarray(indices)]
    padded = collate(sequences, pad_token_id, multiple_of=pad_to, labels=labels)
    return Batch(padded["input_ids"], padded["attention_mask"], torch.as_tensor(np.asarray(indices, dtype=np.int64)),
                 padded.get("labels"))


def padded_length(lengths, multiple: int) -> int:
    return int(math.ceil(max(lengths) / multiple) * multiple)


def global_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """This epoch's global batches: a pure function of its arguments, so a resumed run replays them."""
    sampler = LengthBucketedBatchSampler(lengths, batch_size, seed=seed)
    sampler.set_epoch(epoch)
    return sampler.global_batches()


# --- distributed -----------------------------------------------------------------------------


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """Join the process group when launched by torchrun (RANK/WORLD_SIZE set), else one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return Distributed(rank=dist.get_rank(), world_size=world_size, local_rank=local_rank)


def default_device(distributed: Distributed) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank)
    return torch.device("cpu")


def prepare_output_dir(path: str, *, resume: bool, overwrite: bool) -> Path:
    """Refuse to clobber an earlier run unless asked (`--resume` continues it, `--overwrite` replaces it)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} exists and is not a folder")
    used = out.is_dir() and any((out / name).exists() for name in ("config.json", "checkpoints", "metrics.jsonl"))
    if used and not (resume or overwrite):
        raise ConfigError(f"--output {out} already holds a run; pass --resume to continue it or --overwrite")
    if overwrite and not resume and out.is_dir():
        for name in ("metrics.jsonl", "summary.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
    return out


# --- evaluation ------------------------------------------------------------------------------


def dataset_logits(model, examples: EncodedDataset, *, batch_size: int = 64, progress: bool = False,
                   desc: str = "eval", precision: str | PrecisionChoice | None = "fp32") -> torch.Tensor:
    """Logits `(N, num_labels)` of an encoded dataset, in its order: `inference.predict_logits` on its ids,
    in eval mode (batches hold one block count each, so an example's logits never depend on its batch)."""
    was_training = model.training
    model.eval()
    ids = [examples.sequence(i) for i in range(len(examples))]
    out = predict_ids(model, ids, batch_size=batch_size, progress=progress, desc=desc, precision=precision)
    model.train(was_training)
    return out


def evaluate(model, examples: EncodedDataset, *, batch_size: int = 64, progress: bool = False,
             desc: str = "eval", precision: str | PrecisionChoice | None = "fp32") -> dict:
    """Accuracy, macro F1, confusion matrix and throughput of `model` on labelled `examples`."""
    start = time.perf_counter()
    logits = dataset_logits(model, examples, batch_size=batch_size, progress=progress, desc=desc,
                            precision=precision)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(logits.argmax(-1).numpy(), examples.labels, model.config.num_labels,
                                     model.config.id2label)
    metrics.update(examples=len(examples), seconds=round(seconds, 3),
                   examples_per_second=round(len(examples) / max(seconds, 1e-9), 2))
    return metrics


# --- the loop --------------------------------------------------------------------------------


LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


def cross_entropy_loss(model, batch: dict) -> torch.Tensor:
    logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits
    return torch.nn.functional.cross_entropy(logits.float(), batch.labels)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every generator the loop draws from, as tensors and plain values: a checkpoint must load with
    `torch.load(weights_only=True)`, which unpickles nothing that could run code."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(value):
    """`value` as JSON types (numpy scalars and arrays, tuples and paths included): what a checkpoint may hold
    beside tensors."""
    def default(obj):
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def dataset_digest(examples: EncodedDataset | None) -> str | None:
    """A digest of encoded examples (ids, boundaries, labels): equal digests mean the same texts, tokenizer,
    length and truncation."""
    if examples is None:
        return None
    digest = hashlib.sha256()
    for array in (examples.ids, examples.offsets, examples.labels):
        digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


RESUME_FLAGS = {"learning_rate": "--lr", "batch_size": "--batch-size", "gradient_accumulation_steps": "--grad-accum",
                "weight_decay": "--weight-decay", "warmup_ratio": "--warmup", "max_grad_norm": "max_grad_norm",
                "seed": "--seed", "precision": "--precision"}
"""TrainingArguments a resumed run must share with its checkpoint (epochs and max steps may grow)."""


def _linear_schedule(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _optimizer(modules: list[torch.nn.Module], args: TrainingArguments) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in (item for module in modules for item in module.named_parameters()):
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate)


def _tensorboard_writer(folder: Path):
    """A TensorBoard writer into `folder` when the optional `tensorboard` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional extra [tensorboard]
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class UnsafeCheckpoint(CheckpointError):
    """A trainer state that would need unpickling more than tensors and plain values."""


def _load_trainer_state(path: Path) -> dict:
    """A checkpoint's trainer state, unpickled with `weights_only=True`: tensors and plain values only, so a
    run folder from elsewhere cannot run code on `--resume`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpoint(f"--resume: {path} holds objects other than tensors and plain values; refusing to "
                               f"unpickle it ({reason})") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"--resume: {path} cannot be read ({type(exc).__name__}: {exc})".splitlines()[0]) \
            from None


class Checkpoints:
    """`output_dir/checkpoints/step-N/`: weights + trainer state, written to a temp dir, fsynced and renamed."""

    def __init__(self, output_dir: Path, keep: int):
        self.root = output_dir / "checkpoints"
        self.keep = keep

    def list(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted((p for p in self.root.glob("step-*") if (p / STATE_NAME).exists()),
                      key=lambda p: int(p.name.split("-")[1]))

    def save(self, step: int, classifier, state: dict) -> Path:
        final = self.root / f"step-{step:07d}"
        for stale in self.root.glob(".tmp-step-*"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.root / f".tmp-step-{step:07d}"
        tmp.mkdir(parents=True)
        classifier.save_pretrained(tmp)
        with atomic_open(tmp / STATE_NAME) as f:
            torch.save(state, f)
        fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(self.root)
        kept = self.list()
        for old in kept[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for older in kept[-self.keep:-1]:
            _drop_optimizer_state(older / STATE_NAME)
        return final


def _drop_optimizer_state(path: Path) -> None:
    """Keep an older checkpoint's weights, schedule and RNG but not AdamW's moments (twice the model's
    size): only the newest checkpoint needs them to resume exactly; an older one is a fallback."""
    try:
        state = _load_trainer_state(path)
    except CheckpointError:  # unreadable: the resume fallback will say so
        return
    if state.get("optimizer") is None:
        return
    state["optimizer"] = None
    with atomic_open(path) as f:
        torch.save(state, f)


@dataclass
class TrainResult:
    best_metrics: dict
    final_step: int
    train_seconds: float
    examples_seen: int
    stopped_early: bool
    precision: dict = field(default_factory=dict)
    """`PrecisionChoice.record()`: the format the steps ran in and why"""

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / max(self.train_seconds, 1e-9)


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint (as a dict) so a resumed run continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_accuracy: float = -1.0
    best_metrics: dict = field(default_factory=dict)
    evals_without_gain: int = 0
    train_seconds: float = 0.0
    examples_seen: int = 0
    last_checkpoint_step: int | None = None


@dataclass
class LossWindow:
    """Loss and throughput since the last log line."""

    loss: float = 0.0
    examples: int = 0
    start: float = field(default_factory=time.perf_counter)


def train(
    classifier,
    train_examples: EncodedDataset,
    val_examples: EncodedDataset | None,
    args: TrainingArguments,
    *,
    loss_fn: LossFn = cross_entropy_loss,
    distributed: Distributed | None = None,
    device: torch.device | None = None,
    aux_module: torch.nn.Module | None = None,
) -> TrainResult:
    """Train a `Classifier`'s model in place (or a bare model); the best one by validation accuracy is
    saved, with the classifier's tokenizer and settings, to `args.output_dir`.

    `aux_module` holds parameters that `loss_fn` uses beside the model (e.g. distillation's hidden-state
    projections): they are optimised, clipped and averaged over processes with the model's, and kept
    in checkpoints for resume, but never written to the model folder.
    """
    trainer = Trainer(classifier, train_examples, val_examples, args, loss_fn=loss_fn, distributed=distributed,
                      device=device, aux_module=aux_module)
    return trainer.run()


class Trainer:
    """The loop behind `train`: plan, resume, step, evaluate-and-save, checkpoint."""

    def __init__(self, classifier, train_examples: EncodedDataset, val_examples: EncodedDataset | None,
                 args: TrainingArguments, *, loss_fn: LossFn = cross_entropy_loss,
                 distributed: Distributed | None = None, device: torch.device | None = None,
                 aux_module: torch.nn.Module | None = None):
        if not isinstance(classifier, Classifier):  # a bare model: its folders get no tokenizer or settings
            classifier = Classifier(classifier, tokenizer=None)
        self.classifier, model = classifier, classifier.model
        self.model, self.train_examples, self.val_examples, self.args = model, train_examples, val_examples, args
        self.loss_fn, self.aux_module = loss_fn, aux_module
        self.distributed = distributed or Distributed()
        self.device = device or default_device(self.distributed)
        self.output_dir = Path(args.output_dir)
        self.world = self.distributed.world_size
        self.is_main = self.distributed.is_main
        self.micro_parts = self.world * args.gradient_accumulation_steps
        self._check_batch_size()
        self.total_steps = self._plan_steps()
        self._build_optimizer()
        self.checkpoints = Checkpoints(self.output_dir, args.keep_checkpoints)
        self.state = TrainState()
        self.tensorboard = None
        self._identity: dict | None = None
        _set_seed(args.seed)

    def _check_batch_size(self) -> None:
        args = self.args
        if args.batch_size % self.micro_parts:
            raise ConfigError(f"batch size {args.batch_size} is not divisible by processes x accumulation "
                              f"({self.world} x {args.gradient_accumulation_steps})")
        if len(self.train_examples) < args.batch_size:
            raise ConfigError(f"only {len(self.train_examples)} training examples for a batch of {args.batch_size}")

    def _plan_steps(self) -> int:
        args = self.args
        steps_per_epoch = len(global_batches(self.train_examples.lengths, args.batch_size, args.seed, 0))
        total = steps_per_epoch * args.epochs
        return total if args.max_steps is None else min(total, args.max_steps)

    def _build_optimizer(self) -> None:
        self.model.to(self.device)
        self.aux_params = []
        if self.aux_module is not None:
            self.aux_module.to(self.device)
            self.aux_params = list(self.aux_module.parameters())
        modules = [self.model] if self.aux_module is None else [self.model, self.aux_module]
        self.optimizer = _optimizer(modules, self.args)
        warmup_steps = int(self.args.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           _linear_schedule(self.total_steps, warmup_steps))

    # --- resume and checkpoints ---

    def resume(self) -> None:
        """Load the latest checkpoint of `output_dir`, if any: weights, optimizer, schedule, RNG, progress;
        only if it was written by this same run (same settings, model and data)."""
        found = self.checkpoints.list()
        if not found:
            if self.is_main:
                logger.info("--resume: no checkpoint in %s, starting fresh", self.checkpoints.root)
            return
        latest, saved, weights = self._newest_readable(found)
        self._check_same_run(saved, latest)
        self.model.load_state_dict(weights)
        if (self.aux_module is None) != ("aux" not in saved):
            raise ConfigError(f"checkpoint {latest} was written {'with' if 'aux' in saved else 'without'} "
                              "extra trained parameters (e.g. distill --hidden-weight projections); resume "
                              "with the flags it was started with")
        if self.aux_module is not None:
            self.aux_module.load_state_dict(saved["aux"])
        if saved["optimizer"] is None:  # an older checkpoint, reached by the fallback
            logger.warning("--resume: %s kept no optimizer state (only the newest checkpoint does): AdamW's "
                           "moments restart from zero, so this run will not end exactly as an uninterrupted one",
                           latest.name)
        else:
            self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        self.state = TrainState(**saved["progress"])
        if self.is_main:
            logger.info("resuming from %s (step %d)", latest, self.state.step)

    def _newest_readable(self, found: list[Path]) -> tuple[Path, dict, dict]:
        """The newest checkpoint whose state and weights both read (a kill or a full disk can spoil the
        last one); a state that is not plain data is refused outright, never skipped."""
        for i, folder in enumerate(reversed(found)):
            try:
                return folder, _load_trainer_state(folder / STATE_NAME), read_weights(folder)
            except UnsafeCheckpoint:
                raise
            except CheckpointError as exc:
                if i == len(found) - 1:
                    raise
                logger.warning("--resume: %s is unreadable (%s); falling back to the checkpoint before it",
                               folder.name, exc)
        raise AssertionError("unreachable")

    def run_identity(self) -> dict:
        """What makes a checkpoint this run's: loop settings, model shape and labels, and the data. Fixed for
        the run, so computed once (it hashes the encoded data) and reused by every checkpoint."""
        if self._identity is None:
            self._identity = self._compute_identity()
        return self._identity

    def _compute_identity(self) -> dict:
        config = self.model.config
        identity = {flag: getattr(self.args, name) for name, flag in RESUME_FLAGS.items()}
        identity.update({
            "--attention": config.attention_type, "--block-size": config.block_size,
            "--random-blocks": config.num_random_blocks, "--dropout": config.hidden_dropout_prob,
            "--attention-dropout": config.attention_probs_dropout_prob,
            "model shape": [config.num_hidden_layers, config.num_attention_heads, config.hidden_size],
            "labels": [config.id2label[i] for i in range(config.num_labels)],
            "training data": dataset_digest(self.train_examples),
            "validation data": dataset_digest(self.val_examples)})
        return plain(identity)

    def _check_same_run(self, saved: dict, latest: Path) -> None:
        stored = saved.get("identity")
        if stored is None:
            raise ConfigError(f"--resume: {latest} does not record the settings it was trained with (written by "
                              "an older sdbert); start again with --overwrite")
        current = self.run_identity()
        differ = [key for key in current if stored.get(key) != current[key]]
        if differ:
            changes = "; ".join(f"{key} {_short(stored.get(key))} -> {_short(current[key])}" for key in differ)
            raise ConfigError(f"--resume: {self.output_dir} was trained with other settings ({changes}); only "
                              "--epochs and --max-steps may change on resume (or start again with --overwrite)")

    def save_checkpoint(self) -> None:
        self.state.last_checkpoint_step = self.state.step
        if self.is_main:
            trainer_state = {"optimizer": self.optimizer.state_dict(), "scheduler": plain(self.scheduler.state_dict()),
                             "rng": _rng_state(), "progress": plain(asdict(self.state)),
                             "args": plain(asdict(self.args)), "identity": self.run_identity()}
            if self.aux_module is not None:
                trainer_state["aux"] = self.aux_module.state_dict()
            self.checkpoints.save(self.state.step, self.classifier, trainer_state)
        if self.world > 1:
            dist.barrier()

    # --- evaluation and logs ---

    def log(self, record: dict) -> None:
        """One line of `metrics.jsonl` (and TensorBoard scalars when the `tensorboard` extra is installed)."""
        if self.is_main:
            with (self.output_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            if self.tensorboard is not None and "step" in record:
                for key, value in record.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
                        self.tensorboard.add_scalar(key.replace("val_", "validation/", 1) if key.startswith("val_")
                                                    else f"train/{key}", value, record["step"])
                self.tensorboard.flush()

    def evaluate_and_save(self) -> bool:
        """Evaluate, keep the best model; returns True when training should stop early."""
        if self.val_examples is None or len(self.val_examples) == 0:
            return False
        state = self.state
        metrics = evaluate(self.model, self.val_examples, batch_size=self.args.eval_batch_size,
                           progress=self.args.progress and self.is_main, desc="validate", precision=self.precision)
        if metrics["accuracy"] > state.best_accuracy:
            state.best_accuracy, state.best_metrics, state.evals_without_gain = metrics["accuracy"], metrics, 0
            if self.is_main:
                self.classifier.save_pretrained(self.output_dir)
        else:
            state.evals_without_gain += 1
        self.log({"step": state.step, "epoch": state.epoch, **{f"val_{k}": v for k, v in metrics.items()}})
        if self.is_main:
            logger.info("step %d: validation accuracy %.4f (best %.4f)", state.step, metrics["accuracy"],
                        state.best_accuracy)
        patience = self.args.early_stopping_patience
        return patience is not None and state.evals_without_gain >= patience

    def _log_window(self, window: LossWindow, bar) -> LossWindow:
        """Write the loss and throughput of the steps since the last log line; returns a new window."""
        step = self.state.step
        if step % self.args.log_every and step != self.total_steps:
            return window
        steps_in_window = (step - 1) % self.args.log_every + 1
        record = {"step": step, "epoch": self.state.epoch, "loss": round(window.loss / steps_in_window, 5),
                  "lr": self.scheduler.get_last_lr()[0],
                  "examples_per_second": round(window.examples / max(time.perf_counter() - window.start, 1e-9), 2)}
        self.log(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{record['examples_per_second']:.1f}")
        return LossWindow()

    # --- one optimizer step ---

    def _accumulate(self, indices: np.ndarray) -> torch.Tensor:
        """Forward and backward over this rank's micro-batches of one global batch; returns its loss."""
        args, world = self.args, self.world
        pad_to = padded_length(self.train_examples.lengths[indices], args.block_size)
        mine = np.array_split(indices, self.micro_parts)[self.distributed.rank::world]
        step_loss = torch.zeros((), device=self.device)
        for i, part in enumerate(mine):
            if len(part) == 0:
                continue
            batch = collate_padded(self.train_examples, part, pad_to, args.pad_token_id)
            batch = batch.to(self.device)
            sync = i == len(mine) - 1 or world == 1
            with (nullcontext() if sync else self.train_model.no_sync()), self.autocast:
                loss = self.loss_fn(self.train_model, batch)
                # Weight by share of the global batch; DDP divides by world size, so undo that.
                scaled = loss * (len(part) * world / len(indices))
            scaled.backward()
            step_loss += loss.detach() * len(part) / len(indices)
        return step_loss

    def _reduce_gradients(self, step_loss: torch.Tensor) -> None:
        """Sum the loss over processes and average the aux gradients, which DDP does not see."""
        if self.world == 1:
            return
        dist.all_reduce(step_loss)
        for param in self.aux_params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)
            param.grad /= self.world

    def optimizer_step(self, indices: np.ndarray) -> float:
        """One global batch: accumulate, reduce, clip, step; returns the batch's loss."""
        step_start = time.perf_counter()
        step_loss = self._accumulate(indices)
        self._reduce_gradients(step_loss)
        if self.args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_([*self.model.parameters(), *self.aux_params], self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state = self.state
        state.step += 1
        state.batch_in_epoch += 1
        state.examples_seen += len(indices)
        state.train_seconds += time.perf_counter() - step_start
        return step_loss.item()

    # --- the run ---

    def _prepare_run(self) -> None:
        if self.args.resume:
            self.resume()
        self.train_model = self.model
        if self.world > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.precision = resolve_precision(self.args.precision, self.device, log=self.is_main)
        self.autocast = self.precision.autocast(self.device)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.tensorboard = _tensorboard_writer(self.output_dir / "tensorboard")

    def _after_step(self, end_of_epoch: bool) -> bool:
        """Evaluate and checkpoint when due; returns True when training should stop early."""
        args, step = self.args, self.state.step
        stop = False
        due_eval = (step % args.eval_every == 0) if args.eval_every else end_of_epoch
        if due_eval or step == self.total_steps:
            stop = self.evaluate_and_save()
            if args.save_every is None:
                self.save_checkpoint()
        if args.save_every and step % args.save_every == 0:
            self.save_checkpoint()
        return stop

    def _run_epoch(self, bar, window: LossWindow) -> tuple[bool, LossWindow]:
        """The rest of the current epoch; returns (stopped early, loss window)."""
        state, stopped_early = self.state, False
        batches = global_batches(self.train_examples.lengths, self.args.batch_size, self.args.seed, state.epoch)
        while state.batch_in_epoch < len(batches) and state.step < self.total_steps and not stopped_early:
            indices = batches[state.batch_in_epoch]
            window.loss += self.optimizer_step(indices)
            window.examples += len(indices)
            bar.update(1)
            window = self._log_window(window, bar)
            stopped_early = self._after_step(end_of_epoch=state.batch_in_epoch == len(batches))
        if state.batch_in_epoch >= len(batches):
            state.epoch += 1
            state.batch_in_epoch = 0
        return stopped_early, window

    def run(self) -> TrainResult:
        self._prepare_run()
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc="train", unit="step",
                   disable=not (self.args.progress and self.is_main), dynamic_ncols=True)
        stopped_early, window = False, LossWindow()
        self.model.train()
        while self.state.step < self.total_steps and not stopped_early:
            stopped_early, window = self._run_epoch(bar, window)
        bar.close()
        return self._finish(stopped_early)

    def _finish(self, stopped_early: bool) -> TrainResult:
        state = self.state
        if state.last_checkpoint_step != state.step:
            self.save_checkpoint()  # the final state, for resume and for inspection
        if (self.val_examples is None or len(self.val_examples) == 0) and self.is_main:
            self.classifier.save_pretrained(self.output_dir)  # nothing to select on: the last weights are the model
        result = TrainResult(best_metrics=state.best_metrics, final_step=state.step,
                             train_seconds=state.train_seconds, examples_seen=state.examples_seen,
                             stopped_early=stopped_early, precision=self.precision.record())
        self.log({"summary": True, "precision": self.precision.precision, "final_step": result.final_step,
                  "train_seconds": round(result.train_seconds, 2),
                  "examples_per_second": round(result.examples_per_second, 2), "best": result.best_metrics,
                  "stopped_early": stopped_early})
        if self.tensorboard is not None:
            self.tensorboard.close()
        return result
