"""The import graph of a Python package, read with ``ast`` (nothing is imported), and its
cycles.

Every ``import`` and ``from ... import`` counts, at any depth of a file: an import deferred into
a function to dodge a circle is still a circle. An edge goes to the module that is imported:
``from lamkit import keys`` is an edge to ``lamkit.keys`` (the submodule), ``from lamkit.model
import build_model`` one to the package ``lamkit.model`` (its ``__init__``).

One exception: the imports inside a module-level ``__getattr__`` of a package ``__init__`` (a
lazy attribute map, PEP 562) are not edges of the package. Such a map runs only when a caller
asks the package for a name it does not define, i.e. after the package and every module that
imports it have finished importing, so it cannot take part in a circle at import time; and its
targets are what the package offers, not what it needs.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_files(root: Path, package: str) -> dict[str, Path]:
    """``{dotted name: file}`` of every module of ``package`` below the folder ``root``."""
    out = {}
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _lazy_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside a module-level ``def __getattr__``."""
    ids: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            ids.update(id(n) for n in ast.walk(node))
    return ids


def _targets(name: str, is_pkg: bool, node: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` one import statement of module ``name`` names."""
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        wanted = [f"{module}.{a.name}" for a in node.names]
        wanted = [w if w in modules else module for w in wanted]
    else:
        wanted = [a.name for a in node.names]
    found = set()
    for target in wanted:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target:
            found.add(target)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """``{module: modules it imports}`` within ``package`` (see the module docstring)."""
    modules = module_files(root, package)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_pkg = path.name == "__init__.py"
        lazy = _lazy_nodes(tree) if is_pkg else set()
        deps: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in lazy:
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            deps |= _targets(name, is_pkg, node, modules)
        deps.discard(name)
        graph[name] = deps
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of ``graph``: its strongly connected components of two or more modules,
    each sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def import_cycles(
    root: Path, package: str, allowed: set[tuple[str, str]] = frozenset()
) -> list[list[str]]:
    """The import cycles of ``package`` once the edges ``allowed`` (``(importer, imported)``)
    are taken out of its graph."""
    graph = import_graph(root, package)
    for importer, imported in allowed:
        graph.get(importer, set()).discard(imported)
    return strongly_connected(graph)


def cycle_edges(graph: dict[str, set[str]], cycle: list[str]) -> list[tuple[str, str]]:
    """The edges of ``graph`` between the members of one cycle (to read in a failure)."""
    members = set(cycle)
    return sorted((a, b) for a in cycle for b in graph[a] if b in members)
