"""Turn a user's `SRC` into a dataset split.

A source is one of:

- the IMDb archive, any `*.tar.gz`, `*.tgz` or `*.tar` file: splits `train`, `test`, `unsup`;
- an extracted `aclImdb/` folder (or the folder that contains it): the same splits;
- a single table file (`.csv`, `.jsonl`/`.ndjson`, `.parquet`/`.pq`): it holds one split,
  `train`; ask for `split=None` to mean "the whole file" whatever it is used for;
- a folder of table files, one per split, the file's stem naming the split: `train.csv`,
  `test.jsonl`, `validation.parquet`, ... (two files with the same stem are an error);
- the word `imdb` (unless a file of that name exists): the official archive, downloaded once
  into the cache and checksummed, see `download`.

With no source, `$SDBERT_DATA` names the default. String labels in table files are mapped to ids
by sorted name; pass `id2label` (the training split's, or a model's) when reading another split
so ids agree. Text and label column names are overridable for tables; IMDb ignores them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdbert.data.dataset import TextDataset
from sdbert.data.download import IMDB_SHA256, IMDB_SIZE, IMDB_URL, download_imdb
from sdbert.data.imdb import IMDB_SPLITS, find_imdb_root, read_imdb_archive, read_imdb_folder
from sdbert.data.tables import TABLE_SUFFIXES, read_table
from sdbert.data.validate import DecodeErrors
from sdbert.errors import DataError

DATA_ENV = "SDBERT_DATA"
SourceKind = Literal["imdb_archive", "imdb_folder", "table", "table_folder"]
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class Source:
    """A resolved data source: what kind it is and where it lives on disk."""

    kind: SourceKind
    path: Path

    def splits(self) -> list[str]:
        """The split names this source can provide."""
        if self.kind in ("imdb_archive", "imdb_folder"):
            return list(IMDB_SPLITS)
        if self.kind == "table":
            return ["train"]
        return sorted(split_files(self.path))


def split_files(folder: Path) -> dict[str, Path]:
    """split name -> file for a folder of table files (`train.csv`, `test.jsonl`, ...)."""
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in TABLE_SUFFIXES or p.name.startswith("."):
            continue
        split = p.stem.lower()
        if split in files:
            raise DataError(f"{folder} has two files for split {split!r}: {files[split].name} and {p.name}")
        files[split] = p
    return files


def resolve_source(
    src: str | os.PathLike[str] | Source | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    url: str = IMDB_URL,
    sha256: str = IMDB_SHA256,
    size: int | None = IMDB_SIZE,
    progress: bool | None = None,
) -> Source:
    """Classify `src` (default `$SDBERT_DATA`); `imdb` downloads the archive into the cache first."""
    if isinstance(src, Source):
        return src
    if src is None or str(src) == "":
        src = os.environ.get(DATA_ENV) or None
        if src is None:
            raise DataError(f"no data source given: pass one (--data) or set {DATA_ENV}")
    path = Path(src).expanduser()
    if str(src).lower() == "imdb" and not path.exists():
        archive = download_imdb(url=url, sha256=sha256, size=size, cache_dir=cache_dir, progress=progress)
        return Source("imdb_archive", archive)
    if not path.exists():
        raise DataError(f"missing file: {path}")
    if path.is_dir():
        if find_imdb_root(path) is not None:
            return Source("imdb_folder", path)
        if split_files(path):
            return Source("table_folder", path)
        raise DataError(
            f"{path} is neither an extracted IMDb folder nor a folder of split files (train.csv, test.csv, ...)"
        )
    name = path.name.lower()
    if name.endswith(_ARCHIVE_SUFFIXES):
        return Source("imdb_archive", path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return Source("table", path)
    raise DataError(
        f"unsupported data source {path}: expected the IMDb .tar.gz, an aclImdb/ folder, or a .csv/.jsonl/.parquet file"
    )


def load_splits(
    source: str | os.PathLike[str] | Source | None,
    splits: Iterable[str],
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    id2label: dict[int, str] | None = None,
    errors: DecodeErrors = "strict",
    progress: bool | None = None,
) -> dict[str, TextDataset]:
    """Several splits at once; for the IMDb archive this costs a single pass over the file."""
    src = resolve_source(source, progress=progress)
    splits = list(dict.fromkeys(splits))
    if src.kind == "imdb_archive":
        return read_imdb_archive(src.path, splits, errors=errors, progress=progress)
    if src.kind == "imdb_folder":
        return read_imdb_folder(src.path, splits, errors=errors, progress=progress)
    table_args = dict(text_column=text_column, label_column=label_column, id2label=id2label, errors=errors)
    if src.kind == "table":
        for split in splits:
            if split != "train":
                raise DataError(
                    f"unknown split {split!r}: {src.path} is a single file, which holds the 'train' split; "
                    f"give a folder with one file per split (train.csv, test.csv, ...)"
                )
        return {split: read_table(src.path, **table_args) for split in splits}
    files = split_files(src.path)
    for split in splits:
        if split not in files:
            raise DataError(f"unknown split {split!r}: {src.path} has {', '.join(sorted(files))}")
    read = {}
    if id2label is None and "train" in files and label_column is not None:
        # The train split's names -> ids is the only mapping: a test file that lacks a class must not
        # renumber the others.
        read["train"] = read_table(files["train"], **table_args)
        table_args["id2label"] = read["train"].id2label
    return {split: read.get(split) or read_table(files[split], **table_args) for split in splits}


def load_split(
    source: str | os.PathLike[str] | Source | None,
    split: str | None = "train",
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    id2label: dict[int, str] | None = None,
    errors: DecodeErrors = "strict",
    progress: bool | None = None,
) -> TextDataset:
    """One split of `source` (default `$SDBERT_DATA`).

    `split=None` reads a single table file whole and is an error for sources with several splits.
    `errors="replace"` decodes invalid UTF-8 with U+FFFD instead of failing.
    """
    src = resolve_source(source, progress=progress)
    if split is None:
        if src.kind != "table":
            raise DataError(f"{src.path} has several splits ({', '.join(src.splits())}); name one")
        split = "train"
    return load_splits(
        src,
        [split],
        text_column=text_column,
        label_column=label_column,
        id2label=id2label,
        errors=errors,
        progress=progress,
    )[split]
