"""Model names -> local folders: a local path as is, else a Hugging Face hub name (`org/name`) through
`huggingface_hub`'s cache.

    from sdbert.hub import resolve_model_dir

    resolve_model_dir("runs/teacher")                      # an existing folder: returned as is
    resolve_model_dir("google/bigbird-roberta-base")       # .../models--google--bigbird-roberta-base/snapshots/<commit>

The cache, `HF_HUB_CACHE` / `HF_HOME`, `HF_HUB_OFFLINE` and tokens are `huggingface_hub`'s own. Only the
files a model folder needs are fetched (config, weights, tokenizer), not other frameworks' weights; and
`pytorch_model.bin` only when the repository has no `model.safetensors`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from sdbert.errors import CheckpointError, ConfigError, SDBertError, require

# org/name as the hub spells it: letters, digits, `_`, `-`, `.`; no `--` or `..`; at most 96 per part.
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?!.*(--|\.\.)){_PART}/{_PART}$")
_FOLDER_FILES = ["*.json", "*.txt", "*.model", "model.safetensors", "model.onnx", "model.onnx.data",
                 "1_Pooling/config.json"]
_TORCH_WEIGHTS = "pytorch_model.bin"
logger = logging.getLogger(__name__)


class HubError(CheckpointError):
    """A hub name that cannot be had: not cached while offline, unknown, gated, or an unknown revision."""


def is_hub_id(name: str) -> bool:
    """Whether `name` could be a hub repository id (`org/name`)."""
    return bool(_HUB_ID.match(name))


def resolve_model_dir(name_or_path: str | os.PathLike[str], *, revision: str | None = None) -> Path:
    """The local folder (or file, e.g. `model.onnx`) that `name_or_path` names: an existing path as is,
    else the cached snapshot of the hub model `org/name` at `revision` (default: main), downloaded first
    unless `HF_HUB_OFFLINE` is set. One-line `SDBertError`s for everything a user can get wrong."""
    path = Path(name_or_path)
    if path.exists():
        if revision is not None:
            raise ConfigError(f"--revision {revision} applies to hub names, but {path} is a local path")
        return path
    name = str(name_or_path)
    if not is_hub_id(name) or looks_local(name):
        raise CheckpointError(f"model folder {path} does not exist")
    hub = require("huggingface_hub", f"loading the hub model {name} ({path} is not a local folder)")
    folder = _snapshot(hub, name, revision)
    logger.warning("sdbert: using hub model %s at commit %s (%s)", name, folder.name, folder)
    return folder


def looks_local(name: str) -> bool:
    """A path meant for this disk, never sent to the hub: it starts with `.`, `/` or `~`, or its first
    component exists here (a typo in `runs/studnet` must not fetch whatever is published as runs/studnet)."""
    first = Path(name).parts[0] if Path(name).parts else name
    return name.startswith((".", "/", "~")) or Path(first).exists()


def add_revision_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The `--revision` flag of commands that take a hub name."""
    parser.add_argument("--revision", metavar="REV",
                        help="branch, tag or commit of a hub model name (default: main)")


def resolve_flag(value: str | None, revision: str | None, flag: str) -> str | None:
    """A command's model flag as a local path (a string, as the workflows take it); None stays None."""
    if value is None:
        if revision is not None:
            raise ConfigError(f"--revision {revision} needs a hub name in {flag}")
        return None
    return str(resolve_model_dir(value, revision=revision))


def offline() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`), read now rather than when huggingface_hub was imported,
    so a variable the process sets for itself counts."""
    # optional extra [hub]: hub names only
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or value.strip().upper() in ("1", "ON", "YES", "TRUE")


def cache_dir() -> Path:
    """The hub cache in force now (`HF_HUB_CACHE`, else `HF_HOME`/hub, else huggingface_hub's default)."""
    # optional extra [hub]: hub names only
    from huggingface_hub import constants

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expandvars(os.environ[variable])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def _snapshot(hub, name: str, revision: str | None) -> Path:
    local_only, cache = offline(), cache_dir()
    try:
        folder = Path(hub.snapshot_download(name, revision=revision, cache_dir=cache, local_files_only=local_only,
                                            allow_patterns=_FOLDER_FILES))
        if not any((folder / f).exists() for f in ("model.safetensors", "model.onnx", _TORCH_WEIGHTS)):
            # Older repositories (google/bigbird-roberta-base) have only the pickled weights.
            folder = Path(hub.snapshot_download(name, revision=folder.name, cache_dir=cache,
                                                local_files_only=local_only, allow_patterns=[_TORCH_WEIGHTS]))
    except Exception as exc:  # huggingface_hub's errors (and httpx's) have no common base we can name
        if isinstance(exc, SDBertError):
            raise
        raise _hub_error(exc, name, revision, local_only, cache) from exc
    return folder


def _hub_error(exc: Exception, name: str, revision: str | None, local_only: bool, cache: Path) -> SDBertError:
    """One line for what went wrong with hub name `name`, and how to fix it."""
    # huggingface_hub.utils has exported these since long before `huggingface_hub.errors` existed
    # optional extra [hub]: hub names only
    from huggingface_hub.utils import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision}" if revision else ""
    if isinstance(exc, GatedRepoError):
        return HubError(f"hub model {name} is gated: accept its terms on the hub and log in (hf auth login)")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"{name} is neither a local folder nor a model on the Hugging Face hub (a private one "
                        "needs hf auth login)")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"hub model {name} has no revision {revision}")
    if isinstance(exc, LocalEntryNotFoundError):
        why = "HF_HUB_OFFLINE is set" if local_only else "the hub could not be reached"
        return HubError(f"{name}{at} is not a local folder and is not (fully) in the Hugging Face cache {cache}, and "
                        f"{why}: download it once with network access (the same command, or hf download {name}), "
                        "or pass a local folder")
    if isinstance(exc, HFValidationError):
        return CheckpointError(f"model folder {name} does not exist")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return HubError(f"cannot download hub model {name}{at}: {first_line}")
