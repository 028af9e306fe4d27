"""lamkit.infer.LamCalculator: consistency with DeepPot, stress by finite differences,
relaxation and NVE dynamics with a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from lamkit.infer import DP, DeepPot, LamCalculator
from lamkit.model import build_model, save_model

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_e2_a",
        "sel": [20, 40],
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [8, 16],
        "axis_neuron": 4,
        "seed": 1,
    },
    "fitting_net": {"neuron": [32, 32], "seed": 1},
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = build_model(CONFIG)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        d = model.descriptor
        d.davg.copy_(0.1 * torch.rand(d.davg.shape, generator=g, dtype=d.davg.dtype))
        d.dstd.copy_(0.05 + 0.2 * torch.rand(d.dstd.shape, generator=g, dtype=d.dstd.dtype))
        model.out_bias.copy_(torch.tensor([[-93.6], [-187.2]], dtype=torch.float64))
    path = tmp_path_factory.mktemp("ase") / "tiny.pt"
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def dp(model_file):
    return DeepPot(model_file, device="cpu")


def water_box(seed: int = 0, pbc=True) -> Atoms:
    """Four water-like O/H triples (12 atoms) on a jittered grid in a skewed ~6 Å cell."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (2, 2, 3)], indexing="ij"), -1)
    pos = grid.reshape(-1, 3) * [3.0, 3.0, 2.0] + 0.5 + rng.normal(scale=0.2, size=(12, 3))
    cell = np.diag([6.0, 6.2, 5.9]) + [[0, 0, 0], [0.3, 0, 0], [0.2, -0.1, 0]]
    return Atoms("OH2" * 4, positions=pos, cell=cell, pbc=pbc)


def test_matches_deep_pot(dp):
    atoms = water_box()
    atoms.calc = LamCalculator(dp)
    e, f, v = dp.eval(atoms.positions[None], atoms.cell.array.reshape(1, 9), [0, 1, 1] * 4)
    assert atoms.get_potential_energy() == pytest.approx(e[0, 0], rel=1e-14)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(e[0, 0])
    np.testing.assert_allclose(atoms.get_forces(), f[0], rtol=1e-12, atol=1e-14)
    w = v[0].reshape(3, 3)
    np.testing.assert_allclose(atoms.calc.results["virial"], w)
    sym = -0.5 * (w + w.T) / atoms.get_volume()
    np.testing.assert_allclose(atoms.get_stress(voigt=False), sym, rtol=1e-12, atol=1e-15)
    energies = atoms.get_potential_energies()
    assert energies.shape == (12,) and energies.sum() == pytest.approx(e[0, 0], rel=1e-12)


def test_stress_is_strain_derivative(dp):
    """stress = (1/V) dE/d(strain): symmetric strain applied to cell and positions."""
    atoms = water_box(1)
    atoms.calc = LamCalculator(dp)
    stress = atoms.get_stress(voigt=False)
    cell0, pos0, vol = atoms.cell.array.copy(), atoms.positions.copy(), atoms.get_volume()
    h = 1e-5
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            es = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[i, j] += 0.5 * sign * h
                eps[j, i] += 0.5 * sign * h
                deform = np.eye(3) + eps
                strained = atoms.copy()
                strained.set_cell(cell0 @ deform)
                strained.positions = pos0 @ deform
                strained.calc = atoms.calc
                es.append(strained.get_potential_energy())
            fd[i, j] = (es[0] - es[1]) / (2 * h) / vol
    np.testing.assert_allclose(stress, fd, atol=1e-7 * max(1.0, np.abs(fd).max()))


def test_forces_are_position_derivative(dp):
    atoms = water_box(2)
    atoms.calc = LamCalculator(dp)
    f = atoms.get_forces()
    h = 1e-5
    for a, k in [(0, 0), (4, 2), (11, 1)]:
        es = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[a, k] += sign * h
            moved.calc = atoms.calc
            es.append(moved.get_potential_energy())
        assert -(es[0] - es[1]) / (2 * h) == pytest.approx(f[a, k], abs=1e-6)


def test_bfgs_lowers_energy(model_file):
    atoms = water_box(3)
    atoms.calc = DP(model_file)
    e0 = atoms.get_potential_energy()
    BFGS(atoms, maxstep=0.05, logfile=None).run(fmax=1e-3, steps=5)
    assert atoms.get_potential_energy() < e0


def test_nve_conserves_energy(dp):
    atoms = water_box(4)
    atoms.calc = LamCalculator(dp)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    md = VelocityVerlet(atoms, timestep=0.1 * units.fs, logfile=None)
    epot, etot = [], []
    md.attach(
        lambda: (epot.append(atoms.get_potential_energy()), etot.append(atoms.get_total_energy())),
        interval=1,
    )
    md.run(20)
    assert len(etot) == 21
    drift = np.ptp(etot)
    assert drift < 1e-3 * atoms.get_kinetic_energy()
    assert np.ptp(epot) > 100 * drift  # energy really flows between potential and kinetic


def test_unknown_element_is_named(dp):
    atoms = Atoms("OH2C", positions=np.eye(4, 3) * 1.5, cell=np.eye(3) * 6, pbc=True)
    atoms.calc = LamCalculator(dp)
    with pytest.raises(ValueError, match=r"\['C'\] not in the model's type map \['O', 'H'\]"):
        atoms.get_potential_energy()


def test_nonperiodic_has_no_stress(dp):
    atoms = water_box(5, pbc=False)
    atoms.calc = LamCalculator(dp)
    e = atoms.get_potential_energy()
    ref = dp.eval(atoms.positions[None], None, [0, 1, 1] * 4)[0][0, 0]
    assert e == pytest.approx(ref, rel=1e-14)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_type_dict(dp):
    with pytest.raises(ValueError, match=r"type_dict: 'H' -> 5 is out of range"):
        LamCalculator(dp, type_dict={"O": 0, "H": 5})
    # relabelled elements: 'X' plays oxygen, 'Y' hydrogen
    atoms = water_box(6)
    relabelled = atoms.copy()
    relabelled.set_chemical_symbols(["N", "He", "He"] * 4)
    atoms.calc = LamCalculator(dp)
    relabelled.calc = LamCalculator(dp, type_dict={"N": 0, "He": 1})
    assert relabelled.get_potential_energy() == pytest.approx(atoms.get_potential_energy())
