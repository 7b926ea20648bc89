"""One training loop for fine-tuning and distillation.

AdamW, linear warm-up then decay, gradient clipping and accumulation, bf16 autocast on CUDA,
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

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from sdbert.data.batching import LengthBucketedBatchSampler, collate
from sdbert.data.encoded import EncodedDataset
from sdbert.errors import ConfigError
from sdbert.metrics import classification_metrics

logger = logging.getLogger(__name__)

STATE_NAME = "trainer_state.pt"


@dataclass
class TrainingArguments:
    """Settings of one training run; validated on creation."""

    output_dir: str
    epochs: int = 3
    batch_size: int = 16
    """Global batch: examples per optimizer step over all processes and accumulation steps."""
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming the learning rate up linearly from 0."""
    max_grad_norm: float = 1.0
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides `epochs` when smaller)."""
    seed: int = 42
    eval_every: int | None = None
    """Evaluate every N steps; None evaluates at the end of each epoch."""
    save_every: int | None = None
    """Checkpoint every N steps; None checkpoints at each evaluation."""
    keep_checkpoints: int = 2
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without a better validation accuracy."""
    eval_batch_size: int = 64
    bf16: bool | None = None
    """bf16 autocast; None = on for CUDA, off on CPU (bf16 is slow on most CPUs)."""
    resume: bool = False
    progress: bool = True
    log_every: int = 10
    block_size: int = 1
    """Pad every batch to a multiple of this (the model's block size)."""
    max_length: int = 512
    pad_token_id: int = 0
    extra: dict = field(default_factory=dict)
    """Free-form settings recorded in the summary (e.g. data source, distillation alpha)."""

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


def collate_padded(examples: EncodedDataset, indices, pad_to: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Collate `indices` padded to exactly `pad_to` tokens; `indices` rides along for lookups."""
    sequences = [examples.sequence(i) for i in indices]
    labels = None if examples.labels is None else examples.labels[np.asarray(indices)]
    batch = collate(sequences, pad_token_id, multiple_of=pad_to, labels=labels)
    batch["indices"] = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    return batch


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


# --- evaluation ------------------------------------------------------------------------------


def predict_logits(model, examples: EncodedDataset, *, batch_size: int = 64, progress: bool = False,
                   desc: str = "eval") -> torch.Tensor:
    """Logits `(N, num_labels)` in the examples' order. Batches hold one block count each, so an
    example's logits never depend on what it is batched with (see `sdbert.inference`)."""
    from sdbert.inference import predict_logits as predict_ids

    was_training = model.training
    model.eval()
    ids = [examples.sequence(i) for i in range(len(examples))]
    out = predict_ids(model, ids, batch_size=batch_size, progress=progress, desc=desc)
    model.train(was_training)
    return out


def evaluate(model, examples: EncodedDataset, *, batch_size: int = 64, progress: bool = False,
             desc: str = "eval") -> dict:
    """Accuracy, macro F1, confusion matrix and throughput of `model` on labelled `examples`."""
    start = time.perf_counter()
    logits = predict_logits(model, examples, batch_size=batch_size, progress=progress, desc=desc)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(logits.argmax(-1).numpy(), examples.labels, model.config.num_labels)
    metrics.update(examples=len(examples), seconds=round(seconds, 3),
                   examples_per_second=round(len(examples) / max(seconds, 1e-9), 2))
    return metrics


# --- the loop --------------------------------------------------------------------------------


LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


def cross_entropy_loss(model, batch: dict) -> torch.Tensor:
    logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])


def _autocast(device: torch.device, bf16: bool | None):
    use = (device.type == "cuda") if bf16 is None else bf16
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use else nullcontext()


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


