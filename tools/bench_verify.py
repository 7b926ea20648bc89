"""Check that every generated section of BENCHMARKS.md is exactly what its JSON renders to.

A section `<!-- generated:NAME:begin -->` ... `<!-- generated:NAME:end -->` comes from `NAME.json`
beside it: a benchmark JSON (its `benchmark` field names the `sdbert.bench` module that renders it)
or a `sdbert reproduce` results file (it has a `preset`). Re-rendering the JSON with the code of
this commit must give the section byte for byte, so no number in it can be typed by hand, stale,
or from another run.

    python tools/bench_verify.py benchmarks        # exit 1 and one line per problem
    python tools/bench_verify.py benchmarks --render   # after a change of a renderer: re-render every section
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

from sdbert.bench.report import update_markdown_section
from sdbert.paper.report import render_report

TOOLS = {"compare": "bench_compare", "serve": "bench_serve"}
SECTION = re.compile(r"<!-- generated:([\w-]+):begin -->\n(.*?)\n<!-- generated:\1:end -->", re.DOTALL)


def sections(markdown: str) -> dict[str, str]:
    return {name: body for name, body in SECTION.findall(markdown)}


def render(result: dict) -> str:
    """The markdown section a result JSON renders to with this commit's code."""
    if "preset" in result and "benchmark" not in result:
        return render_report(result, level=2).strip()
    # The tools beside this one render their own JSON (a rerun's comparison, the HTTP load test); every
    # other JSON is rendered by its benchmark in sdbert.bench.
    name = result["benchmark"]
    module = importlib.import_module(TOOLS.get(name, f"sdbert.bench.{name}"))
    return module.markdown_report(result).strip()


def first_difference(expected: str, found: str) -> str:
    for number, (a, b) in enumerate(zip(expected.splitlines(), found.splitlines(), strict=False), 1):
        if a != b:
            return f"line {number}: expected {a[:80]!r}, found {b[:80]!r}"
    return f"expected {len(expected.splitlines())} lines, found {len(found.splitlines())}"


def check(folder: Path, markdown_name: str = "BENCHMARKS.md") -> list[str]:
    """Problems found in `folder/markdown_name`; an empty list means every section matches its JSON."""
    markdown = folder / markdown_name
    if not markdown.is_file():
        return [f"{markdown} does not exist"]
    problems = []
    for name, body in sections(markdown.read_text()).items():
        source = folder / f"{name}.json"
        if not source.is_file():
            problems.append(f"section {name}: {source.name} does not exist")
            continue
        try:
            expected = render(json.loads(source.read_text()))
        except (KeyError, TypeError, ValueError, ImportError) as exc:
            problems.append(f"section {name}: {source.name} cannot be rendered ({type(exc).__name__}: {exc})")
            continue
        if expected != body.strip():
            problems.append(f"section {name} is not what {source.name} renders to: "
                            f"{first_difference(expected, body.strip())}")
    return problems


def render_all(folder: Path, markdown_name: str = "BENCHMARKS.md") -> list[str]:
    """Re-render every generated section of `folder/markdown_name` from its JSON (numbers never change: a
    section is a pure function of its JSON); returns the names of the sections that changed."""
    markdown = folder / markdown_name
    changed = []
    for name, body in sections(markdown.read_text()).items():
        expected = render(json.loads((folder / f"{name}.json").read_text()))
        if expected != body.strip():
            update_markdown_section(markdown, name, expected)
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    rerender = "--render" in args
    args = [a for a in args if a != "--render"]
    folder = Path((args or ["benchmarks"])[0])
    if rerender:
        print(f"re-rendered sections: {', '.join(render_all(folder)) or 'none'}")
    problems = check(folder)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"every generated section of {folder / 'BENCHMARKS.md'} matches its JSON")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
