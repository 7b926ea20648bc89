"""Hugging Face BERT / RoBERTa / BigBird checkpoints -> sdbert config and weights.

Our parameter names are BERT's, so the conversion is a handful of renames:

* RoBERTa keeps its encoder under `roberta.` and offsets positions by `pad_token_id + 1` (the
  first rows of its table are never used for real tokens): we drop those rows so positions start
  at 0, as in BERT.
* RoBERTa and BigBird classification heads are `classifier.dense -> act -> classifier.out_proj`;
  that is our `bert.pooler.dense -> pooler_activation -> classifier` (BigBird's head uses its
  `hidden_act`, RoBERTa's `tanh`). BigBird's own pooler is a bare `bert.pooler` Linear + tanh: it
  becomes ours when there is no classification head (`BigBirdModel`, `BigBirdForPreTraining`).
* Old `pytorch_model.bin` files name LayerNorm parameters `gamma` / `beta`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from sdbert.config import SDBertConfig
from sdbert.errors import CheckpointError

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "big_bird")

_SHARED_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "layer_norm_eps", "initializer_range", "pad_token_id", "classifier_dropout",
)


def config_from_hf(hf: dict[str, Any]) -> SDBertConfig:
    """Map a Hugging Face `config.json` (as a dict) to an `SDBertConfig`."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"model_type {model_type!r} is not supported "
                              f"(expected one of {', '.join(SUPPORTED_MODEL_TYPES)} or sdbert)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
    if hf.get("rescale_embeddings", False):
        raise CheckpointError("BigBird checkpoints with rescale_embeddings=True are not supported")
    fields = {k: hf[k] for k in _SHARED_FIELDS if hf.get(k) is not None}  # null = our default
    id2label = hf.get("id2label") or {i: f"LABEL_{i}" for i in range(hf.get("num_labels", 2))}
    fields["id2label"] = {int(k): v for k, v in id2label.items()}
    fields["num_labels"] = len(fields["id2label"])
    fields["source_model_type"] = model_type
    fields["attention_type"] = "full"
    if model_type == "roberta":
        fields["max_position_embeddings"] = hf.get("max_position_embeddings", 514) - _roberta_offset(hf)
    if model_type == "big_bird":
        fields["attention_type"] = "block_sparse" if hf.get("attention_type") == "block_sparse" else "full"
        fields["block_size"] = hf.get("block_size", 64)
        fields["num_random_blocks"] = hf.get("num_random_blocks", 3)
    return SDBertConfig(**fields)


def state_dict_from_hf(state: dict[str, torch.Tensor], hf: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a Hugging Face state dict to ours. Returns it and the pooler activation to use."""
    model_type = hf["model_type"]
    prefix = {"bert": "bert.", "roberta": "roberta.", "big_bird": "bert."}[model_type]
    bare = "embeddings.word_embeddings.weight" in state  # saved from BertModel & co., no prefix
    out: dict[str, torch.Tensor] = {}
    dropped = []
    for name, tensor in state.items():
        if name.endswith(("position_ids", "token_type_ids")):
            continue  # buffers, not weights
        if bare:
            name = prefix + name
        if ".LayerNorm." in name and name.endswith((".gamma", ".beta")):  # TF-era .bin files (bert-base)
            stem, _, old = name.rpartition(".")
            name = f"{stem}.{'weight' if old == 'gamma' else 'bias'}"
        if name.startswith(prefix):
            out["bert." + name[len(prefix):]] = tensor
        elif name.startswith("classifier."):
            out[name] = tensor
        else:
            dropped.append(name)
    if dropped:
        logger.info("ignored %d weights that a classifier does not use (e.g. %s)", len(dropped), dropped[0])

    if model_type == "big_bird":  # BigBird's pooler is a bare Linear (+ tanh): `bert.pooler.weight`
        for part in ("weight", "bias"):
            if f"bert.pooler.{part}" in out:
                out[f"bert.pooler.dense.{part}"] = out.pop(f"bert.pooler.{part}")

    pooler_activation = "tanh"
    if "classifier.dense.weight" in out:  # RoBERTa / BigBird classification head replaces the pooler
        for part in ("weight", "bias"):
            out[f"bert.pooler.dense.{part}"] = out.pop(f"classifier.dense.{part}")
            out[f"classifier.{part}"] = out.pop(f"classifier.out_proj.{part}")
        if model_type == "big_bird":
            pooler_activation = hf.get("hidden_act", "gelu_new")
    key = "bert.embeddings.position_embeddings.weight"
    if model_type == "roberta" and key in out:  # else the loader reports the missing table
        out[key] = out[key][_roberta_offset(hf):]
    if model_type == "big_bird" and not hf.get("use_bias", True):
        hidden = hf["hidden_size"]
        for layer in range(hf["num_hidden_layers"]):
            for proj in ("query", "key", "value"):
                out.setdefault(f"bert.encoder.layer.{layer}.attention.self.{proj}.bias", torch.zeros(hidden))
    return out, pooler_activation


def _roberta_offset(hf: dict[str, Any]) -> int:
    """Rows of a RoBERTa position table before the first real token's: `pad_token_id + 1`."""
    pad = hf.get("pad_token_id")
    return (1 if pad is None else pad) + 1


def extend_positions(table: torch.Tensor, length: int) -> torch.Tensor:
    """Tile a learned position table to `length` rows (as BigBird and Longformer did from BERT)."""
    old = table.shape[0]
    if length <= old:
        return table[:length].clone()
    repeats = -(-length // old)
    return table.repeat(repeats, 1)[:length].clone()