class Checkpoints:
    """`output_dir/checkpoints/step-N/`: weights + trainer state, written to a temp dir and renamed."""

    def __init__(self, output_dir: Path, keep: int):
        self.root = output_dir / "checkpoints"
        self.keep = keep

    def list(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted((p for p in self.root.glob("step-*") if (p / STATE_NAME).exists()),
                      key=lambda p: int(p.name.split("-")[1]))

    def save(self, step: int, model, state: dict) -> Path:
        final = self.root / f"step-{step:07d}"
        tmp = self.root / f".tmp-step-{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_NAME)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.list()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


@dataclass
class TrainResult:
    best_metrics: dict
    final_step: int
    train_seconds: float
    examples_seen: int
    stopped_early: bool

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / max(self.train_seconds, 1e-9)


def train(
    model,
    train_examples: EncodedDataset,
    val_examples: EncodedDataset | None,
    args: TrainingArguments,
    *,
    loss_fn: LossFn = cross_entropy_loss,
    distributed: Distributed | None = None,
    device: torch.device | None = None,
    aux_module: torch.nn.Module | None = None,
) -> TrainResult:
    """Train `model` in place; the best model by validation accuracy is saved to `args.output_dir`.

    `aux_module` holds parameters that `loss_fn` uses beside the model (e.g. distillation's hidden-state
    projections): they are optimised, clipped and averaged over processes with the model's, and kept
    in checkpoints for resume, but never written to the model folder.
    """
    distributed = distributed or Distributed()
    device = device or default_device(distributed)
    output_dir = Path(args.output_dir)
    world = distributed.world_size
    micro_parts = world * args.gradient_accumulation_steps
    if args.batch_size % micro_parts:
        raise ConfigError(f"batch size {args.batch_size} is not divisible by processes x accumulation "
                          f"({world} x {args.gradient_accumulation_steps})")
    if len(train_examples) < args.batch_size:
        raise ConfigError(f"only {len(train_examples)} training examples for a batch of {args.batch_size}")

    lengths = train_examples.lengths
    steps_per_epoch = len(global_batches(lengths, args.batch_size, args.seed, 0))
    total_steps = steps_per_epoch * args.epochs
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    warmup_steps = int(args.warmup_ratio * total_steps)

    model.to(device)
    aux_params = []
    if aux_module is not None:
        aux_module.to(device)
        aux_params = list(aux_module.parameters())
    optimizer = _optimizer([model] if aux_module is None else [model, aux_module], args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(total_steps, warmup_steps))
    checkpoints = Checkpoints(output_dir, args.keep_checkpoints)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_accuracy": -1.0, "best_metrics": {},
             "evals_without_gain": 0, "train_seconds": 0.0, "examples_seen": 0}
    _set_seed(args.seed)

    if args.resume:
        found = checkpoints.list()
        if found:
            latest = found[-1]
            saved = torch.load(latest / STATE_NAME, map_location="cpu", weights_only=False)
            from sdbert.checkpoint import read_weights

            model.load_state_dict(read_weights(latest))
            if (aux_module is None) != ("aux" not in saved):
                raise ConfigError(f"checkpoint {latest} was written {'with' if 'aux' in saved else 'without'} "
                                  "extra trained parameters (e.g. distill --hidden-weight projections); resume "
                                  "with the flags it was started with")
            if aux_module is not None:
                aux_module.load_state_dict(saved["aux"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            _set_rng_state(saved["rng"])
            state = saved["progress"]
            if distributed.is_main:
                logger.info("resuming from %s (step %d)", latest, state["step"])
        elif distributed.is_main:
            logger.info("--resume: no checkpoint in %s, starting fresh", checkpoints.root)

    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = _autocast(device, args.bf16)
    metrics_file = output_dir / "metrics.jsonl"
    is_main = distributed.is_main
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        if is_main:
            with metrics_file.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def run_eval() -> bool:
        """Evaluate, keep the best model; returns True when training should stop early."""
        if val_examples is None or len(val_examples) == 0:
            return False
        metrics = evaluate(model, val_examples, batch_size=args.eval_batch_size,
                           progress=args.progress and is_main, desc="validate")
        improved = metrics["accuracy"] > state["best_accuracy"]
        if improved:
            state.update(best_accuracy=metrics["accuracy"], best_metrics=metrics, evals_without_gain=0)
            if is_main:
                model.save_pretrained(output_dir)
        else:
            state["evals_without_gain"] += 1
        log({"step": state["step"], "epoch": state["epoch"], **{f"val_{k}": v for k, v in metrics.items()}})
        if is_main:
            logger.info("step %d: validation accuracy %.4f (best %.4f)", state["step"], metrics["accuracy"],
                        state["best_accuracy"])
        patience = args.early_stopping_patience
        return patience is not None and state["evals_without_gain"] >= patience

    def save_checkpoint() -> None:
        state["last_checkpoint_step"] = state["step"]
        if is_main:
            trainer_state = {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state(), "progress": dict(state), "args": asdict(args),
            }
            if aux_module is not None:
                trainer_state["aux"] = aux_module.state_dict()
            checkpoints.save(state["step"], model, trainer_state)
        if world > 1:
            dist.barrier()

    bar = tqdm(total=total_steps, initial=state["step"], desc="train", unit="step",
               disable=not (args.progress and is_main), dynamic_ncols=True)
    stopped_early = False
    window_loss, window_examples, window_start = 0.0, 0, time.perf_counter()
    model.train()
    while state["step"] < total_steps and not stopped_early:
        batches = global_batches(lengths, args.batch_size, args.seed, state["epoch"])
        while state["batch_in_epoch"] < len(batches) and state["step"] < total_steps:
            step_start = time.perf_counter()
            indices = batches[state["batch_in_epoch"]]
            pad_to = padded_length(lengths[indices], args.block_size)
            micro = np.array_split(indices, micro_parts)
            mine = micro[distributed.rank::world]  # this rank's accumulation micro-batches
            step_loss = torch.zeros((), device=device)
            for i, part in enumerate(mine):
                if len(part) == 0:
                    continue
                batch = collate_padded(train_examples, part, pad_to, args.pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                sync = i == len(mine) - 1 or world == 1
                with (nullcontext() if sync else train_model.no_sync()), autocast:
                    loss = loss_fn(train_model, batch)
                    # Weight by share of the global batch; DDP divides by world size, so undo that.
                    scaled = loss * (len(part) * world / len(indices))
                scaled.backward()
                step_loss += loss.detach() * len(part) / len(indices)
            if world > 1:
                dist.all_reduce(step_loss)
                for param in aux_params:  # outside DDP: average by hand, as DDP does for the model
                    if param.grad is None:
                        param.grad = torch.zeros_like(param)
                    dist.all_reduce(param.grad)
                    param.grad /= world
            if args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([*model.parameters(), *aux_params], args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            state["step"] += 1
            state["batch_in_epoch"] += 1
            state["examples_seen"] += len(indices)
            state["train_seconds"] += time.perf_counter() - step_start
            window_loss += step_loss.item()
            window_examples += len(indices)
            bar.update(1)
            if state["step"] % args.log_every == 0 or state["step"] == total_steps:
                elapsed = time.perf_counter() - window_start
                steps_in_window = (state["step"] - 1) % args.log_every + 1
                record = {"step": state["step"], "epoch": state["epoch"],
                          "loss": round(window_loss / steps_in_window, 5),
                          "lr": scheduler.get_last_lr()[0],
                          "examples_per_second": round(window_examples / max(elapsed, 1e-9), 2)}
                log(record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{record['examples_per_second']:.1f}")
                window_loss, window_examples, window_start = 0.0, 0, time.perf_counter()

            end_of_epoch = state["batch_in_epoch"] == len(batches)
            due_eval = (state["step"] % args.eval_every == 0) if args.eval_every else end_of_epoch
            if due_eval or state["step"] == total_steps:
                stopped_early = run_eval()
                if args.save_every is None:
                    save_checkpoint()
            if args.save_every and state["step"] % args.save_every == 0:
                save_checkpoint()
            if stopped_early:
                break
        if state["batch_in_epoch"] >= len(batches):
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    bar.close()
    if state.get("last_checkpoint_step") != state["step"]:
        save_checkpoint()  # the final state, for resume and for inspection
    if val_examples is None or len(val_examples) == 0:
        if is_main:
            model.save_pretrained(output_dir)  # nothing to select on: the last weights are the model
    result = TrainResult(best_metrics=state["best_metrics"], final_step=state["step"],
                         train_seconds=state["train_seconds"], examples_seen=state["examples_seen"],
                         stopped_early=stopped_early)
    log({"summary": True, "final_step": result.final_step, "train_seconds": round(result.train_seconds, 2),
         "examples_per_second": round(result.examples_per_second, 2), "best": result.best_metrics,
         "stopped_early": stopped_early})
    return result
