"""CSV, JSON Lines and Parquet files with a text column and an optional label column.

Each reader returns raw column values plus a way to name a row ("row 3" for CSV and Parquet,
counting data rows from 1 after the header; "line 3" for JSONL, counting file lines), and the
shared checks in `validate` turn those into texts and label ids. Parquet needs `pyarrow`, which
is an optional extra, so it is imported only when a Parquet file is read.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdbert.data.dataset import TextDataset, make_dataset
from sdbert.data.validate import DecodeErrors, check_texts, encode_labels
from sdbert.errors import DataError, MissingDependency, missing_hint

# suffix -> reader kind; the folder rule in `sources` uses the same table.
TABLE_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
# (raw text values, raw label values or None, name of row i for messages)
_Columns = tuple[list[Any], list[Any] | None, Callable[[int], str]]


def read_table(
    path: str | os.PathLike[str],
    *,
    text_column: str = "text",
    label_column: str | None = "label",
    id2label: dict[int, str] | None = None,
    errors: DecodeErrors = "strict",
) -> TextDataset:
    """A dataset from one table file; `label_column=None` reads unlabelled text."""
    path = Path(path)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"unsupported file type {path.suffix!r} for {path}; use .csv, .jsonl or .parquet")
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[kind]
    try:
        texts, raw_labels, name_of = reader(path, text_column, label_column)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not texts:
        raise DataError(f"{path} has no rows")
    texts = check_texts([_as_text(t, name_of, i, path) for i, t in enumerate(texts)], name_of, str(path), errors)
    if raw_labels is None:
        return make_dataset(texts, None, dict(id2label or {}))
    labels, id2label = encode_labels(raw_labels, name_of, str(path), label_column or "", id2label)
    return make_dataset(texts, labels, id2label)


def _as_text(value: Any, name_of: Callable[[int], str], i: int, path: Path) -> str:
    if value is None:
        return ""  # reported as empty text, with the others, by check_texts
    if isinstance(value, str):
        return value
    raise DataError(f"text column of {path} holds a {type(value).__name__}, not text, at {name_of(i)}")


def _check_columns(found: list[str], text_column: str, label_column: str | None, path: Path) -> None:
    needed = [c for c in (text_column, label_column) if c is not None]
    if any(c not in found for c in needed):
        expected = " and ".join(repr(c) for c in needed)
        raise DataError(f"{path} has columns {found}, expected {expected} (name yours with --text-column and "
                        "--label-column)")


def _read_csv(path: Path, text_column: str, label_column: str | None) -> _Columns:
    # surrogateescape keeps bad bytes for check_texts to report by row instead of failing here.
    content = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    # Reviews can exceed csv's default 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    try:
        reader = csv.reader(io.StringIO(content, newline=""))
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty")
        header = [h.strip() for h in header]
        _check_columns(header, text_column, label_column, path)
        ti = header.index(text_column)
        li = header.index(label_column) if label_column is not None else None
        texts, labels = [], []
        for row in reader:
            if not row:
                continue  # a blank line, which csv reports as an empty row
            if len(row) != len(header):  # an unquoted comma shifts the label: never guess which field is which
                raise DataError(f"{path} row {len(texts) + 1} has {len(row)} fields but the header has "
                                f"{len(header)}: quote texts that contain commas")
            texts.append(row[ti] if ti < len(row) else None)
            if li is not None:
                labels.append(row[li] if li < len(row) else None)
    except csv.Error as exc:
        raise DataError(f"malformed CSV {path}: {exc}") from exc
    return texts, labels if li is not None else None, lambda i: f"row {i + 1}"


def _read_jsonl(path: Path, text_column: str, label_column: str | None) -> _Columns:
    content = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    texts, labels, line_numbers = [], [], []
    columns: list[str] | None = None
    # Lines end at \n only: str.splitlines would also split at U+2028/U+2029, which JSON allows inside strings.
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON in {path} at line {number}: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number} is not a JSON object")
        if columns is None:
            columns = list(record)
            _check_columns(columns, text_column, label_column, path)
        texts.append(record.get(text_column))
        if label_column is not None:
            labels.append(record.get(label_column))
        line_numbers.append(number)
    return texts, labels if label_column is not None else None, lambda i: f"line {line_numbers[i]}"


def _read_parquet(path: Path, text_column: str, label_column: str | None) -> _Columns:
    try:
        # optional extra [data]: Parquet files only
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependency(missing_hint("pyarrow", f"reading {path}")) from None
    try:
        columns = list(pq.read_schema(path).names)
        _check_columns(columns, text_column, label_column, path)
        wanted = [c for c in (text_column, label_column) if c is not None]
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"corrupt Parquet file {path}: {exc}") from exc
    text_col = table.column(text_column)
    if pa.types.is_binary(text_col.type) or pa.types.is_large_binary(text_col.type):
        texts = [None if b is None else b.decode("utf-8", "surrogateescape") for b in text_col.to_pylist()]
    else:
        texts = text_col.to_pylist()
    labels = table.column(label_column).to_pylist() if label_column is not None else None
    return texts, labels, lambda i: f"row {i + 1}"
