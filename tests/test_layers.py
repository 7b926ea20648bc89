"""The package's import rules, read from the source (every import, function-local ones included):
layers that only point down, no cycles, and function-local imports only with a stated reason."""

import ast
import functools
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sdbert"
# Bottom to top. A module may import its own layer and the layers below it, never one above; a module
# missing here fails the test, so a new file is placed on purpose. A prefix covers a package.
LAYERS = [
    ("base", ["sdbert.errors", "sdbert.io", "sdbert.cli_args", "sdbert.stats", "sdbert.metrics",
              "sdbert.reporting", "sdbert.config", "sdbert.hub", "sdbert.precision", "sdbert.data.cache",
              "sdbert.data.progress"]),
    ("attention", ["sdbert.attention"]),
    ("data", ["sdbert.data"]),
    ("model", ["sdbert.convert", "sdbert.checkpoint", "sdbert.model"]),
    ("inference", ["sdbert.inference", "sdbert.onnx_runtime", "sdbert.classifier", "sdbert.model_card"]),
    ("training", ["sdbert.training", "sdbert.distill"]),
    ("workflows", ["sdbert.evaluation", "sdbert.paper", "sdbert.export", "sdbert.serving"]),
    ("bench", ["sdbert.bench"]),
    ("cli", ["sdbert.commands", "sdbert.cli", "sdbert.__main__"]),
]
# `sdbert/__init__.py` is the public facade: it re-exports from below and is exempt from the layers.
FACADE = "sdbert"
MAX_LOCAL_IMPORTS = 40
# A function-local import states why it is not at the top, on its line or the line above.
# (A comment above a run of imports covers the run.)
REASON = re.compile(r"#.*\b(optional extra|start-up|CUDA path|compiled on first use|lazy facade)", re.IGNORECASE)
IMPORT_LINE = re.compile(r"\s*(from \S+ import|import )")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The package module an import of `name` (a module or a name in one) loads."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """`(imported module, line, function-local)` for every sdbert import of `module`."""
    path, found = MODULES[module], []

    def visit(nodes, local: bool):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body, True)
            elif isinstance(node, ast.Import):
                found.extend((alias.name, node.lineno, local) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package
                    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                found.extend((f"{base}.{alias.name}", node.lineno, local) for alias in node.names)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, None) or [], local)

    visit(ast.parse(path.read_text(), filename=str(path)).body, False)
    return found


@functools.cache
def package_edges() -> dict[str, frozenset[str]]:
    return {module: frozenset(target for name, _, _ in imports_of(module) if name.startswith("sdbert")
                              and (target := resolve(name)) and target != module)
            for module in MODULES}


def layer_of(module: str) -> int | None:
    matches = [(len(prefix), rank) for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != FACADE and layer_of(m) is None] == []
    assert len(MODULES) > 60  # the walk found the package


def test_imports_only_point_down():
    upward = sorted(f"{module} ({LAYERS[layer_of(module)][0]}) -> {target} ({LAYERS[layer_of(target)][0]})"
                    for module, targets in package_edges().items() if module != FACADE
                    for target in targets if target != FACADE and layer_of(target) > layer_of(module))
    assert upward == []


def test_the_library_never_imports_the_benchmarks_or_the_command_line():
    top = layer_of("sdbert.bench")
    assert all(layer_of(m) >= top for m in ("sdbert.bench.train", "sdbert.commands.train", "sdbert.cli"))
    below = [m for m in MODULES if m != FACADE and layer_of(m) < top]
    assert not [(m, t) for m in below for t in package_edges()[m] if t != FACADE and layer_of(t) >= top]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_even_through_function_local_imports():
    assert find_cycle(package_edges()) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail


def local_imports() -> list[tuple[str, int, str]]:
    """`(module, line, source line)` of every function-local import statement of the package."""
    found = {}
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for _, line, local in imports_of(module):
            if local:
                above = line - 2
                while above >= 0 and IMPORT_LINE.match(lines[above]):
                    above -= 1
                found[(module, line)] = (lines[line - 1], lines[above] if above >= 0 else "")
    return [(module, line, *text) for (module, line), text in sorted(found.items())]


def test_function_local_imports_are_few_and_say_why():
    found = local_imports()
    assert 0 < len(found) < MAX_LOCAL_IMPORTS, f"{len(found)} function-local imports"
    unexplained = [f"{module}:{line}: {text.strip()}" for module, line, text, above in found
                   if not (REASON.search(text) or REASON.search(above))]
    assert unexplained == []
