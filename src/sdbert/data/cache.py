"""Where cached downloads and token arrays live, and how files get there safely.

Everything in the cache is written to a temporary name in the same directory and moved into
place with `os.replace`, which is atomic on POSIX and Windows: a killed run, or two DDP ranks
writing the same entry, leave either the old complete file or the new complete file, never half
of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

CACHE_ENV = "SDBERT_CACHE"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """`override`, else `$SDBERT_CACHE`, else `~/.cache/sdbert` (not created here)."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sdbert"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; a cache may be shared by users, so give it a regular file's mode.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
