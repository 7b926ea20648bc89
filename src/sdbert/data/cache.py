"""Where cached downloads and token arrays live. Entries are written with `sdbert.io.atomic_open`,
so a killed run, or two DDP ranks writing the same entry, never leave half a file."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SDBERT_CACHE"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """`override`, else `$SDBERT_CACHE`, else `~/.cache/sdbert` (not created here)."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sdbert"
