"""One switch for every progress bar in the data layer.

`progress=None` lets tqdm decide (bars only when stderr is a terminal, so logs and CI output stay
clean); `True`/`False` force them on or off, e.g. off on every DDP rank but rank 0.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


def progress_bar(progress: bool | None, **kwargs: Any) -> tqdm:
    return tqdm(disable=None if progress is None else not progress, **kwargs)
