"""lamkit.relax with small random-weight models: step-by-step equality with ASE's FIRE / LBFGS
on FrechetCellFilter (also with pressure and hydrostatic strain) driven by LamCalculator;
batched relaxation of mixed structures equals relaxing each alone, whatever the atom budget;
explosions, evaluation errors and invalid inputs are flagged while the batch goes on."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE, LBFGS

from lamkit.infer import DeepPot, LamCalculator
from lamkit.relax import AsePotential, LamkitPotential, Relaxer, relax
from lamkit.testing.alloys import make_dpa1, make_se_e2_a, mixed_structures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dp():
    return DeepPot(make_se_e2_a(), device="cpu")


def strained_alloy(seed: int = 2) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 1, 1)
    atoms.symbols[[1, 4]] = "Au"
    atoms.symbols[6] = "Ni"
    atoms.rattle(0.1, seed=seed)
    strain = np.eye(3) + rng.normal(scale=0.03, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    return atoms


def ase_trajectory(atoms, dp, optimizer, mode, pressure, steps=20):
    """(positions, cell, energy) after each of ASE's steps (index 0: the input)."""
    ref = atoms.copy()
    ref.calc = LamCalculator(dp)
    if mode == "fixed":
        target = ref
    else:
        target = FrechetCellFilter(
            ref, hydrostatic_strain=mode == "hydrostatic", scalar_pressure=pressure * units.GPa
        )
    opt = {"fire": FIRE, "lbfgs": LBFGS}[optimizer](target, logfile=None)
    traj = []
    opt.attach(
        lambda: traj.append(
            (ref.positions.copy(), ref.cell.array.copy(), ref.get_potential_energy())
        )
    )
    opt.run(fmax=1e-9, steps=steps)
    return traj


@pytest.mark.parametrize(
    "optimizer, mode, pressure",
    [
        ("fire", "frechet", 0.0),
        ("lbfgs", "frechet", 0.0),
        ("fire", "frechet", 3.0),
        ("fire", "hydrostatic", -2.0),
        ("lbfgs", "hydrostatic", 4.0),
        ("fire", "fixed", 0.0),
        ("lbfgs", "fixed", 0.0),
    ],
)
def test_trajectory_equals_ase(dp, optimizer, mode, pressure):
    """The first 20 steps: positions, cell and energy as ASE's optimizer on
    FrechetCellFilter(atoms) with LamCalculator (float64), after every step for FIRE with the
    Frechet filter, after a sample of steps for the other settings."""
    atoms = strained_alloy()
    traj = ase_trajectory(atoms, dp, optimizer, mode, pressure)
    assert len(traj) == 21
    relaxer = Relaxer(dp, optimizer=optimizer, cell_filter=mode, pressure=pressure, fmax=1e-9)
    moved = False
    every = (optimizer, mode, pressure) == ("fire", "frechet", 0.0)
    for k, (pos, cell, energy) in enumerate(traj):
        if not every and k not in (0, 1, 2, 3, 7, 12, 20):
            continue
        relaxer.steps = k
        (res,) = relaxer.run([atoms])
        assert res.steps == k and res.status == "unconverged"
        np.testing.assert_allclose(res.atoms.positions, pos, rtol=0, atol=1e-8)
        np.testing.assert_allclose(res.atoms.cell.array, cell, rtol=0, atol=1e-8)
        assert res.energy == pytest.approx(energy, abs=1e-8)
        assert res.initial_energy == pytest.approx(traj[0][2], abs=1e-10)
        moved = moved or not np.allclose(cell, atoms.cell.array, atol=1e-3)
    assert moved == (mode != "fixed")


def _key(res):
    return (res.status, res.steps, res.converged)


