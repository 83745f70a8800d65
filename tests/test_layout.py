"""The package's shape: layers without an import circle, private names kept private, short
functions. ``lint-imports`` (CI, before pytest) checks the layer contracts of pyproject.toml;
these tests check what its contracts do not say, over every module of fastnet/, and the import
graph as grimp (import-linter's engine) sees it, the package ``fastnet`` itself included."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastnet"
MAX_FUNCTION_LINES = 80


@functools.cache
def modules() -> dict[str, ast.Module]:
    """Every module of fastnet/, by dotted name, parsed (once per session: the tests only read the trees)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The fastnet modules ``name`` imports, anywhere in it (inside functions too); ``from
    package import submodule`` counts as importing the submodule, and a module that is not a
    .py file (the compiled extension) as its nearest package that is."""
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
    nearest = {m: next((p for p in _ancestry(m) if p in known), None) for m in found}
    return {n for n in nearest.values() if n is not None and n != name}


def _ancestry(module: str) -> list[str]:
    """``a.b.c``, ``a.b``, ``a``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


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


def _grimp_graph():
    """fastnet's import graph as grimp (import-linter's engine) builds it, external packages
    included: that is how an analyser resolves an import of a module it cannot find (a compiled
    one), to a package it can, ``from fastnet.x._c import f`` to ``fastnet`` itself."""
    grimp = pytest.importorskip("grimp", reason="grimp (installed with import-linter) is needed for this check")
    try:
        return grimp.build_graph("fastnet", include_external_packages=True, cache_dir=None)
    except (grimp.exceptions.GrimpException, ImportError, ValueError, OSError) as exc:  # e.g. fastnet not on the path
        pytest.skip(f"grimp could not build fastnet's import graph: {type(exc).__name__}: {exc}")


def test_no_import_cycle_as_static_analysers_see_it():
    """No circle in the graph a static analyser builds, the package ``fastnet`` (whose
    ``__init__`` imports the API) included: an import it cannot resolve, such as one from the
    compiled extension, must not land on ``fastnet`` (fastnet/ext/__init__.py)."""
    graph = _grimp_graph()
    ours = sorted(m for m in graph.modules if m == "fastnet" or m.startswith("fastnet."))
    cycles = []
    for a in ours:
        for b in sorted(graph.find_modules_directly_imported_by(a)):
            if chain := graph.find_shortest_chain(importer=b, imported=a):
                cycles.append((a, *chain))
    on_cycles = sorted({m for c in cycles for m in c})
    assert not cycles, (f"import cycle through {len(on_cycles)} modules ({', '.join(on_cycles)}); shortest: "
                        + " -> ".join(min(cycles, key=len)))


def test_extension_package_imports_nothing_of_fastnet():
    """fastnet.ext is the lowest layer, a leaf: every layer may import it."""
    graph = _grimp_graph()
    assert "fastnet.ext" in graph.modules
    imported = {m for m in graph.find_modules_directly_imported_by("fastnet.ext") if m.split(".")[0] == "fastnet"}
    assert not imported, f"fastnet.ext imports {sorted(imported)}"


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
