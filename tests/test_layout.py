"""The package's shape: layers without an import circle, private names kept private, short
functions. ``lint-imports`` (CI, before pytest) checks the layer contracts of pyproject.toml;
these tests check what its contracts do not say, over every module of fastnet/."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastnet"
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, ast.Module]:
    """Every module of fastnet/, by dotted name, parsed."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The fastnet modules ``name`` imports, anywhere in it (inside functions too); ``from
    package import submodule`` counts as importing the submodule."""
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists() else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


def test_no_import_cycle_counting_every_import():
    """No circle of imports between any two modules, lazy (function-level) imports included."""
    trees = modules()
    graph = {name: imports_of(name, tree, set(trees)) for name, tree in trees.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_graph_sees_lazy_imports():
    """The cycle check is only as good as its graph: it must see an import inside a function."""
    tree = ast.parse("def f():\n    from fastnet.util.files import read_json\n")
    assert imports_of("fastnet.x", tree, {"fastnet.util.files", "fastnet.x"}) == {"fastnet.util.files"}


def test_no_private_name_imported_from_another_module():
    """``from fastnet.a import _b`` would make _b part of a's interface without saying so."""
    offenders = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("fastnet")):
                offenders += [f"{name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("name", sorted(modules()))
def test_functions_are_short(name):
    """No function or method of fastnet/ is longer than MAX_FUNCTION_LINES, docstring included."""
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(modules()[name])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{name}: " + ", ".join(long)
