"""Checks that turn bad rows into one-line `DataError`s naming where they are.

Readers decode bytes with `surrogateescape`, which never fails and keeps each invalid byte as a
lone surrogate; that lets one pass find *which* rows are not UTF-8 instead of failing on the first
bad byte somewhere in a file. Replacement decoding happens here, and only when asked for, because
silently mangled text is worse than a clear error.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from sdbert.errors import DataError

logger = logging.getLogger(__name__)

DecodeErrors = Literal["strict", "replace"]
# How many offending places an error message lists before "and N more".
_SHOWN = 5
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_NUMBERED_RE = re.compile(r"^(row|line) (\d+)$")
_MISSING_STRINGS = {"", "nan", "na", "null", "none"}


def describe(places: Sequence[str]) -> str:
    """'rows 3, 7 and 2 more' from ['row 3', 'row 7', ...]; other places (file names) are listed as they are."""
    shown = list(places[:_SHOWN])
    more = f" and {len(places) - _SHOWN} more" if len(places) > _SHOWN else ""
    match = [_NUMBERED_RE.match(p) for p in shown]
    kinds = {m.group(1) for m in match if m}
    if all(match) and len(kinds) == 1:
        kind = kinds.pop() + ("s" if len(places) > 1 else "")
        return f"{kind} {', '.join(m.group(2) for m in match if m)}{more}"
    return ", ".join(shown) + more


def _is_valid_utf8(text: str) -> bool:
    # Lone surrogates are what surrogateescape leaves for invalid bytes; encoding rejects them.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_texts(
    texts: list[str],
    name_of: Callable[[int], str],
    source: str,
    errors: DecodeErrors = "strict",
) -> list[str]:
    """Validate texts decoded with surrogateescape; returns them, repaired if `errors='replace'`."""
    if errors not in ("strict", "replace"):
        raise DataError(f"errors must be 'strict' or 'replace', got {errors!r}")
    bad = [i for i, t in enumerate(texts) if not _is_valid_utf8(t)]
    if bad:
        places = describe([name_of(i) for i in bad])
        if errors == "strict":
            raise DataError(
                f"non-UTF-8 text in {source} at {places}; re-encode as UTF-8 or ask for replacement decoding"
            )
        logger.warning("replaced invalid UTF-8 bytes with U+FFFD in %s at %s", source, places)
        texts = list(texts)
        for i in bad:
            texts[i] = texts[i].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"empty text in {source} at {describe([name_of(i) for i in empty])}")
    return texts


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_STRINGS
    return False


def _as_int(value: Any) -> int | None:
    """The integer a label value stands for, or None when it is a name."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.match(value):
        return int(value)
    return None


def encode_labels(
    raw: Sequence[Any],
    name_of: Callable[[int], str],
    source: str,
    column: str,
    id2label: dict[int, str] | None = None,
) -> tuple[list[int], dict[int, str]]:
    """Map raw label values to ids.

    Integers (or integer strings, as CSV gives them) are kept as given. Names are mapped through
    `id2label` when one is given (so a test file uses the training file's ids), otherwise sorted
    unique names become 0..k-1.
    """
    missing = [i for i, v in enumerate(raw) if _is_missing(v)]
    if missing:
        raise DataError(
            f"label column {column!r} in {source} has missing values (NaN) at {describe([name_of(i) for i in missing])}"
        )
    fractional = [i for i, v in enumerate(raw) if isinstance(v, float) and not v.is_integer()]
    if fractional:
        raise DataError(
            f"label column {column!r} in {source} has non-integer numbers at "
            f"{describe([name_of(i) for i in fractional])}"
        )
    as_ints = [_as_int(v) for v in raw]
    if all(v is not None for v in as_ints):
        return _check_int_labels(as_ints, name_of, source, column, id2label)  # type: ignore[arg-type]
    if any(v is not None and not isinstance(raw[i], str) for i, v in enumerate(as_ints)):
        raise DataError(f"label column {column!r} in {source} mixes numbers and names")
    names = [str(v).strip() for v in raw]
    if id2label is None:
        id2label = dict(enumerate(sorted(set(names))))
    label2id = {name: i for i, name in id2label.items()}
    unknown = [i for i, n in enumerate(names) if n not in label2id]
    if unknown:
        found = sorted({names[i] for i in unknown})[:_SHOWN]
        raise DataError(
            f"label column {column!r} in {source} has labels {found} not in {sorted(label2id)} "
            f"at {describe([name_of(i) for i in unknown])}"
        )
    return [label2id[n] for n in names], dict(id2label)


def _check_int_labels(
    labels: list[int],
    name_of: Callable[[int], str],
    source: str,
    column: str,
    id2label: dict[int, str] | None,
) -> tuple[list[int], dict[int, str]]:
    negative = [i for i, v in enumerate(labels) if v < 0]
    if negative:
        raise DataError(
            f"label column {column!r} in {source} has negative ids at {describe([name_of(i) for i in negative])}"
        )
    if id2label is None:
        top = max(labels, default=-1)
        # Dense 0..max, so num_labels == len(id2label) holds even when an id is absent here.
        id2label = {i: str(i) for i in range(top + 1)}
    out_of_range = [i for i, v in enumerate(labels) if v not in id2label]
    if out_of_range:
        raise DataError(
            f"label column {column!r} in {source} has ids outside 0..{len(id2label) - 1} at "
            f"{describe([name_of(i) for i in out_of_range])}"
        )
    return labels, dict(id2label)
