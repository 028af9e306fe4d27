"""Test areas (not a test module): every test gets one area marker from its module's name, and
the modules that compile graphs with Inductor/AOTInductor (tens of seconds to minutes each) also
get ``compile``. So the suite runs by area:

    python3 -m pytest -m db                     # the crystal database and its service
    python3 -m pytest -m "model or train"       # descriptors, physics, training
    python3 -m pytest -m "not compile and not slow and not reference"   # a quick pass

``tests/conftest.py`` registers the markers and applies them (``pytest_configure`` and
``pytest_collection_modifyitems`` below). A module whose name matches no prefix is ``core``.
"""

from __future__ import annotations

import pytest

# area -> what it covers; the first matching prefix (in this order) wins
AREAS = {
    "db": "crystal-structure database, its HTTP service and web page",
    "screen": "high-throughput screening",
    "learn": "active learning, relaxation, properties and MD engines (i-PI, LAMMPS)",
    "parity": "numbers compared with the reference DeePMD-kit",
    "data": "deepmd/npy and ASE data, batching, sampling",
    "train": "training, multi-task, fine-tuning, statistics, bias changes",
    "infer": "inference, test, freeze, convert, model deviation",
    "model": "descriptors, fittings and model physics",
    "core": "command line, presets, quick start, everything else",
}
PREFIXES = [
    ("test_db_", "db"),
    ("test_screen_", "screen"),
    ("test_learn", "learn"),
    ("test_relax", "learn"),
    ("test_props", "learn"),
    ("test_ipi", "learn"),
    ("test_lammps", "learn"),
    ("test_make_mptraj_like", "learn"),
    ("test_reference_parity", "parity"),
    ("test_finetune_reference", "parity"),
    ("test_data_", "data"),
    ("test_train", "train"),
    ("test_multitask", "train"),
    ("test_finetune", "train"),
    ("test_sharefit", "train"),
    ("test_distributed", "train"),
    ("test_change_bias", "train"),
    ("test_type_map_change", "train"),
    ("test_property_train", "train"),
    ("test_infer", "infer"),
    ("test_batch_eval", "infer"),
    ("test_chunked_eval", "infer"),
    ("test_compiled_infer", "infer"),
    ("test_freeze", "infer"),
    ("test_convert", "infer"),
    ("test_model_devi", "infer"),
    ("test_float32", "infer"),
    ("test_physics_", "model"),
    ("test_dpa", "model"),
    ("test_se_", "model"),
    ("test_hybrid", "model"),
    ("test_zbl", "model"),
    ("test_dos", "model"),
    ("test_property", "model"),
    ("test_hessian", "model"),
    ("test_spin", "model"),
]
# modules that build Inductor / AOTInductor graphs (C++ compilation)
COMPILE_MODULES = ("test_compiled_infer", "test_train_compiled", "test_freeze_pt2")


def area_of(module: str) -> str:
    """The area of a test module (its file name without ``.py``)."""
    if "_parity" in module:
        return "parity"
    for prefix, area in PREFIXES:
        if module.startswith(prefix):
            return area
    return "core"


def register(config: pytest.Config) -> None:
    """Declare the area markers and ``compile`` (pytest_configure)."""
    for area, what in AREAS.items():
        config.addinivalue_line("markers", f"{area}: {what}")
    config.addinivalue_line("markers", "compile: builds Inductor/AOTInductor graphs (slow)")


def mark(items: list[pytest.Item]) -> None:
    """Add each item's area marker, and ``compile`` (pytest_collection_modifyitems)."""
    for item in items:
        module = item.path.stem if item.path is not None else ""
        if not module.startswith("test_"):
            continue
        item.add_marker(getattr(pytest.mark, area_of(module)))
        if module in COMPILE_MODULES:
            item.add_marker(pytest.mark.compile)
