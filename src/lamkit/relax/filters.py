"""Cell degrees of freedom: ASE's ``FrechetCellFilter`` for many structures at once.

A structure of ``n`` atoms with a relaxed cell has ``n + 3`` generalized rows (3 numbers each):

* atom rows ``r = R F^-T``: the positions mapped back into the original cell ``C0``;
* cell rows ``e * X`` with ``X = log F`` (matrix logarithm) the log-deformation, ``F`` the
  deformation gradient taking ``C0`` to the current cell, ``cell = C0 F^T``, and ``e`` the
  ``exp_cell_factor`` (ASE's default: the number of atoms).

Given ``(r, e X)`` the structure is ``F = exp(X)``, ``R = r F^T``, ``cell = C0 F^T`` (ASE stores
``e log(n F)``, which differs by the constant ``e log(n) I``: the optimizers only use
differences of positions, so the trajectories are the same).

The generalized forces are ``f F`` on the atom rows and, on the cell rows,
``L*_X[W F^-T] / e``, where ``W = -V (sigma + p I)`` is the virial seen by the filter
(``sigma`` the stress, ``p`` the external pressure), replaced by ``diag(tr W / 3)`` for
hydrostatic strain, and ``L*_X`` is the adjoint of the Fréchet derivative of the matrix
exponential at ``X``. ASE sums ``expm_frechet(X, E_ij) : G`` over the nine unit directions;
the adjoint of ``L_X`` under the Frobenius product is ``L_{X^T}``, and ``L_A[G]`` is the
upper-right block of ``exp([[A, G], [0, A]])``, so one batched 6x6 exponential gives it.
Units: Å, eV; ``p`` and stress in eV/Å^3.
"""

from __future__ import annotations

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

MODES = ("frechet", "fixed", "hydrostatic")
_TAYLOR_ORDER = 12  # remainder below 1e-17 once the 1-norm is scaled to <= 1/4


def expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponentials of a stack a [m, k, k] of small matrices (float64): scaling and
    squaring with a Taylor polynomial, all matrices at once. (scipy's batched ``expm`` calls
    into a threaded BLAS that is ~1000x slower for 3x3 matrices on a busy machine.)"""
    a = np.asarray(a, dtype=np.float64)
    if len(a) == 0:
        return a.copy()
    norm = np.abs(a).sum(-2).max(-1)
    squarings = np.ceil(np.log2(np.maximum(norm, 1e-300) / 0.25)).clip(0, None).astype(int)
    scaled = a / np.ldexp(1.0, squarings)[:, None, None]
    eye = np.broadcast_to(np.eye(a.shape[-1]), a.shape)
    out = eye.copy()
    for k in range(_TAYLOR_ORDER, 0, -1):  # Horner: I + A (I + A/2 (I + A/3 (...)))
        out = eye + np.matmul(scaled, out) / k
    for level in range(int(squarings.max())):
        out = np.where((squarings > level)[:, None, None], np.matmul(out, out), out)
    return out


def deformation(log_deform: np.ndarray) -> np.ndarray:
    """Deformation gradients ``F = exp(X)`` of log-deformations X [m, 3, 3] (float64)."""
    return expm(np.asarray(log_deform, dtype=np.float64).reshape(-1, 3, 3))


def exp_frechet_adjoint(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``sum_ij <L_a[E_ij], g> E_ij`` for stacks a, g [m, 3, 3]: the adjoint (Frobenius) of the
    Fréchet derivative of ``expm`` at ``a`` applied to ``g``, i.e. ``L_{a^T}[g]``."""
    m = len(a)
    if m == 0:
        return np.zeros((0, 3, 3))
    # linear in g: exponentiate with g scaled to unit size (keeps the squarings few)
    size = np.abs(g).max(axis=(1, 2))
    size = np.where(size > 0, size, 1.0)
    at = np.swapaxes(a, 1, 2)
    block = np.zeros((m, 6, 6))
    block[:, :3, :3] = at
    block[:, 3:, 3:] = at
    block[:, :3, 3:] = g / size[:, None, None]
    return expm(block)[:, :3, 3:] * size[:, None, None]


def filter_virial(
    stress: np.ndarray, volume: np.ndarray, pressure: float, hydrostatic: bool
) -> np.ndarray:
    """The virial the filter relaxes, [m, 3, 3] eV: ``-V (sigma + p I)`` from stresses [m, 6]
    (ASE Voigt order, eV/Å^3), volumes [m] Å^3 and the pressure p (eV/Å^3); with
    ``hydrostatic`` its isotropic part ``diag(tr / 3)`` only."""
    sigma = voigt_6_to_full_3x3_stress(np.asarray(stress, dtype=np.float64))
    virial = -np.asarray(volume)[:, None, None] * (sigma + pressure * np.eye(3))
    if hydrostatic:
        tr = np.trace(virial, axis1=1, axis2=2) / 3.0
        virial = tr[:, None, None] * np.eye(3)
    return virial


def cell_forces(
    log_deform: np.ndarray, deform: np.ndarray, virial: np.ndarray, factor: np.ndarray
) -> np.ndarray:
    """Generalized forces on the cell rows [m, 3, 3]: ``L*_X[W F^-T] / e`` for log-deformations
    X, deformations F = exp(X), filter virials W (see :func:`filter_virial`) and cell factors
    e [m]."""
    ucf = virial @ np.linalg.inv(np.swapaxes(deform, 1, 2))
    return exp_frechet_adjoint(log_deform, ucf) / np.asarray(factor)[:, None, None]
