"""Physics checks for any model with lamkit's ``evaluate`` interface.

A model passes if it is a function of the geometry that a physicist would accept: forces and
virials are the derivatives of the energy, the energy is invariant under rotations,
translations, permutations and the choice of periodic images, smooth where a neighbour crosses
the cutoff, and independent of batching, padding and virtual atoms.

The model contract used here::

    model.evaluate(coord [nf, nloc, 3], atype [nf, nloc], box [nf, 9] | None,
                   do_force=..., do_virial=..., do_atomic_virial=...)
      -> {"energy": [nf, 1], "force": [nf, nloc, 3], "virial": [nf, 9],
          "atom_energy": [nf, nloc, 1], "atom_virial": [nf, nloc, 9]}
    model.rcut (Å), model.sel, model.type_map

Virial convention (DeePMD-kit): ``W = sum_k F_k (x) R_k`` over all atoms and periodic images,
element ``(a, b) = F_a R_b``.  Deforming every position and the cell by a strain,
``R -> R (I + eps)`` and ``cell -> cell (I + eps)`` (row vectors), gives
``dE/d eps_ab = sum_k dE/dR_kb R_ka = -sum_k R_ka F_kb``, hence ``W = -(dE/d eps)^T``.
:func:`finite_difference_virial` returns the right-hand side for all nine components, so the
check holds for the full tensor, not only its symmetric part.

Every ``check_*`` function raises ``AssertionError`` with the largest deviation and where it
occurs; tolerances are relative to the typical size of the compared quantity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import keys
from .neighbors import check_sel_not_saturated
from .systems import System, image_offsets, make_supercell, pad_with_virtual, wrap_offsets

# --- evaluation ---------------------------------------------------------------------------


def predict_batch(
    model,
    coord: np.ndarray,
    atype: np.ndarray,
    cell: np.ndarray | None,
    atomic: bool = True,
    dtype: torch.dtype = torch.float64,
) -> dict[str, np.ndarray]:
    """Run ``model.evaluate`` on a batch and return float64 numpy arrays:
    energy [nf], force [nf, nloc, 3], virial [nf, 3, 3] and, if ``atomic``, atom_energy
    [nf, nloc] and atom_virial [nf, nloc, 3, 3]."""
    coord_t = torch.as_tensor(np.asarray(coord), dtype=dtype)
    nf = coord_t.shape[0]
    atype_t = torch.as_tensor(np.asarray(atype), dtype=torch.int64)
    box_t = None if cell is None else torch.as_tensor(np.asarray(cell), dtype=dtype).reshape(nf, 9)
    out = model.evaluate(coord_t, atype_t, box_t, do_atomic_virial=atomic)
    res = {
        "energy": out[keys.ENERGY].reshape(nf),
        "force": out[keys.FORCE].reshape(nf, -1, 3),
        "virial": out[keys.VIRIAL].reshape(nf, 3, 3),
    }
    if atomic:
        res["atom_energy"] = out[keys.ATOM_ENERGY].reshape(nf, -1)
        res["atom_virial"] = out[keys.ATOM_VIRIAL].reshape(nf, -1, 3, 3)
    return {k: v.detach().to(torch.float64).cpu().numpy() for k, v in res.items()}


def predict(model, system: System, atomic: bool = True) -> dict[str, np.ndarray]:
    """:func:`predict_batch` for one frame, without the frame axis."""
    cell = None if system.cell is None else system.cell[None]
    out = predict_batch(model, system.coord[None], system.atype[None], cell, atomic)
    return {k: v[0] for k, v in out.items()}


def energy(model, system: System) -> float:
    """Total energy only (no derivatives), eV."""
    coord, atype, box = system.tensors()
    out = model.evaluate(coord, atype, box, do_force=False, do_virial=False)
    return float(out[keys.ENERGY].detach().to(torch.float64).reshape(()))


def atom_energies(model, system: System) -> np.ndarray:
    """Atomic energies [nloc] only (no derivatives), eV."""
    coord, atype, box = system.tensors()
    out = model.evaluate(coord, atype, box, do_force=False, do_virial=False)
    return out[keys.ATOM_ENERGY].detach().to(torch.float64).reshape(-1).numpy()


# --- comparison ---------------------------------------------------------------------------


def assert_close(name: str, actual, expected, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """``|actual - expected| <= atol + rtol * max|expected|`` elementwise (one scale for the
    whole array, so that near-zero components are not judged relative to themselves)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {actual.shape} != expected {expected.shape}")
    err = np.abs(actual - expected)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    bound = atol + rtol * scale
    if err.size and not (err <= bound).all():
        idx = np.unravel_index(int(np.argmax(err)), err.shape)
        raise AssertionError(
            f"{name}: max deviation {err[idx]:.3e} at index {tuple(int(i) for i in idx)} "
            f"(actual {actual[idx]:.10g}, expected {expected[idx]:.10g}); allowed "
            f"{bound:.3e} = {atol:.1e} + {rtol:.1e} * {scale:.3e}"
        )


