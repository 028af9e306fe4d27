"""The layout of the code and of the test suite: test modules never import each other (shared
factories live in ``lamkit.testing``, shared fixtures and inputs in the non-test modules of
tests/), every test module gets an area marker (tests/areas.py), src/lamkit has no import
circle (imports inside functions count: see ``lamkit.testing.layout``) and no file over
``MAX_LINES`` lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lamkit.testing.layout import cycle_edges, import_cycles, import_graph

from .areas import AREAS, area_of

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
MAX_LINES = 600
# modules whose owners still have to switch their imports (see lamkit.testing.factories/learn)
PENDING: set[str] = set()


def imported_test_modules(path: Path) -> list[str]:
    """Names of the test modules ``path`` imports (``from .test_x``, ``from tests.test_x``,
    ``import tests.test_x``), at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if node.level == 1 and parts[0].startswith("test_"):
                found.append(parts[0])
            elif node.level == 0 and parts[0] == "tests" and len(parts) > 1:
                if parts[1].startswith("test_"):
                    found.append(parts[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tests" and len(parts) > 1 and parts[1].startswith("test_"):
                    found.append(parts[1])
    return found


def test_test_modules_do_not_import_each_other():
    offenders = {
        path.stem: imported_test_modules(path)
        for path in sorted(TESTS.glob("*.py"))
        if path.stem not in PENDING
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"move the shared helpers out of the test modules: {offenders}"


def test_the_checker_sees_every_import_form(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(
        "from .test_a import x\nfrom tests.test_b import y\nimport tests.test_c\n"
        "def f():\n    from .test_d import z\n"
        "from .conftest import need_shared\nfrom .db_data import fcc\nfrom lamkit import keys\n"
    )
    assert imported_test_modules(src) == ["test_a", "test_b", "test_c", "test_d"]


@pytest.mark.parametrize(
    "module, area",
    [
        ("test_db_web", "db"),
        ("test_dpa2_parity", "parity"),
        ("test_train_compiled", "train"),
        ("test_dpa3", "model"),
        ("test_cli", "core"),
    ],
)
def test_area_of_module(module, area):
    assert area_of(module) == area and area in AREAS


def test_src_has_no_import_cycle():
    cycles = import_cycles(SRC, "lamkit")
    graph = import_graph(SRC, "lamkit")
    edges = {" <-> ".join(c): cycle_edges(graph, c) for c in cycles}
    assert not cycles, f"import circles in src/lamkit (move the shared code down): {edges}"


def test_the_cycle_checker_sees_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("def __getattr__(name):\n    from . import a\n")
    (pkg / "a.py").write_text("from . import keys\nfrom .sub import b\n")
    (pkg / "keys.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    # deferred, relative to the parent package: still an edge
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import keys\n")
    (pkg / "c.py").write_text("import pkg.keys\nfrom pkg import a\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg"] == set()  # a lazy attribute map is no edge
    assert graph["pkg.a"] == {"pkg.keys", "pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.keys", "pkg.a"}
    assert import_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.sub.b"]]
    assert import_cycles(tmp_path, "pkg", {("pkg.sub.b", "pkg.a")}) == []


def test_no_source_file_is_over_the_line_limit():
    long = {
        str(p.relative_to(SRC)): n
        for p in sorted((SRC / "lamkit").rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (at most {MAX_LINES} lines): {long}"
