"""Writing results: JSON replaced atomically, so a killed run never leaves a torn file."""

from __future__ import annotations

import json
from pathlib import Path

from sdbert.data.cache import atomic_write


def write_json(path: str | Path, data) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)
