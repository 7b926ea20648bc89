"""A classifier as a user holds it: the model, its tokenizer and the settings it was trained with.

    clf = Classifier.from_pretrained("runs/student")     # ours, an ONNX export, or a HF folder
    clf(["a wonderful film", "dull"])                    # [{"label", "score", "probabilities"}, ...]
    clf.save_pretrained("copy")                          # config.json, weights, tokenizer.json

The model's config holds its architecture; how a text becomes token ids (tokens per text,
truncation) is `InferenceSettings`. Both live in the folder's `config.json` (the settings as its
`max_length` and `truncation` keys), so folders keep one format whichever object reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdbert.checkpoint import read_inference_settings
from sdbert.config import InferenceSettings
from sdbert.data import encode_dataset
from sdbert.data.tokenization import encode, load_tokenizer
from sdbert.errors import CheckpointError, ConfigError
from sdbert.hub import resolve_model_dir
from sdbert.inference import predict_logits
from sdbert.model import SDBertForSequenceClassification
from sdbert.onnx_runtime import OnnxClassifier, is_onnx_model
from sdbert.precision import PrecisionChoice, resolve_precision


@dataclass
class Classifier:
    """Text in, labels out: a model with the tokenizer and settings it was trained with."""

    model: Any
    """an `SDBertForSequenceClassification` or an `OnnxClassifier`: `model(ids, attention_mask=m).logits`"""
    tokenizer: Any
    """a `tokenizers.Tokenizer` without truncation or padding of its own (ours decide those)"""
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    precision: str | PrecisionChoice = "fp32"
    """the format `logits` and `__call__` run in: fp32, bf16, or auto (resolved once, on first use)"""

    @property
    def config(self):
        """The model's `SDBertConfig`: its architecture and labels."""
        return self.model.config

    @property
    def backend(self) -> str:
        return getattr(self.model, "backend", "torch")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, backend: str = "auto", threads: int | None = None,
                        revision: str | None = None, precision: str = "fp32") -> Classifier:
        """The classifier in `path` (a local folder or file, or a hub name `org/name` at `revision`): ONNX when
        it holds `model.onnx` (or is an `.onnx` file) or `backend="onnx"`, else the PyTorch model folder in
        eval mode. It must have a tokenizer (`tokenizer.json`, or a `spiece.model` / `vocab.txt` beside a
        Hugging Face model). `precision` (fp32, bf16 or auto) is the format it predicts in."""
        if backend not in ("auto", "torch", "onnx"):
            raise CheckpointError(f"backend must be auto, torch or onnx, got {backend!r}")
        path = resolve_model_dir(path, revision=revision)
        if backend == "onnx" or (backend == "auto" and is_onnx_model(path)):
            model = OnnxClassifier.from_pretrained(path, threads=threads)
            folder = model.path.parent
        else:
            if threads:
                torch.set_num_threads(threads)
            model, folder = SDBertForSequenceClassification.from_pretrained(path).eval(), Path(path)

        return cls(model, load_tokenizer(folder), read_inference_settings(folder), precision)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """The model folder: `config.json` (architecture and settings), weights and `tokenizer.json`."""
        if self.backend != "torch":
            raise ConfigError("only a PyTorch classifier can be saved; an ONNX one is written by `sdbert export`")
        self.model.save_pretrained(path, tokenizer=self.tokenizer, settings=self.settings)

    def max_length(self, requested: int | None = None) -> int:
        """Tokens per text: `requested`, else the trained length, within the model's positions."""
        return self.settings.tokens_per_text(self.config.max_position_embeddings, requested)

    def encode(self, texts: Sequence[str], *, max_length: int | None = None, truncation: str | None = None,
               full_lengths: list[int] | None = None) -> list[list[int]]:
        """Token ids per text, special tokens included, cut as the model was trained unless told otherwise;
        `full_lengths`, when given, receives each text's length before the cut."""
        return encode(self.tokenizer, list(texts), self.max_length(max_length), truncation or self.settings.truncation,
                      full_lengths=full_lengths)

    def encode_dataset(self, dataset, *, max_length: int | None = None, truncation: str | None = None,
                       progress: bool | None = None):
        """A `TextDataset` as the `EncodedDataset` training and evaluation read, cut like `encode`."""
        return encode_dataset(self.tokenizer, dataset, self.max_length(max_length),
                              truncation or self.settings.truncation, progress=progress)

    def logits(self, ids: Sequence[Sequence[int]], *, batch_size: int = 32, progress: bool = False,
               desc: str = "predict") -> torch.Tensor:
        """Logits `(N, num_labels)` of token-id lists, in their order (see `inference.predict_logits`)."""
        return predict_logits(self.model, ids, batch_size=batch_size, progress=progress, desc=desc,
                              precision=self.resolved_precision())

    def resolved_precision(self) -> PrecisionChoice:
        """The format this classifier predicts in (`auto` measured once, logged once)."""
        if not isinstance(self.precision, PrecisionChoice):
            device = next(self.model.parameters()).device if self.backend == "torch" else "cpu"
            self.precision = resolve_precision(self.precision if self.backend == "torch" else "fp32", device)
        return self.precision

    def __call__(self, texts: Sequence[str], *, max_length: int | None = None, batch_size: int = 32) -> list[dict]:
        """`[{"label", "score", "probabilities": {label: p}, "truncated": bool}]` per text; `truncated` says the
        text was longer than the model reads, so part of it was not seen."""
        full_lengths: list[int] = []
        ids = self.encode(texts, max_length=max_length, full_lengths=full_lengths)
        probabilities = self.logits(ids, batch_size=batch_size).softmax(-1)
        labels = self.config.id2label
        results = []
        for probs, kept, full in zip(probabilities.tolist(), ids, full_lengths, strict=True):
            best = max(range(len(probs)), key=probs.__getitem__)
            results.append({"label": labels[best], "score": probs[best], "truncated": full > len(kept),
                            "probabilities": {labels[i]: p for i, p in enumerate(probs)}})
        return results

