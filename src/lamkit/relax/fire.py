"""FIRE (Bitzek et al., PRL 97, 170201 (2006)) as ASE's ``ase.optimize.FIRE`` runs it, for many
structures at once: each structure has its own velocity, time step, mixing parameter and
count of downhill steps, and the step of all structures is computed on their rows joined
into one array (sums per structure by segment).

One step of one structure, with ``f`` its generalized forces (flattened) and ``v`` its
velocity (zero and untouched on the first step):

* after the first step: if ``v . f > 0`` (downhill), ``v <- (1 - a) v + a |v| f / |f|`` and,
  once more than ``Nmin`` downhill steps in a row were taken, ``dt <- min(dt finc, dtmax)``,
  ``a <- a fa``; else ``v <- 0``, ``a <- astart``, ``dt <- dt fdec`` and the count restarts;
* ``v <- v + dt f``; ``dr = dt v``, scaled down to length ``maxstep`` when longer (the norm
  of the whole structure's step, cell rows included, as in ASE); ``x <- x + dr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def make_params(name: str, params_type: type, options: dict):
    """``params_type(**options)``; a ValueError names unknown options (``name``: the
    optimizer, for the message)."""
    known = sorted(params_type.__dataclass_fields__)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{name} options {unknown} unknown; expected some of {known}")
    return params_type(**options)


@dataclass
class FireParams:
    """ASE's FIRE defaults (time in ASE's units of Å sqrt(amu/eV), lengths in Å)."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    Nmin: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99
    a: float = 0.1


@dataclass
class FireState:
    """One structure's FIRE state: velocity [rows, 3] (None before the first step)."""

    dt: float
    a: float
    nsteps: int = 0
    velocity: np.ndarray | None = field(default=None, repr=False)


class Fire:
    """Batched FIRE; ``options``: fields of :class:`FireParams`."""

    name = "fire"

    def __init__(self, **options):
        self.params = make_params("FIRE", FireParams, options)

    def new_state(self, rows: int) -> FireState:
        return FireState(dt=self.params.dt, a=self.params.a)

    def step(
        self, xs: list[np.ndarray], forces: list[np.ndarray], states: list[FireState]
    ) -> list[np.ndarray]:
        """New generalized positions of every structure (xs[i], forces[i]: [rows_i, 3] in the
        optimizer's dtype); ``states`` are updated in place."""
        p = self.params
        if not xs:
            return []
        dtype = xs[0].dtype
        sizes = np.array([len(x) for x in xs])
        seg = np.repeat(np.arange(len(xs)), sizes)
        f = np.concatenate(forces).astype(dtype, copy=False)
        started = np.array([s.velocity is not None for s in states])
        v = np.concatenate(
            [s.velocity if s.velocity is not None else np.zeros_like(x) for s, x in zip(states, xs)]
        )
        dt = np.array([s.dt for s in states], dtype=np.float64)
        a = np.array([s.a for s in states], dtype=np.float64)
        count = np.array([s.nsteps for s in states])

        def per_structure(rows):  # sums over each structure's rows -> [nstruct] float64
            return np.bincount(seg, weights=rows.sum(1), minlength=len(xs))

        vf = per_structure(f * v)
        ff = per_structure(f * f)
        vv = per_structure(v * v)
        downhill = started & (vf > 0.0)
        reset = started & ~downhill
        with np.errstate(divide="ignore", invalid="ignore"):
            mix = np.where(downhill, np.sqrt(vv) / np.sqrt(ff), 0.0)
        a_rows = a[seg][:, None].astype(dtype)
        mixed = (1.0 - a_rows) * v + a_rows * f * mix[seg][:, None].astype(dtype)
        v = np.where(downhill[seg][:, None], mixed, v)
        v = np.where(reset[seg][:, None], np.zeros((), dtype=dtype), v)
        grow = downhill & (count > p.Nmin)
        dt = np.where(grow, np.minimum(dt * p.finc, p.dtmax), dt)
        a = np.where(grow, a * p.fa, a)
        count = np.where(downhill, count + 1, np.where(reset, 0, count))
        a = np.where(reset, p.astart, a)
        dt = np.where(reset, dt * p.fdec, dt)

        dt_rows = dt[seg][:, None].astype(dtype)
        v = v + dt_rows * f
        dr = dt_rows * v
        norm = np.sqrt(per_structure(dr * dr))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(norm > p.maxstep, p.maxstep / norm, 1.0)
        dr = dr * scale[seg][:, None].astype(dtype)
        x = np.concatenate(xs) + dr
        bounds = np.cumsum(sizes)[:-1]
        for s, vel, d, al, c in zip(states, np.split(v, bounds), dt, a, count):
            s.velocity, s.dt, s.a, s.nsteps = vel, float(d), float(al), int(c)
        return np.split(x, bounds)
