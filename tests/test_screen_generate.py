"""Candidate generators: random symmetric crystals (pyxtal) and decorated prototypes."""

from __future__ import annotations

import numpy as np
import pytest

from lamkit.screen.generate import (
    PROTOTYPES,
    build_prototype,
    decorated_prototypes,
    min_distance,
    min_distance_ratio,
    nn_distance,
    random_crystals,
)

from .conftest import IN_CI

ELEMENTS = ["Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al"]


def _need_pyxtal() -> None:
    try:
        import pyxtal  # noqa: F401
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI must provide pyxtal ({exc})")
        pytest.skip(f"pyxtal unavailable: {exc}")


def _same(a, b) -> bool:
    return (
        a.get_chemical_symbols() == b.get_chemical_symbols()
        and np.array_equal(a.cell.array, b.cell.array)
        and np.array_equal(a.positions, b.positions)
    )


def _spacegroup(atoms, symprec=1e-3) -> int:
    import spglib

    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    return spglib.get_symmetry_dataset(cell, symprec=symprec).number


def test_random_crystals_valid_and_deterministic():
    _need_pyxtal()
    first = random_crystals(ELEMENTS, 12, np.random.default_rng(7), max_atoms=24)
    again = random_crystals(ELEMENTS, 12, 7, max_atoms=24)
    assert len(first) == 12
    assert all(_same(a, b) for a, b in zip(first, again))
    other = random_crystals(ELEMENTS, 12, 8, max_atoms=24)
    assert not all(_same(a, b) for a, b in zip(first, other))
    nel = set()
    for atoms in first:
        assert atoms.pbc.all() and 1 <= len(atoms) <= 24
        assert set(atoms.get_chemical_symbols()) <= set(ELEMENTS)
        nel.add(len(set(atoms.get_chemical_symbols())))
        # closest pair at least 0.7 of the mean nearest-neighbour distance of the two elements
        assert min_distance_ratio(atoms) >= 0.7 - 1e-9
        assert min_distance(atoms) > 1.5
        assert atoms.get_volume() > 0
        assert atoms.info["source"].startswith(f"pyxtal:sg{atoms.info['spacegroup']}:")
        # pyxtal places atoms with the requested symmetry (spglib may find a supergroup)
        assert _spacegroup(atoms) >= 1
    assert len(nel) >= 2  # several numbers of elements drawn


def test_random_crystals_options_and_errors():
    _need_pyxtal()
    out = random_crystals(["Cu", "Au"], 3, 1, n_elements=(2, 2), min_atoms=4, max_atoms=16,
                          groups=[225, 221])
    assert len(out) == 3
    for atoms in out:
        assert set(atoms.get_chemical_symbols()) == {"Cu", "Au"}
        assert 4 <= len(atoms) <= 16 and atoms.info["spacegroup"] in (225, 221)
        assert _spacegroup(atoms) in (221, 225, 229)  # requested group or a supergroup
    with pytest.raises(ValueError, match="unknown element"):
        random_crystals(["Cu", "Qq"], 1, 0)
    with pytest.raises(ValueError, match="n_elements"):
        random_crystals(["Cu"], 1, 0, n_elements=(2, 3))
    # impossible request: too few attempts gives a short list, never an exception
    assert len(random_crystals(["Cu"], 5, 0, max_attempts=1)) <= 1


@pytest.mark.parametrize(
    "name, deco, formula, spacegroup",
    [
        ("fcc", {"A": "Cu"}, "Cu", 225),
        ("hcp", {"A": "Ni"}, "Ni2", 194),
        ("L1_2", {"A": "Cu", "B": "Au"}, "AuCu3", 221),
        ("L1_0", {"A": "Cu", "B": "Au"}, "AuCu", 123),
        ("B2", {"A": "Ni", "B": "Al"}, "AlNi", 221),
        ("B32", {"A": "Ni", "B": "Al"}, "Al2Ni2", 227),
        ("D0_3", {"A": "Ni", "B": "Al"}, "AlNi3", 225),
        ("L2_1", {"A": "Ni", "B": "Al", "C": "Pd"}, "AlNi2Pd", 225),
        ("C1_b", {"A": "Ni", "B": "Al", "C": "Pd"}, "AlNiPd", 216),
    ],
)
def test_prototypes_structure(name, deco, formula, spacegroup):
    atoms = build_prototype(name, deco)
    assert atoms.get_chemical_formula(mode="metal") == formula
    assert _spacegroup(atoms) == spacegroup
    # volume = sum of atomic volumes (Vegard); fcc Cu at ASE's reference lattice constant
    if name == "fcc":
        assert atoms.get_volume() == pytest.approx(3.61**3 / 4, rel=1e-9)
        assert min_distance(atoms) == pytest.approx(nn_distance("Cu"), rel=1e-9)


def test_decorated_prototypes_counts_and_variants():
    els = ["Cu", "Au", "Ni"]
    base = decorated_prototypes(els, ["fcc", "L1_2", "B2", "L2_1", "C1_b"])
    by = {}
    for atoms in base:
        by.setdefault(atoms.info["prototype"], []).append(atoms)
    # 3 elements; L1_2 A3B: 6 ordered pairs; B2 symmetric: 3 pairs; L2_1 A2BC: 3; C1_b: 3
    assert {k: len(v) for k, v in by.items()} == {"fcc": 3, "L1_2": 6, "B2": 3, "L2_1": 3,
                                                  "C1_b": 3}
    assert len({a.info["source"] for a in base}) == len(base)
    assert max_elements_ok(decorated_prototypes(els, ["L2_1"], max_elements=2))

    var = decorated_prototypes(els, ["L1_2", "fcc"], variants=2, rattle=0.05, rng=3,
                               max_atoms=32)
    var2 = decorated_prototypes(els, ["L1_2", "fcc"], variants=2, rattle=0.05, rng=3,
                                max_atoms=32)
    assert len(var) == 3 * (6 + 3) and all(_same(a, b) for a, b in zip(var, var2))
    for atoms in var:
        assert len(atoms) <= 32 and min_distance_ratio(atoms) >= 0.7
        assert set(atoms.get_chemical_symbols()) <= set(els)
    variants = [a for a in var if "/v" in a.info["source"]]
    assert len(variants) == 2 * 9
    for atoms in variants:
        assert len(atoms) >= 8  # a supercell
    # a swap keeps the composition of an L1_2 supercell; a substitution changes an fcc one
    l12 = [a for a in variants if a.info["prototype"] == "L1_2"]
    assert all(len(a) == 32 and sorted(set(np.unique(a.numbers, return_counts=True)[1]))
               == [8, 24] for a in l12)
    fcc = [a for a in variants if a.info["prototype"] == "fcc"]
    assert all(len(set(a.get_chemical_symbols())) == 2 for a in fcc)
    with pytest.raises(ValueError, match="unknown prototype"):
        decorated_prototypes(els, ["L12"])
    assert set(PROTOTYPES) >= {"fcc", "bcc", "hcp", "L1_2", "L1_0", "B2", "B32", "D0_3", "L2_1"}


def max_elements_ok(structures) -> bool:
    """``max_elements=2`` leaves ternary prototypes out."""
    return structures == []
