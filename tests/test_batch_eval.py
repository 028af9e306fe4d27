"""Mixed-size batched evaluation (lamkit.infer.batch, DeepPot.eval_atoms, LamkitPotential):
one model call on all atoms of structures of 1-64 atoms (triclinic cells, non-periodic
ones, several chemistries) gives each structure's energy, forces, virial and stress as
evaluating it alone does, for se_e2_a (type-sorted neighbour sections), DPA-1 and DPA-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from lamkit.infer import DeepPot, LamCalculator
from lamkit.infer.batch import _call_groups, batch_neighbors
from lamkit.relax import AsePotential, LamkitPotential
from lamkit.relax.potential import cast_model
from lamkit.testing.alloys import TYPE_MAP, make_dpa1, make_dpa2, make_se_e2_a, mixed_structures

pytestmark = pytest.mark.usefixtures("one_thread")


def make_dpa2_davg0():
    """DPA-2 as trained with its default ``set_davg_zero``: all structures in one call."""
    model = make_dpa2()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("davg"):
                buf.zero_()
    return model


# dpa2 keeps random davg statistics: structures are then grouped by their first atom's type
MODELS = {
    "se_e2_a": make_se_e2_a,
    "dpa1": make_dpa1,
    "dpa2": make_dpa2,
    "dpa2-davg0": make_dpa2_davg0,
}


@pytest.fixture(scope="module")
def structures():
    return mixed_structures()


@pytest.mark.parametrize("name", list(MODELS))
def test_batched_equals_alone(name, structures):
    dp = DeepPot(MODELS[name](), device="cpu")
    out = dp.eval_atoms(structures)
    assert out.energy.shape == (len(structures),) and out.virial.shape == (len(structures), 3, 3)
    for k, atoms in enumerate(structures):
        calc = LamCalculator(dp)
        atoms = atoms.copy()
        atoms.calc = calc
        e = atoms.get_potential_energy()
        assert out.energy[k] == pytest.approx(e, abs=1e-10)
        np.testing.assert_allclose(out.forces[k], atoms.get_forces(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(out.virial[k], calc.results["virial"], rtol=0, atol=1e-10)
        if atoms.pbc.any():
            np.testing.assert_allclose(out.stress[k], atoms.get_stress(), rtol=0, atol=1e-12)
        else:
            assert np.isnan(out.stress[k]).all()
    # a structure's result does not depend on its companions
    alone = dp.eval_atoms(structures[4:5])
    assert alone.energy[0] == pytest.approx(out.energy[4], abs=1e-10)


def test_call_groups(structures):
    types = [np.array([TYPE_MAP.index(s) for s in a.get_chemical_symbols()]) for a in structures]
    everyone = list(range(len(structures)))
    assert _call_groups(make_se_e2_a(), types) == [everyone]
    assert _call_groups(make_dpa2_davg0(), types) == [everyone]
    groups = _call_groups(make_dpa2(), types)
    assert sorted(k for g in groups for k in g) == everyone
    assert all(len({int(types[k][0]) for k in g}) == 1 for g in groups) and len(groups) > 1


def test_neighbor_blocks_do_not_cross(structures):
    model = make_se_e2_a()
    coords = [a.positions for a in structures]
    cells = [a.cell.array if a.pbc.any() else None for a in structures]
    types = [np.array([TYPE_MAP.index(s) for s in a.get_chemical_symbols()]) for a in structures]
    nb = batch_neighbors(coords, cells, types, model.rcut, model.sel, model.mixed_types)
    sizes = [len(a) for a in structures]
    owner_local = np.repeat(np.arange(len(sizes)), sizes)
    centre = np.repeat(owner_local, nb.nlist.shape[1]).reshape(nb.nlist.shape)
    used = nb.nlist >= 0
    assert used.any()
    assert np.array_equal(nb.owner[nb.nlist[used]], centre[used])
    assert np.array_equal(nb.owner[: sum(sizes)], owner_local)
    # the cluster (index 3) has no ghosts, periodic ones do
    assert not np.any(nb.owner[sum(sizes) :] == 3)


def test_eval_atoms_errors_name_the_structure(structures):
    dp = DeepPot(make_se_e2_a(), device="cpu")
    bad = structures[:2] + [Atoms("CuO", positions=[[0, 0, 0], [2, 0, 0]])]
    with pytest.raises(ValueError, match=r"structure 2 .*\['O'\]"):
        dp.eval_atoms(bad)
    flat = Atoms("Cu", cell=[[1, 0, 0], [0, 1, 0], [0, 0, 0]], pbc=True)
    with pytest.raises(ValueError, match="structure 0 .*non-zero volume"):
        dp.eval_atoms([flat])


def test_chunked_batch_is_exact(structures):
    dp = DeepPot(make_dpa1(), device="cpu")
    whole = dp.eval_atoms(structures, chunk_atoms=0)
    sliced = dp.eval_atoms(structures, chunk_atoms=16)
    np.testing.assert_allclose(sliced.energy, whole.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        np.concatenate(sliced.forces), np.concatenate(whole.forces), atol=1e-10
    )


def _systems(structures):
    return [(a.positions, a.cell.array, a.pbc, a.numbers) for a in structures]


def test_potentials_agree(structures):
    """LamkitPotential (batched) and AsePotential(LamCalculator) (one by one) give the same
    numbers; the float32 copy of the model stays close and leaves the caller's model alone."""
    model = make_dpa1()
    batched = LamkitPotential(model).evaluate(_systems(structures))
    serial = AsePotential(LamCalculator(DeepPot(model, device="cpu"))).evaluate(
        _systems(structures)
    )
    np.testing.assert_allclose(batched.energy, serial.energy, rtol=0, atol=1e-10)
    np.testing.assert_allclose(batched.stress, serial.stress, rtol=0, atol=1e-12)
    low = LamkitPotential(model, dtype="float32")
    assert low.model.descriptor.dtype == torch.float32
    assert model.descriptor.dtype == torch.float64
    out32 = low.evaluate(_systems(structures))
    np.testing.assert_allclose(out32.energy, batched.energy, rtol=1e-5, atol=1e-4)
    assert cast_model(model, "float64") is model


def test_lamkit_potential_rejects_unknown_elements():
    pot = LamkitPotential(make_se_e2_a())
    assert pot.validate(np.array([29, 79])) is None
    assert "['O']" in pot.validate(np.array([29, 8]))
