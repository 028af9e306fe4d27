"""``lam freeze --format pth`` of DPA-2 (:mod:`lamkit.infer.export_pth_comm`): message passing.

A tiny water-like DPA-2 frozen by lamkit runs under LAMMPS ``pair_style deepmd`` (deepmd-kit
3.2.0's C++ DeepPotPT, which hands a message-passing model a ``comm_dict``): on one rank, where
the repformer layers fill the ghost rows through ``deepmd::border_op`` swapping with the rank
itself (with ``atom_modify map yes``, so that the C++ side's mapping, which points at freed
memory in 3.2.0, must be ignored), and on two MPI ranks (ghost features from the other rank,
their gradients sent back by ``border_op_backward``). Both equal lamkit ``DeepPot.eval`` to
1e-10 in energy, forces and virial. The reference's Python
``DeepPot`` loads the same file and agrees to 1e-10, atomic virials included."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from lamkit.infer import DeepPot
from lamkit.infer.export_pth import export_pth
from lamkit.testing.factories import make_dpa2 as tiny_model
from lamkit.testing.systems import random_system

from .pth_lammps import lmp, run_lammps, voigt  # noqa: F401 - lmp is a fixture

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dpa2(tmp_path_factory):
    """(lamkit model, .pth) for a tiny O/H DPA-2 (2 repformer layers)."""
    pytest.importorskip("deepmd", reason="freezing DPA-2 uses DeePMD-kit's op library")
    model = tiny_model(nlayers=2).eval()
    model.requires_grad_(False)
    return model, export_pth(model, tmp_path_factory.mktemp("pth_dpa2") / "dpa2.pth")


def slab(rcut: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """48 O/H atoms in a tilted box 3.2 x 1.6 x 1.6 rcut (long along x, so two ranks split it
    there: each rank's ghosts within the cutoff come from the other rank and from itself)."""
    cell = np.diag([3.2, 1.6, 1.6]) * rcut
    cell[1, 0] = 0.1 * rcut
    s = random_system(48, 2, cell, min_dist=1.0, seed=seed)
    frac = s.coord.reshape(-1, 3) @ np.linalg.inv(cell)
    return (frac - np.floor(frac)) @ cell, s.atype, cell


def test_reference_deep_pot_agrees(dpa2):
    """deepmd.infer.DeepPot(dpa2.pth).eval == lamkit DeepPot.eval, atomic virials included;
    the file reports message passing and calls DeePMD-kit's border operators, no lamkit op."""
    dp_infer = pytest.importorskip("deepmd.infer", reason="the reference DeePMD-kit")
    import torch

    model, path = dpa2
    assert torch.jit.load(str(path)).has_message_passing()
    with zipfile.ZipFile(path) as archive:  # DeePMD-kit's exchange, none of lamkit's ops
        code = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))
    assert "ops.deepmd.border_op_backward(" in code and "ops.deepmd.border_op(" in code
    assert "ops.lamkit" not in code
    ref = dp_infer.DeepPot(str(path))
    coord, atype, cell = slab(model.rcut, seed=1)
    frame = (coord.reshape(1, -1), cell.reshape(1, 9), atype)
    want = DeepPot(model).eval(*frame, atomic=True)
    got = ref.eval(*frame, atomic=True)
    for key, w, g in zip(("energy", "force", "virial", "atom_energy", "atom_virial"), want, got):
        np.testing.assert_allclose(g, w.reshape(g.shape), rtol=1e-10, atol=1e-10, err_msg=key)
    assert np.abs(want[1]).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("ranks, atom_map", [(1, True), (2, False)], ids=["1rank", "2ranks"])
def test_lammps_message_passing(dpa2, lmp, tmp_path, ranks, atom_map):  # noqa: F811
    """pair_style deepmd with the lamkit-frozen DPA-2 on one and two MPI ranks: lamkit's
    numbers to 1e-10."""
    model, path = dpa2
    coord, atype, cell = slab(model.rcut, seed=2)
    want_e, want_f, want_v = DeepPot(model).eval(coord.reshape(1, -1), cell.reshape(1, 9), atype)
    assert np.abs(want_f).max() > 1e-3
    e, f, v = run_lammps(
        lmp, path, coord, atype, cell, ["O", "H"], tmp_path, ranks=ranks, atom_map=atom_map
    )
    if ranks > 1:
        log = (tmp_path / "log.lammps").read_text()
        assert "2 by 1 by 1 MPI processor grid" in log  # split along the long x axis
    np.testing.assert_allclose(e, want_e.item(), rtol=1e-10)
    np.testing.assert_allclose(f, want_f.reshape(-1, 3), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(v, voigt(want_v), rtol=1e-10, atol=1e-10)


def test_missing_deepmd_op_library_is_a_clear_error(monkeypatch, tmp_path):
    """Without DeePMD-kit's op library a DPA-2 is refused in one line that says what to
    install, and no file is written."""
    import importlib.util

    from lamkit.errors import ModelFileError
    from lamkit.infer import export_pth_comm

    monkeypatch.setattr(export_pth_comm, "_registered", lambda: False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelFileError, match="install deepmd-kit"):
        export_pth(tiny_model(nlayers=2).eval(), tmp_path / "dpa2.pth")
    assert not (tmp_path / "dpa2.pth").exists()
