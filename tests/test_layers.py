"""The package's import rules, read from the source (every import, function-local ones included)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sdbert"
# The benchmarks and the command line sit on top: they may import anything; nothing else imports them.
TOP = ("bench", "commands", "cli", "__main__")


def imported_modules(path: Path) -> set[str]:
    """Every `sdbert...` module a file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("sdbert")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sdbert"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def library_files() -> list[Path]:
    return [path for path in sorted(PACKAGE.rglob("*.py"))
            if path.relative_to(PACKAGE).parts[0].removesuffix(".py") not in TOP]


def test_the_library_never_imports_the_benchmarks_or_the_command_line():
    upward = {str(path.relative_to(PACKAGE)): sorted(m for m in imported_modules(path)
                                                     if m.split(".")[1:2] and m.split(".")[1] in TOP)
              for path in library_files()}
    assert {name: mods for name, mods in upward.items() if mods} == {}
    assert len(library_files()) > 30  # the walk found the package
