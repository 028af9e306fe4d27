"""Physics checks for models of outputs other than energy: properties (invariant numbers),
dipoles (vectors) and polarizabilities (rank-2 tensors), by the rank the model's
:class:`~lamkit.fitting.OutputDef` declares.

Every check compares the per-frame (reduced) and per-atom outputs, returned by
:func:`predict_outputs` as ``{"global": [nf, *shape], "atom": [nf, nloc, *shape]}``, and raises
``AssertionError`` with the largest deviation (see :func:`~lamkit.testing.assert_close`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .physics import assert_close
from .systems import System, pad_with_virtual


def predict_outputs(
    model, coord: np.ndarray, atype: np.ndarray, cell: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Reduced and atomic outputs (float64 numpy) of a batch ``coord`` [nf, nloc, 3]."""
    od = model.output_def
    coord_t = torch.as_tensor(np.asarray(coord), dtype=torch.float64)
    nf = coord_t.shape[0]
    atype_t = torch.as_tensor(np.asarray(atype), dtype=torch.int64)
    box = None if cell is None else torch.as_tensor(np.asarray(cell)).reshape(nf, 9)
    with torch.no_grad():
        out = model.evaluate(coord_t, atype_t, box)
    return {
        "global": out[od.global_key].detach().double().numpy().reshape(nf, *od.shape),
        "atom": out[od.atom_key].detach().double().numpy().reshape(nf, -1, *od.shape),
    }


def _one(model, system: System) -> dict[str, np.ndarray]:
    cell = None if system.cell is None else system.cell[None]
    out = predict_outputs(model, system.coord[None], system.atype[None], cell)
    return {k: v[0] for k, v in out.items()}


def rotate(value: np.ndarray, q: np.ndarray, rank: int) -> np.ndarray:
    """``value`` [..., 3] (rank 1) or [..., 3, 3] (rank 2) in the frame rotated by ``q``."""
    if rank == 0:
        return value
    if rank == 1:
        return value @ q.T
    return q @ value @ q.T


def _compare(tag: str, got: dict, want: dict, rtol: float, atol: float) -> None:
    for k in want:
        assert_close(f"{tag} {k}", got[k], want[k], rtol, atol)


def check_output_rotation(
    model, system: System, rotation: np.ndarray, rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """Rotating positions (and cell) by ``Q`` rotates the outputs as their rank says."""
    q = np.asarray(rotation, dtype=np.float64)
    rank = model.output_def.rank
    cell = None if system.cell is None else system.cell @ q.T
    ref = _one(model, system)
    got = _one(model, system.copy(coord=system.coord @ q.T, cell=cell))
    _compare("rotated", got, {k: rotate(v, q, rank) for k, v in ref.items()}, rtol, atol)


def check_output_translation(
    model, system: System, vector: np.ndarray, rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """Translating every atom changes no output."""
    moved = system.copy(coord=system.coord + np.asarray(vector, dtype=np.float64))
    _compare("translated", _one(model, moved), _one(model, system), rtol, atol)


def check_output_permutation(
    model, system: System, perm: np.ndarray, rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """Reordering the atoms reorders the atomic outputs and keeps the reduced one."""
    perm = np.asarray(perm)
    ref = _one(model, system)
    got = _one(model, system.copy(coord=system.coord[perm], atype=system.atype[perm]))
    _compare("permuted", got, {"global": ref["global"], "atom": ref["atom"][perm]}, rtol, atol)


def check_output_padding(
    model,
    systems: Sequence[System],
    rng: np.random.Generator | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> None:
    """Frames batched together, padded with virtual atoms (type -1) to a common size, give
    each frame's own outputs; the padding atoms get exactly zero (an intensive mean counts
    only the real atoms)."""
    rng = rng or np.random.default_rng(0)
    nloc = max(s.nloc for s in systems)
    padded = [pad_with_virtual(s, nloc, rng) for s in systems]
    cell = None
    if systems[0].cell is not None:
        cell = np.stack([s.cell for s in padded])
    batch = predict_outputs(
        model, np.stack([s.coord for s in padded]), np.stack([s.atype for s in padded]), cell
    )
    for f, s in enumerate(systems):
        one = _one(model, s)
        got = {"global": batch["global"][f], "atom": batch["atom"][f, : s.nloc]}
        _compare(f"batch frame {f}", got, one, rtol, atol)
        pad = batch["atom"][f, s.nloc :]
        if pad.size and np.abs(pad).max() != 0.0:
            raise AssertionError(f"batch frame {f}: padding atoms have non-zero outputs")