def assert_same_results(a, b, atol=1e-8):
    assert [_key(r) for r in a] == [_key(r) for r in b]
    for ra, rb in zip(a, b):
        np.testing.assert_allclose(ra.atoms.positions, rb.atoms.positions, rtol=0, atol=atol)
        np.testing.assert_allclose(ra.atoms.cell.array, rb.atoms.cell.array, rtol=0, atol=atol)
        assert ra.energy == pytest.approx(rb.energy, abs=atol)
        np.testing.assert_allclose(ra.forces, rb.forces, rtol=0, atol=atol)


class CountingPotential:
    """Records the atom count of every evaluation of the wrapped potential."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    def evaluate(self, systems):
        self.calls.append(sum(len(s[0]) for s in systems))
        return self.inner.evaluate(systems)


@pytest.mark.parametrize("optimizer", ["fire", "lbfgs"])
def test_batched_equals_alone(optimizer):
    """Mixed sizes (1-64 atoms), chemistries, triclinic cells and a non-periodic cluster:
    relaxing all at once, in flight under a small atom budget, or one at a time (budget 1)
    gives the same positions, cells, energies, forces and step counts."""
    structures = mixed_structures(seed=5)
    pot = CountingPotential(LamkitPotential(make_dpa1()))
    kw = dict(optimizer=optimizer, fmax=0.15, steps=25)
    together = relax(structures, pot, max_atoms=10_000, **kw)
    assert len(pot.calls) == max(r.steps for r in together) + 1  # one call per step
    pot.calls.clear()
    in_flight = relax(structures, pot, max_atoms=40, **kw)
    assert max(pot.calls) == 64 and sorted(pot.calls)[-2] <= 40  # 64-atom one ran alone
    flights = len(pot.calls)
    pot.calls.clear()
    alone = relax(structures, pot, max_atoms=1, **kw)
    assert len(pot.calls) == sum(r.steps + 1 for r in alone) > flights
    assert_same_results(together, alone)
    assert_same_results(in_flight, alone)
    statuses = {r.status for r in alone}
    assert "converged" in statuses and statuses <= {"converged", "unconverged", "exploded"}
    cluster = alone[3]
    assert not cluster.atoms.pbc.any() and cluster.stress is None
    np.testing.assert_array_equal(cluster.atoms.cell.array, structures[3].cell.array)
    for res, atoms in zip(alone, structures):
        assert res.atoms.get_chemical_symbols() == atoms.get_chemical_symbols()
        assert res.atoms.get_potential_energy() == res.energy
        if res.converged:
            assert res.fmax < 0.15


def test_model_file_and_float32(tmp_path):
    """A model file works as the potential; dtype float32 converts the model's precision."""
    import torch

    from lamkit.model import save_model

    model = make_se_e2_a()
    path = tmp_path / "model.pt"
    save_model(model, path)
    relaxer = Relaxer(str(path), dtype="float32", fmax=1e-4, steps=3)
    assert relaxer.potential.model.descriptor.dtype == torch.float32
    (res,) = relaxer.run([strained_alloy()])
    assert res.steps == 3 and np.isfinite(res.energy)
    assert Relaxer(model).potential.model is model  # float64 already: used as it is


def test_float32(dp):
    """dtype float32: optimizer state and model in single precision, close to float64."""
    atoms = strained_alloy()
    kw = dict(fmax=0.05, steps=8)
    r64 = relax([atoms], dp, **kw)[0]
    r32 = relax([atoms], dp, dtype="float32", **kw)[0]
    assert r32.steps == r64.steps
    np.testing.assert_allclose(r32.atoms.positions, r64.atoms.positions, atol=1e-3)
    assert r32.energy == pytest.approx(r64.energy, abs=1e-3)


class Expanding(Calculator):
    """E = -k V: a constant tension that blows the cell up."""

    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        k = 0.5
        self.results = {
            "energy": -k * self.atoms.get_volume(),
            "forces": np.zeros((len(self.atoms), 3)),
            "stress": np.array([-k, -k, -k, 0.0, 0.0, 0.0]),
        }


