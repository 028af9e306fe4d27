"""The test suite's layout: test modules never import each other (shared factories live in
``lamkit.testing``, shared fixtures and inputs in the non-test modules of tests/), and every
test module gets an area marker (tests/areas.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .areas import AREAS, area_of

TESTS = Path(__file__).resolve().parent
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
