"""Batched inference on token ids, for either backend (`SDBertForSequenceClassification` or `OnnxClassifier`).

`predict_logits` batches token ids so that a text's logits never depend on the other texts it is
batched with: a block-sparse model's random-block pattern is a function of the padded block count,
so texts are grouped by their own block count (and padded within it, which changes nothing for the
real tokens). Text in, labels out is `sdbert.classifier.Classifier`, which calls it.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdbert.precision import PrecisionChoice, resolve_precision


def batch_groups(lengths: Sequence[int], *, batch_size: int, block_size: int | None) -> list[list[int]]:
    """Indices grouped into batches of at most `batch_size`; with `block_size`, every batch holds
    texts of one block count `ceil(length / block_size)`. Shortest first."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if block_size is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    buckets: dict[int, list[int]] = defaultdict(list)
    for i in order:
        buckets[math.ceil(lengths[i] / block_size)].append(i)
    return [bucket[i : i + batch_size] for _, bucket in sorted(buckets.items())
            for i in range(0, len(bucket), batch_size)]


def predict_logits(model, ids: Sequence[Sequence[int]], *, batch_size: int = 32, progress: bool = False,
                   desc: str = "predict", precision: str | PrecisionChoice | None = "fp32") -> torch.Tensor:
    """Logits `(N, num_labels)` of token-id lists, in their order (float32, CPU). `precision` (fp32, bf16,
    auto or a resolved `PrecisionChoice`) sets the autocast of a PyTorch model; ONNX runs as exported."""
    config = model.config
    out = torch.empty(len(ids), config.num_labels)
    sparse = config.attention_type == "block_sparse"
    lengths = [len(x) for x in ids]
    groups = batch_groups(lengths, batch_size=batch_size, block_size=config.block_size if sparse else None)
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    autocast = resolve_precision(precision, device, log=False).autocast(device) \
        if isinstance(model, torch.nn.Module) else nullcontext()
    for group in tqdm(groups, desc=desc, disable=not progress, leave=False, unit="batch"):
        width = max(len(ids[i]) for i in group)
        if sparse:
            width = math.ceil(width / config.block_size) * config.block_size
        width = min(width, config.max_position_embeddings)
        input_ids = torch.full((len(group), width), config.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for row, i in enumerate(group):
            input_ids[row, : len(ids[i])] = torch.as_tensor(ids[i], dtype=torch.long)
            mask[row, : len(ids[i])] = 1
        with torch.inference_mode(), autocast:
            logits = model(input_ids.to(device), attention_mask=mask.to(device)).logits
        out[torch.as_tensor(group)] = logits.float().cpu()
    return out


def model_name(path: str | os.PathLike[str]) -> str:
    """A model's short name: its folder's, or for a hub name or hub cache snapshot the repository's."""
    path = Path(path)
    if not path.exists():  # a hub name: org/name
        return path.name
    path = path.resolve()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.name