def _compare(
    tag: str, got: dict, want: dict, rtol: float, atol: float, names: Sequence[str] | None = None
) -> None:
    for k in names or want:
        if k in got and k in want:
            assert_close(f"{tag} {k}", got[k], want[k], rtol, atol)


# --- derivatives --------------------------------------------------------------------------


def finite_difference_forces(model, system: System, h: float = 1e-5) -> np.ndarray:
    """``-dE/dR`` [nloc, 3] by central differences of step ``h`` Å."""
    fd = np.zeros((system.nloc, 3))
    for i in range(system.nloc):
        for a in range(3):
            e = []
            for sign in (1.0, -1.0):
                moved = system.copy()
                moved.coord[i, a] += sign * h
                e.append(energy(model, moved))
            fd[i, a] = -(e[0] - e[1]) / (2 * h)
    return fd


def strained(system: System, eps: np.ndarray) -> System:
    """Positions and cell deformed by ``R -> R (I + eps)`` (row vectors)."""
    deform = np.eye(3) + eps
    cell = None if system.cell is None else system.cell @ deform
    return system.copy(coord=system.coord @ deform, cell=cell)


def finite_difference_virial(model, system: System, h: float = 1e-5) -> np.ndarray:
    """``-(dE/d eps)^T`` [3, 3] by central differences over all nine strain components.

    For a non-periodic system only the positions are deformed; the result is then the virial
    of the free cluster, ``sum_i F_i (x) R_i``.
    """
    grad = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = []
            for sign in (1.0, -1.0):
                eps = np.zeros((3, 3))
                eps[a, b] = sign * h
                e.append(energy(model, strained(system, eps)))
            grad[a, b] = (e[0] - e[1]) / (2 * h)
    return -grad.T


def finite_difference_atom_virial(model, system: System, h: float = 1e-5) -> np.ndarray:
    """Atomic virials [nloc, 3, 3] of a non-periodic system from finite differences of the
    atomic energies: ``W_k = -sum_i (de_i/dR_k) (x) (R_k - R_i)`` (element (a, b) pairs the
    derivative component a with the position component b), the per-atom split that DeePMD-kit
    uses: every pair term goes to the atom whose displacement it measures."""
    if system.cell is not None:
        raise ValueError("finite_difference_atom_virial needs a non-periodic system")
    n = system.nloc
    jac = np.zeros((n, n, 3))  # de_i / dR_ka
    for k in range(n):
        for a in range(3):
            e = []
            for sign in (1.0, -1.0):
                moved = system.copy()
                moved.coord[k, a] += sign * h
                e.append(atom_energies(model, moved))
            jac[:, k, a] = (e[0] - e[1]) / (2 * h)
    rel = system.coord[None, :, :] - system.coord[:, None, :]  # [i, k, b] = R_k - R_i
    return -np.einsum("ika,ikb->kab", jac, rel)


