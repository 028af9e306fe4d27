"""Chunked evaluation (``lamkit.nn.chunking``): slicing the atom-local blocks over centre atoms
under activation checkpointing gives the numbers of whole-system evaluation, for every
descriptor; it only happens when asked (training is untouched); DeepPot and the ASE calculator
turn it on for frames above ``chunk_atoms``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit import keys, runtime
from lamkit.infer import AtomBudget, DeepPot, LamCalculator
from lamkit.nn import chunking
from lamkit.testing import random_system, standard_system
from lamkit.testing.factories import (
    DPA2_VARIANTS,
    make_dpa1,
    make_dpa2,
    make_se_e2_a,
    make_se_e3_tebd,
)
from lamkit.testing.systems import make_supercell

OUTPUTS = (keys.ENERGY, keys.ATOM_ENERGY, keys.FORCE, keys.VIRIAL, keys.ATOM_VIRIAL)


pytestmark = pytest.mark.usefixtures("one_thread")


MODELS = {
    **{
        f"dpa2-{name}-{'smooth' if smooth else 'nonsmooth'}": (
            lambda extra=extra, smooth=smooth: make_dpa2(smooth=smooth, **extra)
        )
        for name, extra in DPA2_VARIANTS.items()
        for smooth in (True, False)
    },
    "dpa1-concat-attn2": lambda: make_dpa1(attn_layer=2),
    "dpa1-strip-smooth-exclude": lambda: make_dpa1(
        tebd_input_mode="strip", smooth_type_embedding=True, exclude_types=[[0, 1]]
    ),
    "se_e3_tebd-concat": lambda: make_se_e3_tebd("concat"),
    "se_e3_tebd-strip-nonsmooth": lambda: make_se_e3_tebd("strip", smooth=False),
    "se_e2_a-two_side": lambda: make_se_e2_a(type_one_side=False),
    "se_e2_a-one_side": lambda: make_se_e2_a(type_one_side=True),
}


def batch(model, nframes: int = 2, seed: int = 7):
    """``nframes`` periodic 24-atom frames (a 2x1x1 supercell, jittered per frame), with
    ghost atoms, and their neighbour data."""
    base = make_supercell(standard_system("cubic", 2, model.rcut, seed=seed), (2, 1, 1))
    rng = np.random.default_rng(seed)
    coord = base.coord[None] + rng.normal(scale=0.05, size=(nframes, base.nloc, 3))
    coord = torch.tensor(coord)
    atype = torch.tensor(np.tile(base.atype, (nframes, 1)))
    box = torch.tensor(np.tile(base.cell.reshape(1, 9), (nframes, 1)))
    return coord, atype, box, model.neighbor_builder()(coord, atype, box)


def count_checkpoints(monkeypatch) -> list[int]:
    """Count the slices evaluated under checkpointing."""
    calls = []
    real = chunking.checkpoint

    def spy(fn, start, stop, *args, **kw):
        calls.append(stop - start)
        return real(fn, start, stop, *args, **kw)

    monkeypatch.setattr(chunking, "checkpoint", spy)
    return calls


def assert_same(got: dict, want: dict, rtol: float = 1e-12) -> None:
    for name in OUTPUTS:
        a, b = got[name].detach(), want[name].detach()
        scale = float(b.abs().max()) or 1.0
        err = float((a - b).abs().max()) / scale
        assert err <= rtol, f"{name}: chunked differs by {err:.2e} of max |value|"


@pytest.mark.parametrize("name", list(MODELS))
def test_chunked_equals_whole(name, monkeypatch):
    model = MODELS[name]()
    coord, atype, box, nbr = batch(model)
    want = model(coord, atype, box, nbr, do_atomic_virial=True)
    calls = count_checkpoints(monkeypatch)
    # 2 frames x 24 atoms with a budget of 14 atoms: at most 7 centre atoms per slice, i.e.
    # four balanced slices of 6
    got = model(coord, atype, box, nbr, do_atomic_virial=True, chunk_atoms=14)
    assert calls and set(calls) == {6}
    assert_same(got, want)


def test_budget_above_the_system_changes_nothing(monkeypatch):
    model = make_dpa2()
    coord, atype, box, nbr = batch(model)
    calls = count_checkpoints(monkeypatch)
    got = model(coord, atype, box, nbr, chunk_atoms=48)  # 2 x 24 atoms fit: no slicing
    assert calls == []
    want = model(coord, atype, box, nbr)
    for name in (keys.ENERGY, keys.FORCE, keys.VIRIAL):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


def test_training_is_untouched(monkeypatch):
    """Without ``chunk_atoms`` (the trainer never passes it) nothing is checkpointed; when asked
    explicitly, even parameter gradients of a force loss (create_graph) are the same."""
    calls = count_checkpoints(monkeypatch)
    model = make_dpa2()
    coord, atype, box, nbr = batch(model)

    def loss_grads(**kw):
        out = model(coord, atype, box, nbr, create_graph=True, **kw)
        loss = out[keys.ENERGY].pow(2).sum() + out[keys.FORCE].pow(2).sum()
        return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])

    want = loss_grads()
    assert calls == []
    got = loss_grads(chunk_atoms=10)
    assert calls
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-13)


def test_fitting_parameters_are_sliced_with_the_atoms():
    """fparam (per frame) and aparam (per atom) reach the right slices of the fitting."""
    from lamkit.model import build_model

    model = build_model(
        {
            "type_map": ["O", "H"],
            "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "neuron": [4, 8]},
            "fitting_net": {"neuron": [8], "numb_fparam": 1, "numb_aparam": 2, "seed": 1},
        }
    )
    coord, atype, box, nbr = batch(model)
    rng = np.random.default_rng(0)
    fparam = torch.tensor(rng.normal(size=(2, 1)))
    aparam = torch.tensor(rng.normal(size=(2, coord.shape[1], 2)))
    want = model(coord, atype, box, nbr, fparam, aparam, do_atomic_virial=True)
    got = model(coord, atype, box, nbr, fparam, aparam, do_atomic_virial=True, chunk_atoms=9)
    assert_same(got, want)


def test_dpa1_skips_pair_outputs_when_chunked():
    model = make_dpa1(attn_layer=1)
    coord, atype, box, nbr = batch(model, nframes=1)
    ext, eat = model.extend(coord, atype, box, nbr)
    whole = model.descriptor(ext, eat, nbr[keys.NLIST], nbr[keys.MAPPING])
    plan = chunking.Chunking.start(5)
    sliced = model.descriptor(ext, eat, nbr[keys.NLIST], nbr[keys.MAPPING], chunking=plan)
    assert set(sliced) == {keys.DESCRIPTOR, "rot_mat"} and "g2" in whole
    for k in sliced:
        torch.testing.assert_close(sliced[k], whole[k], rtol=1e-13, atol=1e-14)


# --- the chunking helpers -------------------------------------------------------------------
def test_row_bounds():
    assert chunking.row_bounds(1, 100, None) is None  # off
    plan = chunking.Chunking.start(40)
    assert plan.atoms == 40
    assert chunking.row_bounds(1, 40, plan) is None
    assert chunking.row_bounds(1, 100, plan) == [(0, 34), (34, 68), (68, 100)]
    assert chunking.row_bounds(4, 30, plan) == [(0, 10), (10, 20), (20, 30)]  # 40 // 4 rows
    assert chunking.Chunking.start(None) is None and chunking.Chunking.start(0) is None
    with pytest.raises(ValueError, match="chunk_atoms"):
        chunking.Chunking.start(-1)


def test_map_rows_needs_the_budget_passed():
    """The budget is an explicit argument of ``map_rows`` (no ambient state): omitting it is
    an error, ``None`` runs the block whole."""
    x = torch.arange(12.0).reshape(1, 12, 1)
    with pytest.raises(TypeError, match="chunking"):
        chunking.map_rows(lambda s, e, r: r, 1, 12, x)
    whole = chunking.map_rows(lambda s, e, r: r * 2, 1, 12, x, chunking=None)
    torch.testing.assert_close(whole, x * 2)
    plan = chunking.Chunking(atoms=5)
    seen = []

    def rows(s, e, r):
        seen.append((s, e))
        return r * 2

    torch.testing.assert_close(chunking.map_rows(rows, 1, 12, x, chunking=plan), x * 2)
    assert seen == [(0, 4), (4, 8), (8, 12)]


def test_no_context_variables():
    """Evaluation settings travel as named arguments: no module of the package keeps them in
    ``contextvars`` (or any other ambient state keyed by object ids)."""
    import pathlib

    import lamkit

    root = pathlib.Path(lamkit.__file__).parent
    users = [
        str(p.relative_to(root))
        for p in sorted(root.rglob("*.py"))
        if "ContextVar" in p.read_text() or "contextvars" in p.read_text()
    ]
    assert users == []


# --- DeepPot and ASE ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def water_like():
    """A 60-atom periodic O/H/H system and a small DPA-2 model."""
    model = make_dpa2().requires_grad_(False)
    sys_ = random_system(60, 2, np.eye(3) * 9.0, min_dist=1.0, seed=3)
    sys_.atype = np.array([0, 1, 1] * 20)
    return model, sys_


def test_deep_pot_chunks_large_frames(water_like, monkeypatch):
    model, sys_ = water_like
    args = (sys_.coord[None], sys_.cell.reshape(1, 9), sys_.atype)
    want = DeepPot(model, chunk_atoms=0).eval(*args, atomic=True)
    calls = count_checkpoints(monkeypatch)
    dp = DeepPot(model, chunk_atoms=25)
    assert dp.budget.chunk(60) == 25 and dp.budget.chunk(25) is None
    got = dp.eval(*args, atomic=True)
    assert calls and max(calls) <= 25
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_chunk_atoms_from_environment(monkeypatch):
    monkeypatch.setenv("LAMKIT_CHUNK_ATOMS", "77")
    assert AtomBudget.from_arg(True).chunk_atoms == 77
    assert AtomBudget.from_arg(True, chunk_atoms=5).chunk_atoms == 5
    monkeypatch.setenv("LAMKIT_CHUNK_ATOMS", "0")
    assert AtomBudget.from_arg(False).chunk(10**6) is None
    monkeypatch.setenv("LAMKIT_CHUNK_ATOMS", "many")
    with pytest.raises(ValueError, match="LAMKIT_CHUNK_ATOMS"):
        AtomBudget.from_arg(True)


def test_out_of_memory_on_one_frame_slices_it():
    """An adaptive budget that runs out of memory on a single frame slices it, more finely at
    each error, instead of retrying the same frame forever."""
    budget = AtomBudget(1024, adaptive=True, chunk_atoms=None)
    assert budget.chunk(5000) is None
    assert budget.out_of_memory(5000, 5000)
    assert budget.frames(5000) == 1 and budget.chunk(5000) == 2500
    assert budget.out_of_memory(5000, 5000) and budget.chunk(5000) == 1250
    fixed = AtomBudget(1024, adaptive=False)
    assert not fixed.out_of_memory(5000, 5000)


def test_ase_calculator_passes_chunk_atoms(water_like, monkeypatch):
    from ase import Atoms

    model, sys_ = water_like
    atoms = Atoms(
        ["O" if t == 0 else "H" for t in sys_.atype], positions=sys_.coord, cell=sys_.cell, pbc=True
    )
    whole = LamCalculator(DeepPot(model, chunk_atoms=0))
    atoms.calc = whole
    f_whole, s_whole = atoms.get_forces(), atoms.get_stress()
    calls = count_checkpoints(monkeypatch)
    atoms.calc = LamCalculator(DeepPot(model), chunk_atoms=20)
    f, s = atoms.get_forces(), atoms.get_stress()
    assert calls and max(calls) <= 20
    np.testing.assert_allclose(f, f_whole, rtol=0, atol=1e-12 * np.abs(f_whole).max())
    np.testing.assert_allclose(s, s_whole, rtol=0, atol=1e-12 * np.abs(s_whole).max())


def test_heap_is_trimmed_only_after_growth(monkeypatch):
    """Freed heap memory is handed back only once the process has grown by the slack since the
    chunked evaluation began (small systems never pay for re-faulting pages)."""
    calls = []

    class FakeLibc:
        def malloc_trim(self, pad):
            calls.append(pad)

    monkeypatch.setattr(runtime, "_glibc", lambda: FakeLibc())
    rss = iter([100, 110, 100 + runtime.TRIM_SLACK_BYTES + 1])
    monkeypatch.setattr(runtime, "resident_bytes", lambda: next(rss))
    runtime.release_freed_memory(None)  # not in a chunked evaluation: nothing to compare with
    plan = chunking.Chunking.start(8)  # starts at 100 bytes
    assert plan.rss_start == 100
    runtime.release_freed_memory(plan.rss_start)  # 110: within the slack
    assert calls == []
    runtime.release_freed_memory(plan.rss_start)  # grown by more than the slack
    assert calls == [0]
