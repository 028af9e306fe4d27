"""Finding systems in directories and files (deterministic order, clear errors)."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lamkit.data import DataRequirement, expand_systems, load_systems
from lamkit.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared example data not found at {path}")
    return path


def make_system(root: Path, natoms: int = 2) -> Path:
    (root / "set.000").mkdir(parents=True)
    (root / "type.raw").write_text("0\n" * natoms)
    (root / "nopbc").touch()
    np.save(root / "set.000" / "coord.npy", np.arange(natoms * 3.0).reshape(1, -1))
    np.save(root / "set.000" / "energy.npy", np.array([1.0]))
    return root


def test_directory_is_searched_recursively_in_sorted_order(tmp_path):
    for name in ("b/sys2", "a/sys1", "a/sys0", "c"):
        make_system(tmp_path / name)
    (tmp_path / "empty").mkdir()
    found = expand_systems(str(tmp_path))
    assert found == [tmp_path / "a/sys0", tmp_path / "a/sys1", tmp_path / "b/sys2", tmp_path / "c"]


def test_water_directory():
    root = shared("water")
    assert expand_systems(root) == [root / f"data_{i}" for i in range(4)]
    assert expand_systems([root / "data_2", root / "data_0"]) == [root / "data_2", root / "data_0"]


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(DataError, match="does-not-exist"):
        expand_systems([tmp_path / "does-not-exist"])
    (tmp_path / "nothing" / "here").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no system found in .*nothing"):
        expand_systems(tmp_path / "nothing")
    with pytest.raises(DataError, match="empty"):
        expand_systems([])


def test_load_directories_and_ase_files_together(tmp_path):
    make_system(tmp_path / "npy", natoms=3)
    mol = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    mol.calc = SinglePointCalculator(mol, energy=-1.0, forces=np.zeros((2, 3)))
    ase.io.write(tmp_path / "h2.xyz", [mol, mol], format="extxyz")
    systems = load_systems(
        [tmp_path / "npy", tmp_path / "h2.xyz"], ["H"], [DataRequirement("energy", 1, must=True)]
    )
    assert [(s.natoms, s.nframes, s.pbc) for s in systems] == [(3, 1, False), (2, 2, False)]
    assert systems[1].labels["energy"][:, 0].tolist() == [-1.0, -1.0]