def check_forces(
    model, system: System, h: float = 1e-5, rtol: float = 1e-6, atol: float = 1e-8
) -> None:
    """Forces equal the finite-difference gradient of the energy."""
    assert_close(
        "force vs finite differences",
        predict(model, system, atomic=False)["force"],
        finite_difference_forces(model, system, h),
        rtol,
        atol,
    )


def check_virial(
    model,
    system: System,
    h: float = 1e-5,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    symmetric: bool = True,
) -> None:
    """Virial equals ``-(dE/d eps)^T`` under a homogeneous strain of positions and cell.

    Compares the full 3x3 tensor and, separately, its symmetric part (what a stress needs);
    with ``symmetric`` also checks that the virial is symmetric, as it must be for an energy
    invariant under rotations (zero total torque).
    """
    w = predict(model, system, atomic=False)["virial"]
    fd = finite_difference_virial(model, system, h)
    assert_close("virial vs strain finite differences", w, fd, rtol, atol)
    assert_close(
        "symmetric virial vs strain finite differences",
        0.5 * (w + w.T),
        0.5 * (fd + fd.T),
        rtol,
        atol,
    )
    if symmetric:
        assert_close("virial symmetry (W vs W^T)", w, w.T, rtol, atol)


def check_atom_virial(
    model, system: System, h: float = 1e-5, rtol: float = 1e-6, atol: float = 1e-8
) -> None:
    """Atomic virials of a non-periodic system match :func:`finite_difference_atom_virial`."""
    assert_close(
        "atom_virial vs finite differences",
        predict(model, system)["atom_virial"],
        finite_difference_atom_virial(model, system, h),
        rtol,
        atol,
    )


