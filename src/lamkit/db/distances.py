"""Shortest interatomic distance of a periodic structure, periodic images included.

Small cells (most of what an import sees) go through numpy: every pair and every lattice shift
that can bring two sites within the cutoff; larger ones through vesin's neighbour list.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["shortest_distance"]

#: Largest number of (pair, image) distances the numpy path forms; a larger problem goes to
#: vesin's neighbour list (the numpy path is several times faster for small cells).
_DIRECT_MAX = 20_000


def shortest_distance(lattice: np.ndarray, frac: np.ndarray, cutoff: float) -> float:
    """Shortest distance (Å) between two sites (an atom and its own images too), or ``inf`` if
    none is shorter than ``cutoff`` Å.  ``lattice`` [3, 3] Å rows, ``frac`` [n, 3]."""
    cart = frac @ lattice
    if len(cart) == 1 and cutoff <= min(np.linalg.norm(lattice, axis=1)):
        return math.inf
    # images needed along each axis: a vector shorter than cutoff has fractional component k
    # at most cutoff * |b_k| (b_k: reciprocal vector without 2 pi, |b_k| = |a_l x a_m| / V),
    # and the differences below are wrapped into [-0.5, 0.5]
    a, b, c = lattice.tolist()
    bc = _cross(b, c)
    areas = (math.hypot(*bc), math.hypot(*_cross(c, a)), math.hypot(*_cross(a, b)))
    volume = abs(a[0] * bc[0] + a[1] * bc[1] + a[2] * bc[2])
    reach = tuple(math.ceil(cutoff * s / volume + 0.5) for s in areas)
    n = len(frac)
    if n * (n + 1) // 2 * math.prod(2 * r + 1 for r in reach) <= _DIRECT_MAX:
        return _min_distance_direct(lattice, frac, cutoff, reach)
    return _min_distance_vesin(lattice, cart, cutoff)


def _cross(u: list[float], v: list[float]) -> tuple[float, float, float]:
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


@lru_cache(maxsize=64)
def _shifts(reach: tuple[int, int, int]) -> np.ndarray:
    """Integer lattice shifts [m, 3] within ``reach``, (0, 0, 0) in the middle row."""
    axes = [np.arange(-r, r + 1, dtype=np.float64) for r in reach]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


@lru_cache(maxsize=256)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j) of the pairs i <= j of n sites and the positions of i == j."""
    i, j = np.triu_indices(n)
    return i, j, np.flatnonzero(i == j)


def _min_distance_direct(
    lattice: np.ndarray, frac: np.ndarray, cutoff: float, reach: tuple[int, int, int]
) -> float:
    """All pairs i <= j and all lattice shifts within ``reach``, but an atom with itself."""
    i, j, same = _pairs(len(frac))
    shifts = _shifts(reach)
    diff = frac[j] - frac[i]
    diff -= np.round(diff)
    vec = (diff[:, None, :] + shifts[None, :, :]) @ lattice  # [pairs, shifts, 3] Å
    d2 = (vec * vec).sum(axis=-1)
    d2[same, len(shifts) // 2] = np.inf
    dmin = math.sqrt(float(d2.min()))
    return dmin if dmin < cutoff else math.inf


def _min_distance_vesin(lattice: np.ndarray, cart: np.ndarray, cutoff: float) -> float:
    from vesin import NeighborList

    nl = NeighborList(cutoff=cutoff, full_list=False)
    (d,) = nl.compute(cart, lattice, periodic=True, quantities="d")
    return float(d.min()) if len(d) else math.inf
