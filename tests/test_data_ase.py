"""ASE-readable files (extxyz) as systems: labels, virial sign, element remap, splitting."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from lamkit.data import DataRequirement, is_deepmd_dir, load_ase
from lamkit.errors import DataError

REQS = [
    DataRequirement("energy", 1, must=True),
    DataRequirement("force", 3, atomic=True),
    DataRequirement("virial", 9),
]


def labelled(atoms: Atoms) -> Atoms:
    """Attach EMT energy/forces/stress as a SinglePointCalculator (what extxyz stores)."""
    atoms.calc = EMT()
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def cu_au_frames(n: int, repeat=(1, 1, 2)) -> list[Atoms]:
    frames = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * repeat
        atoms.symbols[[1, len(atoms) - 3]] = "Au"
        atoms.rattle(0.05, seed=i)
        frames.append(labelled(atoms))
    return frames


@pytest.fixture
def extxyz(tmp_path):
    frames = cu_au_frames(3)
    path = tmp_path / "cuau.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path, frames


def test_extxyz_labels_and_remap(extxyz):
    path, _ = extxyz
    frames = ase.io.read(path, ":")  # extxyz rounds positions; compare with what it stores
    (s,) = load_ase(path, ["H", "Au", "Cu"], REQS, sort_atoms=False)
    assert (s.nframes, s.natoms, s.pbc, s.mixed_type) == (3, 8, True, False)
    assert s.path == str(path) and s.type_map == ["H", "Au", "Cu"]
    np.testing.assert_array_equal(s.atype[0], [2, 1, 2, 2, 2, 1, 2, 2])
    np.testing.assert_array_equal(s.natoms_vec[0], [8, 8, 0, 2, 6])
    assert s.find == {"energy": 1.0, "force": 1.0, "virial": 1.0}
    for i, atoms in enumerate(frames):
        np.testing.assert_allclose(s.coords[i], atoms.positions, atol=1e-12)
        np.testing.assert_allclose(s.box[i], atoms.cell[:].reshape(9), atol=1e-12)
        np.testing.assert_allclose(s.labels["energy"][i, 0], atoms.get_potential_energy())
        np.testing.assert_allclose(s.labels["force"][i], atoms.get_forces(), atol=1e-12)
        virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
        np.testing.assert_allclose(s.labels["virial"][i], virial.reshape(9), atol=1e-10)
    # EMT stress is symmetric, so the virial is too (XY == YX)
    np.testing.assert_allclose(s.labels["virial"][:, 1], s.labels["virial"][:, 3])


def test_extxyz_sorted_by_type(extxyz):
    path, _ = extxyz
    frames = ase.io.read(path, ":")
    (s,) = load_ase(path, None, REQS)
    assert s.type_map == ["Cu", "Au"]  # sorted by atomic number without a model type_map
    np.testing.assert_array_equal(s.atype[0], [0] * 6 + [1] * 2)
    np.testing.assert_array_equal(s.atom_order, [0, 2, 3, 4, 6, 7, 1, 5])
    np.testing.assert_allclose(
        s.to_file_order(s.labels["force"][0], axis=0), frames[0].get_forces()
    )


def test_virial_matches_finite_difference_of_energy():
    """-stress*V is the virial convention W = -dE/dε (check one component numerically)."""
    atoms = cu_au_frames(1)[0]
    atoms.calc = EMT()
    virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    h, cell = 1e-5, atoms.cell[:].copy()
    energies = []
    for sign in (1, -1):
        strain = np.eye(3)
        strain[0, 0] += sign * h
        probe = atoms.copy()
        probe.calc = EMT()
        probe.set_cell(cell @ strain, scale_atoms=True)
        energies.append(probe.get_potential_energy())
    np.testing.assert_allclose(virial[0, 0], -(energies[0] - energies[1]) / (2 * h), rtol=1e-5)


def test_split_by_element_sequence_and_missing_virial(tmp_path):
    big, small = cu_au_frames(2), cu_au_frames(1, repeat=(1, 1, 1))
    mol = Atoms("CuAu", positions=[[0, 0, 0], [0, 0, 2.5]])
    mol.calc = SinglePointCalculator(mol, energy=1.5, forces=np.ones((2, 3)))
    path = tmp_path / "mixed.extxyz"
    ase.io.write(path, [big[0], small[0], mol, big[1]], format="extxyz")
    systems = load_ase(path, ["Cu", "Au"], REQS)
    assert [s.nframes for s in systems] == [2, 1, 1]
    assert [s.natoms for s in systems] == [8, 4, 2]
    assert [s.path for s in systems] == [f"{path}#0", f"{path}#1", f"{path}#2"]
    assert systems[2].box is None and not systems[2].pbc
    assert systems[2].find["virial"] == 0.0 and not systems[2].labels["virial"].any()
    assert systems[2].labels["energy"][0, 0] == 1.5


def test_unknown_element_names_file_frame_and_element(extxyz):
    path, _ = extxyz
    with pytest.raises(DataError) as info:
        load_ase(path, ["Cu", "Ag"], REQS)
    msg = str(info.value)
    assert str(path) in msg and "frame 0" in msg and "'Au'" in msg and "['Cu', 'Ag']" in msg


def test_missing_required_energy(tmp_path):
    path = tmp_path / "nolabel.xyz"
    ase.io.write(path, [Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])], format="extxyz")
    with pytest.raises(DataError, match="required label 'energy'"):
        load_ase(path, ["Cu"], REQS)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "garbage.xyz"
    bad.write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match="garbage.xyz"):
        load_ase(bad, None, REQS)
    with pytest.raises(DataError, match="does not exist"):
        load_ase(tmp_path / "nope.xyz", None, REQS)


def test_is_deepmd_dir(tmp_path, extxyz):
    path, _ = extxyz
    assert not is_deepmd_dir(path) and not is_deepmd_dir(tmp_path)
    (tmp_path / "type.raw").write_text("0\n")
    assert is_deepmd_dir(tmp_path)