def check_atomic_sums(model, system: System, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """Atomic energies sum to the energy, atomic virials to the virial."""
    out = predict(model, system)
    assert_close("sum of atom_energy", out["atom_energy"].sum(0), out["energy"], rtol, atol)
    assert_close("sum of atom_virial", out["atom_virial"].sum(0), out["virial"], rtol, atol)


# --- symmetries ---------------------------------------------------------------------------


def check_rotation(
    model, system: System, rotation: np.ndarray, rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """Rotating positions and cell by ``Q`` leaves energies unchanged, rotates forces
    (``F -> F Q^T`` for row vectors) and virials (``W -> Q W Q^T``)."""
    q = np.asarray(rotation, dtype=np.float64)
    cell = None if system.cell is None else system.cell @ q.T
    ref = predict(model, system)
    rot = predict(model, system.copy(coord=system.coord @ q.T, cell=cell))
    want = {
        "energy": ref["energy"],
        "atom_energy": ref["atom_energy"],
        "force": ref["force"] @ q.T,
        "virial": q @ ref["virial"] @ q.T,
        "atom_virial": q @ ref["atom_virial"] @ q.T,
    }
    _compare("rotated", rot, want, rtol, atol)


def check_translation(
    model, system: System, vector: np.ndarray, rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """Translating every atom changes nothing, atomic virials included."""
    moved = system.copy(coord=system.coord + np.asarray(vector, dtype=np.float64))
    _compare("translated", predict(model, moved), predict(model, system), rtol, atol)


def check_permutation(
    model, system: System, perm: np.ndarray, rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """Reordering the atoms (with their types) reorders the per-atom outputs only."""
    perm = np.asarray(perm)
    ref = predict(model, system)
    out = predict(model, system.copy(coord=system.coord[perm], atype=system.atype[perm]))
    want = {
        k: (v[perm] if k in ("force", "atom_energy", "atom_virial") else v) for k, v in ref.items()
    }
    _compare("permuted", out, want, rtol, atol)


def check_separable(
    model, first: System, second: System, gap: float = 0.5, rtol: float = 1e-10, atol: float = 1e-12
) -> None:
    """Two non-periodic systems more than ``rcut`` apart: energies and virials add, per-atom
    outputs are those of each system alone (locality of the model)."""
    if first.periodic or second.periodic:
        raise ValueError("check_separable needs non-periodic systems")
    rcut = float(model.rcut)
    lo = first.coord.max(0)[0] - second.coord.min(0)[0]
    moved = second.coord + np.array([lo + rcut + gap, 0.0, 0.0])
    both = System(np.vstack([first.coord, moved]), np.concatenate([first.atype, second.atype]))
    a, b, ab = predict(model, first), predict(model, second), predict(model, both)
    want = {
        "energy": a["energy"] + b["energy"],
        "virial": a["virial"] + b["virial"],
        "force": np.concatenate([a["force"], b["force"]]),
        "atom_energy": np.concatenate([a["atom_energy"], b["atom_energy"]]),
        "atom_virial": np.concatenate([a["atom_virial"], b["atom_virial"]]),
    }
    _compare("two distant systems", ab, want, rtol, atol)


# --- periodic boundary conditions ---------------------------------------------------------


def check_periodic_images(
    model, system: System, rng: np.random.Generator, rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """Moving atoms by whole cell vectors, or wrapping them into the cell, changes nothing."""
    if system.cell is None:
        raise ValueError("check_periodic_images needs a periodic system")
    ref = predict(model, system)
    jumps = rng.integers(-2, 3, size=(system.nloc, 3))
    shifted = system.copy(coord=system.coord + jumps @ system.cell)
    _compare("atoms shifted by cell vectors", predict(model, shifted), ref, rtol, atol)
    wrapped = system.copy(
        coord=system.coord + wrap_offsets(system.coord, system.cell) @ system.cell
    )
    _compare("atoms wrapped into the cell", predict(model, wrapped), ref, rtol, atol)


def check_supercell(
    model, system: System, reps: tuple[int, int, int], rtol: float = 1e-9, atol: float = 1e-10
) -> None:
    """A supercell of ``n`` copies has ``n`` times the energy and virial and the same forces,
    atomic energies and atomic virials on every copy."""
    n = int(np.prod(reps))
    ref = predict(model, system)
    big = predict(model, make_supercell(system, reps))
    want = {
        "energy": n * ref["energy"],
        "virial": n * ref["virial"],
        "force": np.tile(ref["force"], (n, 1)),
        "atom_energy": np.tile(ref["atom_energy"], n),
        "atom_virial": np.tile(ref["atom_virial"], (n, 1, 1)),
    }
    _compare(f"supercell {reps}", big, want, rtol, atol)


# --- batching, padding, virtual atoms -----------------------------------------------------


def check_batch(
    model,
    systems: Sequence[System],
    rtol: float = 1e-10,
    atol: float = 1e-12,
    rng: np.random.Generator | None = None,
) -> None:
    """A batch of frames gives the same results as the frames one by one.

    Frames with fewer atoms are padded with virtual atoms (type -1), and periodic frames will
    usually differ in their number of ghost atoms, so the padding of the extended atoms is
    exercised as well.  All frames must be periodic or all non-periodic.
    """
    periodic = {s.periodic for s in systems}
    if len(periodic) != 1:
        raise ValueError("check_batch: mix of periodic and non-periodic frames")
    rng = rng or np.random.default_rng(0)
    nloc = max(s.nloc for s in systems)
    padded = [pad_with_virtual(s, nloc, rng) for s in systems]
    cell = np.stack([s.cell for s in padded]) if periodic.pop() else None
    batch = predict_batch(
        model, np.stack([s.coord for s in padded]), np.stack([s.atype for s in padded]), cell
    )
    for f, s in enumerate(systems):
        one = predict(model, s)
        n = s.nloc
        got = {
            "energy": batch["energy"][f],
            "virial": batch["virial"][f],
            "force": batch["force"][f, :n],
            "atom_energy": batch["atom_energy"][f, :n],
            "atom_virial": batch["atom_virial"][f, :n],
        }
        _compare(f"batch frame {f}", got, one, rtol, atol)
        _check_virtual_zero(f"batch frame {f} padding", batch, f, slice(n, None))


def _check_virtual_zero(tag: str, out: dict, f: int, idx) -> None:
    for k in ("force", "atom_energy", "atom_virial"):
        v = out[k][f][idx]
        if v.size and np.abs(v).max() != 0.0:
            raise AssertionError(f"{tag}: virtual atoms have non-zero {k} (max {np.abs(v).max()})")


def check_virtual_atoms(
    model,
    system: System,
    rng: np.random.Generator,
    nvirtual: int = 3,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> None:
    """Virtual atoms (type -1) anywhere, even on top of a real atom or far away, do not change
    the outputs of the real atoms and get exactly zero energy, force and virial."""
    ref = predict(model, system)
    places = [
        system.coord[rng.integers(system.nloc)],  # on top of a real atom
        rng.normal(scale=1e3, size=3),
    ]  # far away
    places += [rng.normal(scale=3.0, size=3) for _ in range(nvirtual - len(places))]
    coord, atype = list(system.coord), list(system.atype)
    real_pos = np.arange(system.nloc)
    for p in places[:nvirtual]:
        k = int(rng.integers(len(coord) + 1))  # interleaved with the real atoms
        coord.insert(k, np.asarray(p))
        atype.insert(k, -1)
        real_pos[real_pos >= k] += 1
    out = predict(model, system.copy(coord=np.array(coord), atype=np.array(atype)))
    got = {k: (v[real_pos] if np.ndim(v) and k != "virial" else v) for k, v in out.items()}
    _compare("with virtual atoms", got, ref, rtol, atol)
    virtual = np.setdiff1d(np.arange(len(atype)), real_pos)
    batched = {k: v[None] for k, v in out.items()}
    _check_virtual_zero("virtual atoms", batched, 0, virtual)


# --- precision ----------------------------------------------------------------------------


def check_precision(
    model_low, model_high, system: System, rtol: float = 1e-4, atol: float = 1e-6
) -> None:
    """A reduced-precision copy of a model (same weights) agrees within a loose tolerance."""
    lo, hi = predict(model_low, system), predict(model_high, system)
    _compare("low vs high precision", lo, hi, rtol, atol)


# --- smoothness at the cutoff -------------------------------------------------------------


def cutoff_crossing_path(
    system: System,
    rcut: float,
    rng: np.random.Generator,
    window: float = 0.02,
    margin: float = 0.02,
    min_dist: float = 0.9,
    tries: int = 2000,
) -> tuple[int, np.ndarray, np.ndarray]:
    """Find an atom ``p``, a point ``origin`` (an atom ``q`` or its image) and a unit vector
    ``u`` such that along ``R_p(t) = origin + t u`` for ``|t - rcut| <= window`` only the
    distance p-q crosses ``rcut``: every other distance of ``p`` stays ``margin`` Å away from
    ``rcut`` and above ``min_dist``.  Returns ``(p, origin, u)``."""
    cell = system.cell
    reach = 2 * (rcut + window + margin)  # what the path can come near, seen from atom q
    imgs = image_offsets(cell, reach)
    img_vec = np.zeros((1, 3)) if cell is None else imgs @ cell
    # every image of every atom: [natoms, nimg, 3], labelled by atom and "is image 0"
    pos_all = system.coord[:, None] + img_vec[None]
    atom_of = np.repeat(np.arange(system.nloc), len(img_vec))
    home = np.tile(np.all(imgs == 0, axis=1), system.nloc)
    pos_all = pos_all.reshape(-1, 3)
    ts = np.linspace(rcut - window - margin, rcut + window + margin, 41)
    real = np.flatnonzero(system.atype >= 0)
    for _ in range(tries):
        p, q = rng.choice(real, size=2, replace=False)
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        origin = system.coord[q]
        path = origin + ts[:, None] * u  # [nt, 3]
        keep = (atom_of != p) & (system.atype[atom_of] >= 0) & ~((atom_of == q) & home)
        keep &= np.linalg.norm(pos_all - origin, axis=1) <= reach
        d = np.linalg.norm(path[:, None] - pos_all[keep][None], axis=-1)
        if (np.abs(d - rcut) > margin).all() and (d > min_dist).all():
            return int(p), origin, u
    raise AssertionError("cutoff_crossing_path: no clean crossing found; use a sparser system")


def check_cutoff_smoothness(
    model,
    system: System,
    rng: np.random.Generator,
    delta: float = 2e-5,
    window: float = 0.02,
    npoints: int = 41,
    etol: float = 1e-9,
    ftol: float = 1e-6,
    curvature_factor: float = 3.0,
) -> None:
    """Energy and forces are continuous when one pair distance crosses the cutoff, and the
    finite-difference curvature of the energy along the path shows no spike there.

    * continuity: values on the far side (``rcut + delta``) match an extrapolation from the
      near side (energy: quadratic from ``rcut - delta, -3 delta, -5 delta``; forces: linear),
      so that a jump of more than ``etol`` eV (energy) or ``ftol`` eV/Å (forces) is caught
      while the smooth motion of the other pairs is not mistaken for one;
    * curvature: ``d2E/dt2`` by second differences on ``npoints`` points over
      ``rcut +- window``; near ``rcut`` it must stay below ``curvature_factor`` times its
      largest value elsewhere in the window (a kink in the energy gives a spike ~ 1/step).
    """
    rcut = float(model.rcut)
    p, origin, u = cutoff_crossing_path(system, rcut, rng, window=window)

    def placed(t: float) -> System:
        s = system.copy()
        s.coord[p] = origin + t * u
        return s

    def at(t: float) -> dict:
        return predict(model, placed(t), atomic=False)

    if hasattr(model, "sel") and hasattr(model, "type_map"):
        # truncated neighbour lists are discontinuous by design; make sure none is truncated
        check_sel_not_saturated(placed(rcut - window), rcut, model.sel, len(model.type_map))

    near = [at(rcut - k * delta) for k in (1, 3, 5)]
    far = at(rcut + delta)
    e1, e3, e5 = (x["energy"] for x in near)
    e_pred = 3 * e1 - 3 * e3 + e5  # quadratic through -5d, -3d, -d evaluated at +d
    assert_close("energy across the cutoff (vs extrapolation)", far["energy"], e_pred, 0.0, etol)
    f_pred = 2 * near[0]["force"] - near[1]["force"]
    assert_close("forces across the cutoff (vs extrapolation)", far["force"], f_pred, 0.0, ftol)

    ts = rcut + np.linspace(-window, window, npoints) + 0.5 * (2 * window / (npoints - 1))
    step = ts[1] - ts[0]
    e = np.array([energy(model, placed(t)) for t in ts])
    d2 = (e[2:] - 2 * e[1:-1] + e[:-2]) / step**2  # at ts[1:-1]
    close = np.abs(ts[1:-1] - rcut) <= 2 * step
    bound = curvature_factor * np.abs(d2[~close]).max() + 1e-6
    if np.abs(d2[close]).max() > bound:
        raise AssertionError(
            f"energy curvature spikes at the cutoff: |d2E/dt2| = {np.abs(d2[close]).max():.3e} "
            f"within {2 * step:.1e} Å of rcut vs <= {bound:.3e} elsewhere (atom {p})"
        )


__all__ = [
    "assert_close",
    "atom_energies",
    "check_atom_virial",
    "check_atomic_sums",
    "check_batch",
    "check_cutoff_smoothness",
    "check_forces",
    "check_periodic_images",
    "check_permutation",
    "check_precision",
    "check_rotation",
    "check_separable",
    "check_supercell",
    "check_translation",
    "check_virial",
    "check_virtual_atoms",
    "cutoff_crossing_path",
    "energy",
    "finite_difference_atom_virial",
    "finite_difference_forces",
    "finite_difference_virial",
    "predict",
    "predict_batch",
    "strained",
]
