"""What both exports share: the result record, loading a folder to export, self-check probes and
the write-to-a-temporary-folder-then-rename that leaves nothing half-written behind.

Both exports write into a temporary folder beside the output and rename it into place, so a failed
export leaves nothing behind, and (by default) check their own result: the Hugging Face folder is
loaded back with `transformers` (custom code with `trust_remote_code=True`, on a dense and a
sparse length) and the ONNX file with onnxruntime, and the logits compared with ours (max abs diff
< 1e-4).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sdbert.checkpoint import read_inference_settings
from sdbert.config import SDBertConfig
from sdbert.data.tokenization import SENTENCEPIECE_NAME, load_tokenizer
from sdbert.errors import ConfigError
from sdbert.hub import resolve_model_dir
from sdbert.model import SDBertForSequenceClassification

TOLERANCE = 1e-4
# Tokens of real text in the self-check probes start here: ids 0-4 are [PAD], [UNK], [CLS], ... in
# our tokenizers, and a probe should look like text.
PROBE_MIN_ID = 5


@dataclass
class ExportResult:
    """What an export wrote and how well it matched the source model."""

    path: Path
    format: str
    architecture: str
    max_abs_diff: float | None = None
    quantization: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """where the export does not behave as sdbert does (printed on stderr by `sdbert export`)"""


def load_for_export(path: str | os.PathLike[str], *, revision: str | None = None):
    """`(model, tokenizer or None, settings)` of a model folder: what an export writes. A folder without a
    tokenizer still exports (its card and notes say what that leaves out)."""
    folder = resolve_model_dir(path, revision=revision)
    model = SDBertForSequenceClassification.from_pretrained(folder).eval()
    has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", SENTENCEPIECE_NAME, "vocab.txt"))
    return model, load_tokenizer(folder) if has_tokenizer else None, read_inference_settings(folder)


def probe_lengths(config: SDBertConfig) -> tuple[int, int]:
    """A length in the dense regime and one in the sparse regime (past the fallback, not a block
    multiple), both within the model's positions."""
    return (min(config.max_position_embeddings, 48),
            min(config.max_position_embeddings, config.dense_fallback_length + 2 * config.block_size + 5))


def probe_batch(config: SDBertConfig, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of two: `length` random tokens, and a shorter padded row (`(2, length)` int64 each)."""
    g = torch.Generator().manual_seed(seed)
    low = min(PROBE_MIN_ID, config.vocab_size - 1)
    ids = torch.randint(low, config.vocab_size, (2, length), generator=g)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, max(1, (2 * length) // 3):] = 0
    return ids.masked_fill(mask == 0, config.pad_token_id), mask


def torch_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(ids, attention_mask=mask).logits.float()
    finally:
        model.train(was_training)


def write_folder(out: Path, write, *, overwrite: bool) -> None:
    """Call `write(tmp)` on a fresh folder beside `out`, then move it onto `out`.

    The fresh folder has `out`'s own name (inside a private temporary parent): transformers caches
    the custom code of a local folder under the folder's name, so the self-check's load leaves the
    entry a later load of `out` reuses, not one per export."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    parent = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    tmp = parent / out.name
    try:
        tmp.mkdir()  # an ordinary folder (the umask's permissions), unlike mkdtemp's private one
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def require_extra(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{module} is not installed: pip install 'sdbert[{extra}]'") from None

