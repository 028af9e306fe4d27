"""Every validity rule of the screening rejects with its own reason, and valid oddities (a
left-handed cell, a badly reduced basis) pass."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from lamkit.screen.config import ScreenConfig
from lamkit.screen.validity import Validator, cell_heights, min_distance_pair
from tests.conftest import IN_CI


def check(atoms, config=None, **kw):
    return Validator(config or ScreenConfig(), **kw).check(atoms)


def cu_cubic(a=3.6):
    return bulk("Cu", "fcc", a=a, cubic=True)


def with_nan_cell():
    atoms = cu_cubic()
    cell = atoms.cell.array.copy()
    cell[0, 0] = np.nan
    atoms.set_cell(cell)
    return atoms


def with_inf_position():
    atoms = cu_cubic()
    atoms.positions[2, 1] = np.inf
    return atoms


CASES = [
    # (name, atoms, validator kwargs, config, rule, fragment of the reason)
    ("no sites", Atoms(cell=np.eye(3) * 3, pbc=True), {}, None, "sites", "no sites"),
    ("too many sites", cu_cubic().repeat(3), {}, ScreenConfig(max_sites=100), "sites", "108"),
    ("dummy element", Atoms("X", cell=np.eye(3) * 3, pbc=True), {}, None, "elements", "[0]"),
    ("no cell", Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), {}, None, "periodic", "pbc"),
    (
        "slab",
        Atoms("Cu", cell=np.eye(3) * 3, pbc=[True, True, False]),
        {},
        None,
        "periodic",
        "three directions",
    ),
    ("NaN cell", with_nan_cell(), {}, None, "finite", "cell contains NaN"),
    ("inf coordinates", with_inf_position(), {}, None, "finite", "coordinates contain"),
    (
        "coplanar cell",
        Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True),
        {},
        None,
        "volume",
        "degenerate",
    ),
    ("compressed", cu_cubic(1.2), {}, None, "volume/atom", "0.432"),
    ("expanded", Atoms("Cu", cell=np.eye(3) * 7, pbc=True), {}, None, "volume/atom", "343"),
    ("type map", bulk("Au"), {"type_map": ["Cu", "Ni"]}, None, "type map", "Au not in"),
    ("database", bulk("Pt"), {"db_elements": ["Cu", "Au"]}, None, "database", "Pt have no"),
    (
        "overlapping pair",
        Atoms("Cu2", positions=[[0, 0, 0], [0.3, 0, 0]], cell=np.eye(3) * 4, pbc=True),
        {},
        None,
        "distance",
        "0.300 Å between sites 0 and 1",
    ),
    (
        "overlap across the boundary",
        Atoms("Cu2", positions=[[0.1, 0, 0], [3.8, 0, 0]], cell=np.eye(3) * 4, pbc=True),
        {},
        None,
        "distance",
        "0.300 Å",
    ),
    (
        "own periodic image",
        Atoms("H", cell=np.diag([0.4, 5.0, 5.0]), pbc=True),
        {},
        ScreenConfig(volume_per_atom=(1, 200)),
        "distance",
        "its own periodic image",
    ),
    (
        "configurable minimum",
        cu_cubic(),
        {},
        ScreenConfig(min_distance=3.0),
        "distance",
        "minimum 3 Å",
    ),
]


@pytest.mark.parametrize(
    "name, atoms, kw, config, rule, fragment", CASES, ids=[c[0] for c in CASES]
)
def test_each_rule_rejects_with_its_reason(name, atoms, kw, config, rule, fragment):
    failed = check(atoms, config, **kw)
    assert failed is not None, name
    assert failed[0] == rule
    assert fragment in failed[1]


def test_valid_structures_pass():
    assert check(cu_cubic()) is None
    assert check(bulk("Au"), type_map=["Au", "Cu"], db_elements=["Au"]) is None
    # a left-handed cell is a valid structure (|det| is its volume)
    left = cu_cubic()
    left.set_cell(left.cell.array[[1, 0, 2]], scale_atoms=False)
    assert np.linalg.det(left.cell.array) < 0
    assert check(left) is None
    # a badly reduced basis of a cubic lattice: thin in that basis, fine after reduction
    skew = Atoms(
        "Cu", cell=[[2.6, 0, 0], [2.6e6, 2.6, 0], [0, 0, 2.6]], pbc=True, positions=[[0, 0, 0]]
    )
    assert cell_heights(skew.cell.array).min() < 1e-4
    assert check(skew) is None


def test_min_distance_pair_includes_images():
    cell = np.eye(3) * 4.0
    d, i, j = min_distance_pair(cell, np.array([[0.1, 0, 0], [3.9, 0, 0]]), 0.5)
    assert d == pytest.approx(0.2) and {i, j} == {0, 1}
    assert min_distance_pair(cell, np.array([[0.0, 0, 0]]), 0.5)[0] == np.inf


def test_rules_can_be_switched_off_and_skips_are_stated():
    v = Validator(ScreenConfig(), type_map=None)
    assert any("type-map rule skipped" in n for n in v.notes)
    off = ScreenConfig(check_type_map=False, check_db_elements=False)
    v = Validator(off, type_map=["Cu"], db_elements=["Cu"])
    assert v.check(bulk("Au")) is None and v.notes == []
    wide = ScreenConfig(volume_per_atom=(0.1, 1000.0))
    assert check(Atoms("Cu", cell=np.eye(3) * 7, pbc=True), wide) is None


def test_charge_neutrality_rule():
    try:
        import smact  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("CI must install smact (the screen extra)")
        pytest.skip("smact is not installed")
    config = ScreenConfig(charge_neutrality=True)
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    assert check(nacl, config) is None
    nacl2 = Atoms(
        "NaCl2",
        scaled_positions=[[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0.5]],
        cell=np.eye(3) * 4.5,
        pbc=True,
    )
    failed = check(nacl2, config)
    assert failed[0] == "charge" and "NaCl2" in failed[1]
    assert check(nacl2) is None  # off by default
