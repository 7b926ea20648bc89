"""An onnxruntime-backed classifier that stands in for `SDBertForSequenceClassification` at inference.

`OnnxClassifier.from_pretrained(path)` reads a folder written by `sdbert export --format onnx`
(`model.onnx`, our `config.json`, `tokenizer.json`). Calling it like the PyTorch model,
`clf(input_ids, attention_mask=mask).logits`, runs the session on CPU; `config`,
`num_parameters()`, `eval()` and `train(False)` behave as they do on the PyTorch model, so a
`sdbert.classifier.Classifier` (with the folder's tokenizer) and `sdbert bench model` take either.
`quantization` says whether the graph holds dynamic int8 weights (`export --quantize int8`).
The graph pads to a block multiple itself; callers pass any length up to `max_position_embeddings`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sdbert.config import SDBertConfig
from sdbert.errors import CheckpointError, ConfigError, require

ONNX_NAME = "model.onnx"


def create_session(path: str | os.PathLike[str], *, threads: int | None = None):
    """An onnxruntime CPU session for `path`; a one-line ConfigError when onnxruntime is missing."""
    ort = require("onnxruntime", "ONNX inference")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the optimiser's notes are not the user's concern
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types from C++
        raise CheckpointError(f"cannot load {path}: {str(exc).strip().splitlines()[0]}") from exc


def is_onnx_model(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an ONNX model folder (has `model.onnx`) or an `.onnx` file."""
    path = Path(path)
    return (path.is_dir() and (path / ONNX_NAME).is_file()) or (path.is_file() and path.suffix == ".onnx")


class _Output:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class OnnxClassifier:
    """The inference interface of `SDBertForSequenceClassification`, run by onnxruntime."""

    backend = "onnxruntime"

    def __init__(self, session, config: SDBertConfig, path: str | os.PathLike[str] | None = None):
        self.session = session
        self.config = config
        self.path = None if path is None else Path(path)
        self.training = False
        names = {i.name for i in session.get_inputs()}
        if names != {"input_ids", "attention_mask"}:
            raise CheckpointError(f"the ONNX graph has inputs {sorted(names)}, expected input_ids and attention_mask")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, threads: int | None = None) -> OnnxClassifier:
        """Load an ONNX folder (`model.onnx` + `config.json`), or an `.onnx` file whose folder holds them."""
        path = Path(path)
        folder, onnx_file = (path, path / ONNX_NAME) if path.is_dir() else (path.parent, path)
        if not onnx_file.is_file():
            raise CheckpointError(f"{path} has no {ONNX_NAME}")
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{folder} has no config.json beside the ONNX model")
        config = SDBertConfig.from_json_file(folder / "config.json")
        return cls(create_session(onnx_file, threads=threads), config, onnx_file)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> _Output:
        if input_ids.shape[-1] > self.config.max_position_embeddings:  # the graph would index out of range
            raise ConfigError(f"input has {input_ids.shape[-1]} tokens but the model has "
                             f"{self.config.max_position_embeddings} positions")
        ids = np.ascontiguousarray(input_ids.cpu().numpy(), dtype=np.int64)
        mask = (np.ones_like(ids) if attention_mask is None
                else np.ascontiguousarray(attention_mask.cpu().numpy(), dtype=np.int64))
        (logits,) = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        return _Output(torch.from_numpy(logits))

    def num_parameters(self, trainable_only: bool = False) -> int:
        """The PyTorch model's parameter count, recorded in the graph's metadata at export (0 if absent)."""
        metadata = self.session.get_modelmeta().custom_metadata_map
        return int(metadata.get("sdbert.parameters", 0))

    @property
    def quantization(self) -> str | None:
        """`"int8-dynamic"` for a graph written by `export --quantize int8`, else None (fp32)."""
        return self.session.get_modelmeta().custom_metadata_map.get("sdbert.quantization")

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        if mode:
            raise ConfigError("an ONNX model cannot be trained")
        return self
