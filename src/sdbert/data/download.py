"""Download the official IMDb archive once into the cache, verified before it is trusted.

The bytes go to a temporary file beside the final name while being hashed; only an archive with
the published size and SHA-256 is moved into place. A failed or interrupted download therefore
leaves nothing behind, and a file in the cache under the final name is always a verified one
(the cache hit checks its size, which is cheap, rather than rehashing 84 MB on every run).
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from sdbert.data.cache import cache_dir as default_cache_dir
from sdbert.data.progress import progress_bar
from sdbert.errors import DataError
from sdbert.io import atomic_open

logger = logging.getLogger(__name__)

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
IMDB_SIZE = 84_125_825
_CHUNK = 1 << 20


def download_imdb(
    *,
    url: str = IMDB_URL,
    sha256: str = IMDB_SHA256,
    size: int | None = IMDB_SIZE,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """Path of the cached IMDb archive, downloading and verifying it first if needed.

    `url`, `sha256` and `size` are arguments so a mirror (or a test server) can stand in for the
    official host; `size=None` skips the size check.
    """
    directory = default_cache_dir(cache_dir)
    filename = Path(urllib.parse.urlparse(url).path).name or "download"
    target = directory / filename
    if target.is_file():
        if size is None or target.stat().st_size == size:
            logger.info("using cached %s", target)
            return target
        logger.warning("cached %s has %d bytes, expected %d; downloading again", target, target.stat().st_size, size)
    with atomic_open(target, "wb") as out:  # a failed check raises inside: nothing half-written is kept
        digest, received = _fetch(url, out, expected_size=size, progress=progress, timeout=timeout)
        if size is not None and received != size:
            raise DataError(f"download of {url} has {received} bytes, expected {size}; nothing was saved")
        if digest != sha256.lower():
            raise DataError(
                f"download of {url} failed its checksum: expected sha256 {sha256}, got {digest}; nothing was saved"
            )
    logger.info("downloaded %s to %s", url, target)
    return target


def _fetch(url: str, out, *, expected_size: int | None, progress: bool | None, timeout: float) -> tuple[str, int]:
    """Stream `url` into `out`; returns (sha256 hex digest, byte count)."""
    h = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expected_size
            with progress_bar(
                progress,
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"downloading {Path(urllib.parse.urlparse(url).path).name}",
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"could not download {url}: {reason}") from exc
    return h.hexdigest(), received