class Collapsing(Calculator):
    """E = sum of k |r_ij|^2: pulls every pair together."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.positions
        centre = pos.mean(0)
        n = len(pos)
        self.results = {
            "energy": float(n * ((pos - centre) ** 2).sum()),
            "forces": -2.0 * n * (pos - centre),
        }


class Faulty:
    """A potential that returns NaN for structures containing Au and raises for Ni."""

    def __init__(self, inner):
        self.inner = inner

    def evaluate(self, systems):
        if any(28 in s[3] for s in systems):
            raise RuntimeError("cannot evaluate nickel")
        out = self.inner.evaluate(systems)
        for k, s in enumerate(systems):
            if 79 in s[3]:
                out.energy[k] = np.nan
        return out


def test_explosions_are_flagged_and_the_batch_goes_on(dp):
    cu = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    cu.rattle(0.05, seed=1)
    gold = cu.copy()
    gold.symbols[0] = "Au"
    nickel = cu.copy()
    nickel.symbols[0] = "Ni"
    seen = []
    res = relax(
        [cu, gold, nickel, cu],
        Faulty(LamkitPotential(dp)),
        cell_filter="fixed",
        steps=10,
        on_result=lambda i, r: seen.append(i),
    )
    assert sorted(seen) == [0, 1, 2, 3]
    assert res[1].status == "exploded" and "non-finite" in res[1].reason
    assert res[2].status == "exploded" and "cannot evaluate nickel" in res[2].reason
    assert np.isnan(res[2].energy) and np.isnan(res[2].initial_energy)
    alone = relax([cu], dp, cell_filter="fixed", steps=10)[0]
    for r in (res[0], res[3]):
        assert r.status == alone.status and r.steps == alone.steps
        np.testing.assert_allclose(r.atoms.positions, alone.atoms.positions, atol=1e-10)

    grow = relax([bulk("Cu", "fcc", a=3.6), cu], Expanding(), steps=100)
    assert grow[0].status == "exploded" and "volume changed by a factor" in grow[0].reason
    assert 1 < grow[0].steps < 100 and grow[1].status == "exploded"

    pair = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])
    near = relax([pair], Collapsing(), steps=100)[0]
    assert near.status == "exploded" and "Å apart" in near.reason, near.reason
    assert near.atoms.get_distance(0, 1) >= 0.3  # the last evaluated geometry


def test_invalid_inputs_are_rejected_not_raised(dp):
    good = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    nan = good.copy()
    nan.positions[0, 0] = np.nan
    oxide = Atoms("CuO", positions=[[0, 0, 0], [1.9, 0, 0]], cell=[4, 4, 4], pbc=True)
    flat = Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [0, 0, 0]], pbc=True)
    fixed = good.copy()
    fixed.set_constraint(FixAtoms(indices=[0]))
    res = relax([nan, good, oxide, Atoms(), flat, fixed], dp, steps=5, progress=True)
    reasons = [r.reason for r in res]
    assert res[1].status in ("converged", "unconverged") and np.isfinite(res[1].energy)
    cases = [(0, "NaN"), (2, "['O']"), (3, "no atoms"), (4, "zero-volume"), (5, "FixAtoms")]
    for k, text in cases:
        assert res[k].status == "exploded" and text in reasons[k], reasons[k]
        assert res[k].steps == 0 and not res[k].converged


def test_arguments_are_checked(dp):
    with pytest.raises(ValueError, match="optimizer"):
        Relaxer(dp, optimizer="bfgs")
    with pytest.raises(ValueError, match="cell_filter"):
        Relaxer(dp, cell_filter="unit")
    with pytest.raises(ValueError, match="FIRE options"):
        Relaxer(dp, optimizer_options={"dtt": 0.1})
    with pytest.raises(TypeError, match="potential"):
        Relaxer(42)
    assert isinstance(Relaxer(LamCalculator(dp)).potential, AsePotential)
