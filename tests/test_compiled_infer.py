"""Compiled inference (``DeepPot(..., compile=True)``, :mod:`lamkit.infer.compiled`): the
traced and Inductor-compiled energy + force graph gives the eager model's energies, forces and
virials; one graph serves every input of its shape bucket (no input value is baked into it);
new shapes, type-sorted models and unsupported options are handled; failures fall back to eager
evaluation with a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lamkit.infer import DeepPot
from lamkit.infer.compiled import ghost_bucket
from lamkit.testing import standard_system
from lamkit.testing.factories import make_dpa2

from .conftest import IN_CI

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def cxx_compiler():
    """Inductor builds C++ kernels: skip (fail under CI) without a compiler."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # no g++/clang++ on PATH
        if IN_CI:
            pytest.fail(f"CI must provide a C++ compiler for compiled inference: {exc}")
        pytest.skip(f"no C++ compiler for Inductor: {exc}")


def compare(got, want, rtol=1e-10, atol=1e-11):
    for name, a, b in zip(("energy", "force", "virial", "atom_energy", "atom_virial"), got, want):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def dpa2():
    model = make_dpa2(update_g2_has_attn=True, update_residual=0.2).eval()
    model.requires_grad_(False)
    return DeepPot(model), DeepPot(model, compile=True)


@pytest.fixture(scope="module")
def system(dpa2):
    eager, _ = dpa2
    return standard_system("cubic", 2, eager.get_rcut(), seed=21)


def frame(system, shift=0.0):
    coord = system.coord.reshape(1, -1, 3) + shift
    return coord, system.cell.reshape(1, 9), system.atype


def test_matches_eager_and_one_graph_serves_new_coordinates(dpa2, system):
    eager, compiled = dpa2
    coord, cell, atype = frame(system)
    compare(compiled.eval(coord, cell, atype), eager.eval(coord, cell, atype))
    assert len(compiled.compiled.graphs) == 1
    # other coordinates of the same shape bucket: the same graph, the eager numbers
    rng = np.random.default_rng(3)
    moved = coord + rng.normal(scale=2e-3, size=coord.shape)
    compare(compiled.eval(moved, cell, atype), eager.eval(moved, cell, atype))
    assert len(compiled.compiled.graphs) == 1
    assert not np.allclose(eager.eval(moved, cell, atype)[1], eager.eval(coord, cell, atype)[1])


def test_narrower_lists_run_the_widest_graph(system, monkeypatch):
    """At one atom count, a frame whose trimmed lists are narrower than the widest met so far
    runs that width's graph (padded with empty slots) and gives the eager numbers."""
    import torch._inductor

    monkeypatch.setattr(torch._inductor, "compile", lambda gm, inputs: gm)  # traced, not built
    model = make_dpa2(update_g2_has_attn=True, update_residual=0.2).eval()
    model.requires_grad_(False)
    eager, compiled = DeepPot(model), DeepPot(model, compile=True)
    coord, cell, atype = frame(system)
    graphs = compiled.compiled
    natural = graphs.model.descriptor.graph_inputs
    seen = []

    def recording(*args, **kw):
        lists = natural(*args, **kw)
        seen.append({name: t.shape[-1] for name, t in lists.items()})
        return lists

    monkeypatch.setattr(graphs.model.descriptor, "graph_inputs", recording)
    compare(compiled.eval(coord, cell, atype), eager.eval(coord, cell, atype))
    wider = {
        name: min(w + 4, graphs.model.descriptor._blocks()[name].nnei)
        for name, w in seen[0].items()
    }
    assert wider != seen[0]
    graphs.widest[coord.shape[1]] = dict(wider)  # as if a wider frame had come before
    moved = coord + np.random.default_rng(5).normal(scale=2e-3, size=coord.shape)
    compare(compiled.eval(moved, cell, atype), eager.eval(moved, cell, atype))
    widths = [tuple(w for _, (*_, w) in key[5]) for key in graphs.graphs]
    assert widths == [tuple(seen[0].values()), tuple(wider.values())]
    assert all(seen[1][k] <= wider[k] for k in wider)


def test_several_frames_and_atomic_outputs(dpa2, system):
    eager, compiled = dpa2
    coord, cell, atype = frame(system)
    two = np.concatenate([coord, coord + 0.01])
    cells = np.concatenate([cell, cell])
    compare(compiled.eval(two, cells, atype), eager.eval(two, cells, atype))
    before = len(compiled.compiled.graphs)
    # atomic virials are evaluated eagerly (no new graph), with the same numbers
    compare(
        compiled.eval(coord, cell, atype, atomic=True), eager.eval(coord, cell, atype, atomic=True)
    )
    assert len(compiled.compiled.graphs) == before


def test_type_sorted_models_are_refused():
    from lamkit.descriptor.se_e2_a import SeA
    from lamkit.fitting.energy import EnergyFitting
    from lamkit.model.energy_model import EnergyModel

    desc = SeA(2, [20, 20], 4.0, 0.5, neuron=[4, 8], axis_neuron=4, seed=1)
    fit = EnergyFitting(2, desc.dim_out, False, neuron=[8], seed=1)
    model = EnergyModel(desc, fit, ["O", "H"]).eval()
    with pytest.raises(ValueError, match="sorts atoms by type"):
        DeepPot(model, compile=True)
    DeepPot(model)  # eager evaluation is fine


def test_compile_failure_falls_back_to_eager(system, monkeypatch):
    model = make_dpa2(seed=4).eval()
    eager, compiled = DeepPot(model), DeepPot(model, compile=True)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch._inductor, "compile", broken)
    coord, cell, atype = frame(system)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here"):
        got = compiled.eval(coord, cell, atype)
    compare(got, eager.eval(coord, cell, atype), rtol=1e-13, atol=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        compiled.eval(coord, cell, atype)
    assert "no C++ compiler" in compiled.compiled.error


def test_ase_calculator_compile(dpa2, system):
    ase = pytest.importorskip("ase")
    from lamkit.infer.calculator import LamCalculator

    eager, compiled = dpa2
    atoms = ase.Atoms(
        numbers=[8 if t == 0 else 1 for t in system.atype],
        positions=system.coord.reshape(-1, 3),
        cell=system.cell.reshape(3, 3),
        pbc=True,
    )
    atoms.calc = LamCalculator(compiled, compile=True)
    forces = atoms.get_forces()
    coord, cell, atype = frame(system)
    np.testing.assert_allclose(forces, eager.eval(coord, cell, atype)[1][0], rtol=1e-10, atol=1e-11)
    with pytest.raises(ValueError, match="DeepPot\\(..., compile=True\\)"):
        LamCalculator(eager, compile=True)


@pytest.mark.parametrize("nall, want", [(1, 16), (16, 16), (17, 32), (989, 1024), (1025, 1152)])
def test_ghost_buckets(nall, want):
    assert ghost_bucket(nall) == want
