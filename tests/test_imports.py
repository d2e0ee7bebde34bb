"""The package's import graph has no cycle, and no module is over 600 lines.

The graph is built from the source (``ast``), over every module ``pkgutil.walk_packages``
finds in ``petcorpus``. An edge ``a -> b`` is an import of ``b`` anywhere in ``a``:

- module-level imports and imports inside functions both count. A function-level import
  does not fail at import time, but it is a dependency all the same (``volume`` importing
  ``resample`` inside a method while ``resample`` imports ``volume`` is the knot the issue
  names); postponing an import hides a cycle, it does not remove it;
- imports under ``if TYPE_CHECKING:`` do not count: they never run;
- ``from pkg import name`` is an edge to the submodule ``pkg.name`` when there is one, else
  to ``pkg``; importing a submodule does not count as importing its parent packages (Python
  runs their ``__init__`` first, but a package's ``__init__`` re-exporting its modules is
  the usual shape, not a cycle).
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import petcorpus

PACKAGE = Path(petcorpus.__file__).parent
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {"petcorpus": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="petcorpus."):
        rel = Path(*info.name.split(".")[1:])
        out[info.name] = PACKAGE / rel / "__init__.py" if info.ispkg else PACKAGE / f"{rel}.py"
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (module or function level)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse:
                    visit_node(c)
                continue
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.add(sub if sub in modules else mod)
        else:
            visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def test_the_walk_finds_the_package() -> None:
    modules = _modules()
    assert {"petcorpus.dicom.scan", "petcorpus.dicom.series", "petcorpus.volume"} <= set(modules)
    assert all(p.is_file() for p in modules.values())


def test_the_graph_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    modules = _modules()
    src = tmp_path / "probe.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "from petcorpus import errors\n"
        "from . import naming\n"
        "if TYPE_CHECKING:\n"
        "    from petcorpus.catalog import Catalog\n"
        "def f():\n"
        "    import petcorpus.volume\n"
        "    from petcorpus.dicom.values import parse_datetime\n"
    )
    assert _imports("petcorpus.probe", src, modules) == {
        "petcorpus.errors",
        "petcorpus.naming",
        "petcorpus.volume",
        "petcorpus.dicom.values",
    }


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles = _cycles(graph)
    described = [
        " <-> ".join(c)
        + ": "
        + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
        for c in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_no_module_over_600_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"
