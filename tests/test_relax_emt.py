"""lamkit.relax against known answers with ASE's EMT (through AsePotential): a cell relaxation
of fcc Cu ends at the equation-of-state minimum with zero stress (and at the pressure asked
for), a hydrostatic relaxation only scales the cell, L-BFGS brings a rattled crystal back to
the perfect lattice, and mixed alloys converge as ASE's own optimizer does."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.optimize import LBFGS

from lamkit.relax import AsePotential, relax


@pytest.fixture(scope="module")
def cu_eos():
    """EMT fcc Cu: E(V) per atom on a fine grid, fitted (stabilized jellium EOS)."""
    volumes, energies = [], []
    for a in np.linspace(3.52, 3.66, 15):
        atoms = bulk("Cu", "fcc", a=a)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    eos = EquationOfState(volumes, energies, eos="sj")
    eos.fit()
    return eos


def distorted_cu(seed: int = 0):
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.72, cubic=True)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))), True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def pressure_of(atoms) -> float:
    """-dE/dV (eV/Å^3) by central differences of EMT energies under isotropic scaling."""
    values = []
    for scale in (1 - 1e-4, 1 + 1e-4):
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array * scale, scale_atoms=True)
        strained.calc = EMT()
        values.append((strained.get_volume(), strained.get_potential_energy()))
    (v1, e1), (v2, e2) = values
    return -(e2 - e1) / (v2 - v1)


@pytest.mark.parametrize("optimizer", ["fire", "lbfgs"])
def test_cell_relaxation_reaches_the_eos_minimum(cu_eos, optimizer):
    v0 = cu_eos.v0
    perfect = bulk("Cu", "fcc", a=(4 * v0) ** (1 / 3))
    perfect.calc = EMT()
    e0 = perfect.get_potential_energy()  # at the minimum: insensitive to the fit's error
    (res,) = relax([distorted_cu()], EMT(), optimizer=optimizer, fmax=1e-4, smax=1e-6, steps=1000)
    assert res.status == "converged", res.reason
    atoms = res.atoms
    assert atoms.get_volume() / len(atoms) == pytest.approx(v0, rel=1e-4)
    assert res.energy_per_atom == pytest.approx(e0, abs=1e-8)
    assert np.abs(res.stress).max() < 1e-5
    lengths, angles = atoms.cell.cellpar()[:3], atoms.cell.cellpar()[3:]
    np.testing.assert_allclose(angles, 90.0, atol=0.01)
    np.testing.assert_allclose(lengths, (4 * v0) ** (1 / 3), rtol=1e-4)


def test_relaxation_under_pressure(cu_eos):
    """At 5 GPa the relaxed volume is where the EOS pressure is 5 GPa, with stress = -p I."""
    p = 5.0
    (res,) = relax([distorted_cu(1)], EMT(), pressure=p, fmax=1e-4, smax=1e-6, steps=1000)
    assert res.status == "converged", res.reason
    vol = res.atoms.get_volume() / len(res.atoms)
    assert vol < cu_eos.v0
    assert pressure_of(res.atoms) / units.GPa == pytest.approx(p, rel=1e-3)
    np.testing.assert_allclose(res.stress, [-p * units.GPa] * 3 + [0] * 3, atol=1e-5)


def test_hydrostatic_only_scales_the_cell():
    start = distorted_cu(2)
    (res,) = relax([start], EMT(), cell_filter="hydrostatic", fmax=1e-3, steps=500)
    assert res.status == "converged", res.reason
    ratio = np.linalg.solve(start.cell.array, res.atoms.cell.array)
    scale = ratio[0, 0]
    np.testing.assert_allclose(ratio, scale * np.eye(3), atol=1e-10)
    assert scale != pytest.approx(1.0, abs=1e-3)
    assert abs(res.stress[:3].mean()) < 2e-4  # only the pressure is relaxed


def test_lbfgs_restores_the_perfect_lattice():
    perfect = bulk("Cu", "fcc", a=3.59, cubic=True) * (2, 2, 2)
    perfect.calc = EMT()
    e_perfect = perfect.get_potential_energy()
    rattled = perfect.copy()
    rattled.rattle(0.08, seed=4)
    (res,) = relax([rattled], EMT(), optimizer="lbfgs", cell_filter="fixed", fmax=1e-4, steps=300)
    assert res.status == "converged" and res.fmax < 1e-4
    assert res.energy == pytest.approx(e_perfect, abs=1e-7)
    assert res.initial_energy > res.energy + 0.05
    # back on the lattice up to one common translation
    shift = (res.atoms.positions - perfect.positions).mean(0)
    np.testing.assert_allclose(res.atoms.positions - shift, perfect.positions, atol=1e-4)


def test_alloys_converge_like_ase():
    structures = []
    for k, (a, b) in enumerate([("Cu", "Au"), ("Ni", "Al"), ("Pd", "Pt"), ("Ag", "Cu")]):
        atoms = bulk(a, "fcc", a=3.8, cubic=True)
        atoms.symbols[k % 4] = b
        atoms.rattle(0.05, seed=k)
        structures.append(atoms)
    results = relax(structures, AsePotential(EMT()), optimizer="lbfgs", fmax=0.01, steps=300)
    for atoms, res in zip(structures, results):
        assert res.status == "converged" and res.fmax < 0.01, res.reason
        # cell rows ~ stress x volume / atoms near F = I
        assert np.abs(res.stress).max() < 2 * 0.01 * len(atoms) / res.atoms.get_volume()
    for atoms, res in list(zip(structures, results))[:2]:  # ASE's own run (slow: scipy)
        ref = atoms.copy()
        ref.calc = EMT()
        opt = LBFGS(FrechetCellFilter(ref), logfile=None)
        opt.run(fmax=0.01, steps=300)
        assert res.steps == opt.nsteps
        assert res.energy == pytest.approx(ref.get_potential_energy(), abs=1e-8)
