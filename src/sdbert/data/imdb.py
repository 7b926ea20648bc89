"""The IMDb review corpus (Maas et al. 2011), read from its archive or an extracted folder.

The archive is read in one streaming pass (`tarfile` mode `r|` over a `gzip.GzipFile`: the
file is decompressed once, front to back, nothing is extracted to disk), collecting every
requested split on the way, so asking for train and test together costs one pass, not two.
`GzipFile` rather than tarfile's own `r|gz`, because only it notices a truncated download.
Reviews are ordered by member name, which makes the order, and so the fingerprint and any seeded
split, the same on every machine and the same for the archive and for its extracted folder.

Layout: `aclImdb/{train,test}/{neg,pos}/<id>_<rating>.txt` and `aclImdb/train/unsup/*.txt`;
the `unsup` split is the 50,000 unlabelled training reviews. Labels: neg = 0, pos = 1.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from sdbert.data.dataset import TextDataset, make_dataset
from sdbert.data.progress import progress_bar
from sdbert.data.validate import DecodeErrors, check_texts
from sdbert.errors import DataError

logger = logging.getLogger(__name__)

IMDB_ID2LABEL = {0: "neg", 1: "pos"}
IMDB_SPLITS = ("train", "test", "unsup")
# split -> (directory under aclImdb/, label directory, label id or None when unlabelled)
_SPLIT_DIRS: dict[str, list[tuple[str, str, int | None]]] = {
    "train": [("train", "neg", 0), ("train", "pos", 1)],
    "test": [("test", "neg", 0), ("test", "pos", 1)],
    "unsup": [("train", "unsup", None)],
}
_BUFFER = 1 << 20
_MEMBER_SPLIT = {(d, sub): (split, label) for split, dirs in _SPLIT_DIRS.items() for d, sub, label in dirs}


def check_imdb_splits(splits: Iterable[str], source: str | os.PathLike[str]) -> list[str]:
    """The requested splits without duplicates, or a DataError naming the unknown one."""
    splits = list(dict.fromkeys(splits))
    for split in splits:
        if split not in _SPLIT_DIRS:
            raise DataError(f"unknown split {split!r} for IMDb source {source}; choose from {', '.join(IMDB_SPLITS)}")
    return splits


def _classify(name: str) -> tuple[str, int | None] | None:
    """(split, label) of an archive member path like 'aclImdb/train/pos/12_8.txt', else None."""
    parts = name.split("/")
    if len(parts) < 3 or not parts[-1].endswith(".txt") or parts[-1].startswith("."):
        return None
    return _MEMBER_SPLIT.get((parts[-3], parts[-2]))


class _CountingReader:
    """A read-only file wrapper that advances a progress bar by compressed bytes consumed."""

    def __init__(self, raw, bar) -> None:
        self._raw = raw
        self._bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._bar.update(len(data))
        return data


def read_imdb_archive(
    path: str | os.PathLike[str],
    splits: Iterable[str],
    *,
    errors: DecodeErrors = "strict",
    progress: bool | None = None,
) -> dict[str, TextDataset]:
    """Every requested split of the IMDb tarball, read in a single streaming pass."""
    path = Path(path)
    wanted = check_imdb_splits(splits, path)
    try:
        found = _scan_archive(path, wanted, progress)
    except FileNotFoundError as exc:
        raise DataError(f"missing file: {path}") from exc
    except (PermissionError, IsADirectoryError) as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"corrupt or truncated archive {path}: {exc}") from exc
    result = {}
    for split in wanted:
        if not found[split]:
            dirs = ", ".join(f"aclImdb/{d}/{sub}/" for d, sub, _ in _SPLIT_DIRS[split])
            raise DataError(f"archive {path} has no reviews for split {split!r} (expected {dirs}); is it IMDb?")
        found[split].sort(key=lambda item: item[0])
        result[split] = _build(found[split], split, path, errors)
    return result


def _scan_archive(
    path: Path, wanted: list[str], progress: bool | None
) -> dict[str, list[tuple[str, bytes, int | None]]]:
    """split -> [(member name, raw bytes, label)] from one front-to-back pass over the archive."""
    found: dict[str, list[tuple[str, bytes, int | None]]] = {s: [] for s in wanted}
    size = path.stat().st_size
    with (
        open(path, "rb") as raw,
        progress_bar(
            progress, total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"reading {path.name}"
        ) as bar,
    ):
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        counted = _CountingReader(raw, bar)
        # tarfile's own stream reader ends quietly at a truncated gzip stream, which would drop
        # reviews without a word; GzipFile raises EOFError there and checks the CRC at the end.
        stream = io.BufferedReader(gzip.GzipFile(fileobj=counted), _BUFFER) if gzipped else counted
        with tarfile.open(fileobj=stream, mode="r|" if gzipped else "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key = _classify(member.name)
                if key is None or key[0] not in found:
                    continue
                f = tar.extractfile(member)
                found[key[0]].append((member.name, f.read() if f else b"", key[1]))
        # tarfile stops at its end-of-archive blocks; reading on to the end of the gzip stream
        # makes GzipFile verify its length and CRC, so a damaged tail is caught too.
        while stream.read(_BUFFER):
            pass
    return found


def find_imdb_root(folder: str | os.PathLike[str]) -> Path | None:
    """The `aclImdb` directory at or directly inside `folder`, recognised by train/ and test/."""
    folder = Path(folder)
    for candidate in (folder, folder / "aclImdb"):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def read_imdb_folder(
    folder: str | os.PathLike[str],
    splits: Iterable[str],
    *,
    errors: DecodeErrors = "strict",
    progress: bool | None = None,
) -> dict[str, TextDataset]:
    """Requested splits of an extracted `aclImdb/` folder (or the folder that contains it)."""
    root = find_imdb_root(folder)
    if root is None:
        raise DataError(f"{folder} is not an extracted IMDb folder (no train/ and test/ inside)")
    wanted = check_imdb_splits(splits, folder)
    result = {}
    for split in wanted:
        files: list[tuple[str, Path, int | None]] = []
        for d, sub, label in _SPLIT_DIRS[split]:
            directory = root / d / sub
            if not directory.is_dir():
                raise DataError(f"IMDb folder {root} has no {d}/{sub}/ directory for split {split!r}")
            files += [(f"{root.name}/{d}/{sub}/{p.name}", p, label) for p in directory.glob("*.txt")]
        if not files:
            raise DataError(f"IMDb folder {root} has no reviews for split {split!r}")
        # The same key the archive reader sorts by, so both give one order and one fingerprint.
        files.sort(key=lambda item: item[0])
        try:
            items = [
                (name, p.read_bytes(), label)
                for name, p, label in progress_bar(progress, iterable=files, desc=f"reading {split}", unit="file")
            ]
        except OSError as exc:
            raise DataError(f"cannot read {exc.filename}: {exc.strerror}") from exc
        result[split] = _build(items, split, root, errors)
    return result


def _build(items: list[tuple[str, bytes, int | None]], split: str, source: Path, errors: DecodeErrors) -> TextDataset:
    names = [name for name, _, _ in items]
    texts = [data.decode("utf-8", "surrogateescape") for _, data, _ in items]
    texts = check_texts(texts, names.__getitem__, f"{source} ({split})", errors)
    labels = None if split == "unsup" else [label for _, _, label in items]
    logger.info("read %d %s reviews from %s", len(texts), split, source)
    return make_dataset(texts, labels, dict(IMDB_ID2LABEL))
