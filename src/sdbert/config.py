"""Typed model configuration with BERT/BigBird field names and a JSON round-trip."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdbert.errors import ConfigError


def dense_fallback_blocks(num_random_blocks: int) -> int:
    """Sequences of at most this many blocks run dense attention: every query block would attend the
    2 global blocks, a window of 3 and `r` random blocks on each side of its window, i.e. all of them."""
    return 5 + 2 * num_random_blocks

AttentionType = Literal["block_sparse", "full"]
# Which tokens a text longer than the model's length keeps (`sdbert.data.tokenization` applies it).
TRUNCATIONS: tuple[str, ...] = ("head", "tail", "head+tail")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "tanh", "silu")


@dataclass
class SDBertConfig:
    """Architecture of an SDBERT encoder; field names follow Hugging Face BERT/BigBird."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 4096
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    embedding_size: int | None = None
    """ALBERT-style factorised embeddings: word, position and type tables this wide, summed, then projected
    to `hidden_size` (None: tables at `hidden_size`, no projection, BERT's layout)"""
    attention_type: AttentionType = "block_sparse"
    """"block_sparse": BigBird's ITC pattern (global + window + random blocks); "full": dense SDPA"""
    block_size: int = 64
    """BigBird's default; sequences are padded to a multiple of it inside the kernel"""
    num_random_blocks: int = 3
    attention_seed: int = 0
    """seed of the fixed random-block pattern; layer `i` uses `attention_seed + i`"""
    resample_random_blocks: bool = False
    """False: each layer keeps one random pattern for training and evaluation (reproducible); True: a new
    pattern at every training step (BigBird's original behaviour)"""
    pooler_activation: str = "tanh"
    """between pooler dense and classifier: "tanh" for BERT/RoBERTa heads; BigBird's head uses hidden_act"""
    classifier_pooling: str = "cls"
    """what the pooler reads: the first token ("cls", BERT's) or the mean over real tokens ("mean", what
    sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained to produce)"""
    classifier_dropout: float | None = None
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=lambda: {0: "neg", 1: "pos"})
    problem_type: str = "single_label_classification"
    gradient_checkpointing: bool = False
    source_model_type: str | None = None
    """where the weights came from (e.g. "bert", "roberta", "big_bird"); informational"""
    init_checkpoint: str | None = None
    """the folder these weights were fine-tuned from (set by `train --init`); `distill --init pretrained`
    starts the student from it, so no fine-tuned weight reaches the student"""

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        checks = [
            (self.vocab_size > 0, "vocab_size must be positive"),
            (self.hidden_size > 0, "hidden_size must be positive"),
            (self.num_hidden_layers > 0, "num_hidden_layers must be positive"),
            (self.num_attention_heads > 0, "num_attention_heads must be positive"),
            (
                self.hidden_size % self.num_attention_heads == 0,
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}",
            ),
            (self.intermediate_size > 0, "intermediate_size must be positive"),
            (self.max_position_embeddings > 0, "max_position_embeddings must be positive"),
            (self.type_vocab_size > 0, "type_vocab_size must be positive"),
            (self.embedding_size is None or 0 < self.embedding_size <= self.hidden_size,
             f"embedding_size must be in [1, hidden_size {self.hidden_size}], got {self.embedding_size}"),
            (self.attention_type in ("block_sparse", "full"),
             f"attention_type must be 'block_sparse' or 'full', got {self.attention_type!r}"),
            (self.block_size > 0, "block_size must be positive"),
            (self.num_random_blocks >= 0, "num_random_blocks must be >= 0"),
            (self.num_labels > 0, "num_labels must be positive"),
            (len(self.id2label) == self.num_labels,
             f"id2label has {len(self.id2label)} entries but num_labels is {self.num_labels}"),
            (self.hidden_act in ACTIVATIONS, f"hidden_act must be one of {ACTIVATIONS}"),
            (self.pooler_activation in ACTIVATIONS, f"pooler_activation must be one of {ACTIVATIONS}"),
            (self.classifier_pooling in ("cls", "mean"), "classifier_pooling must be 'cls' or 'mean'"),
            (0.0 <= self.hidden_dropout_prob < 1.0, "hidden_dropout_prob must be in [0, 1)"),
            (0.0 <= self.attention_probs_dropout_prob < 1.0, "attention_probs_dropout_prob must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}

    @property
    def dense_fallback_length(self) -> int:
        """Sequences of at most this many tokens use dense attention (too short to be sparse)."""
        return dense_fallback_blocks(self.num_random_blocks) * self.block_size

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["model_type"] = "sdbert"
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SDBertConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path: str | Path) -> SDBertConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if data.get("model_type") != "sdbert":
            raise ConfigError(f"{path} is not an sdbert config (model_type={data.get('model_type')!r})")
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise ConfigError(f"invalid config {path}: {exc}") from exc

    def replace(self, **changes: Any) -> SDBertConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class InferenceSettings:
    """How texts become token ids for a model: what it was trained with, the default of evaluate,
    predict and serve."""

    max_length: int | None = None
    """tokens per text, special tokens included (None: the model's position limit)"""
    truncation: str = "head+tail"
    """which tokens a longer text keeps: head, tail or head+tail (`sdbert.data.tokenization`)"""

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATIONS:
            raise ConfigError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {self.truncation!r}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"max_length must be positive, got {self.max_length}")

    @classmethod
    def from_config_dict(cls, data: dict[str, Any]) -> InferenceSettings:
        """The settings recorded in our `config.json`; a Hugging Face folder's gets the defaults (its
        `max_length`, where present, is a generation setting)."""
        if data.get("model_type") != "sdbert":
            return cls()
        return cls(max_length=data.get("max_length"), truncation=data.get("truncation") or cls.truncation)

    def to_config_dict(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "truncation": self.truncation}

    def tokens_per_text(self, positions: int, requested: int | None = None) -> int:
        """`requested` (at most `positions`), else the trained length, else all `positions`."""
        if requested is not None and requested > positions:
            raise ConfigError(f"--max-length {requested} exceeds the model's {positions} positions")
        return min(requested or self.max_length or positions, positions)
