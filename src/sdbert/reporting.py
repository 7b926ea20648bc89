"""What a run's records say about where it ran, and the generated sections of markdown files.

Library code (`reproduce`, the Table 1 report) and the benchmarks share these; nothing here imports
`sdbert.bench` (the benchmarks add their own details, such as the memory allocator, on top).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

from sdbert.io import write_text


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """A short description of where the numbers were measured."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        # optional extra [hf]: loaded only when a Hugging Face case runs
        import transformers  # optional: recorded when present, since the benchmarks compare against it

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def load_average() -> float | None:
    """The 1-minute load average: on a shared machine other jobs inflate every time in a run, so each
    report says how busy the machine was."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        return None


def update_markdown_section(path: Path, name: str, body: str, title: str = "# Benchmarks") -> None:
    """Replace the generated section `name` of a markdown file (between marker comments), keeping
    everything else; the section is appended when the file or the section is new."""
    begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else f"{title}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text(path, text)
