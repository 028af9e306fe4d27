"""L-BFGS as ASE's ``ase.optimize.LBFGS`` runs it (no line search), one memory per structure.

Each structure keeps the last ``memory`` pairs ``s_k = x_{k+1} - x_k`` and
``y_k = g_{k+1} - g_k`` (``g = -f`` the gradient) with ``rho_k = 1 / (y_k . s_k)``. A step:

1. record the pair from the previous step (from the second step on);
2. two-loop recursion with the initial inverse Hessian ``I / alpha``: ``q = g``; newest to
   oldest ``a_k = rho_k s_k . q``, ``q -= a_k y_k``; ``z = q / alpha``; oldest to newest
   ``b = rho_k y_k . z``, ``z += s_k (a_k - b)``; the direction is ``p = -z``;
3. if the longest row of ``p`` (an atom's or a cell row's displacement) is at least
   ``maxstep``, scale ``p`` so that it is exactly ``maxstep``; ``x <- x + damping p``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fire import make_params


@dataclass
class LbfgsParams:
    """ASE's LBFGS defaults (lengths in Å, ``alpha`` in eV/Å^2)."""

    maxstep: float = 0.2
    memory: int = 100
    damping: float = 1.0
    alpha: float = 70.0


@dataclass
class LbfgsState:
    """One structure's memory (flattened vectors) and its previous position and forces."""

    iteration: int = 0
    s: list[np.ndarray] = field(default_factory=list, repr=False)
    y: list[np.ndarray] = field(default_factory=list, repr=False)
    rho: list[float] = field(default_factory=list, repr=False)
    x0: np.ndarray | None = field(default=None, repr=False)
    f0: np.ndarray | None = field(default=None, repr=False)


class Lbfgs:
    """L-BFGS with one memory per structure; ``options``: fields of :class:`LbfgsParams`."""

    name = "lbfgs"

    def __init__(self, **options):
        self.params = make_params("LBFGS", LbfgsParams, options)
        if self.params.maxstep > 1.0:
            raise ValueError(
                f"LBFGS maxstep: {self.params.maxstep} Å is much too large (at most 1.0)"
            )

    def new_state(self, rows: int) -> LbfgsState:
        return LbfgsState()

    def step(
        self, xs: list[np.ndarray], forces: list[np.ndarray], states: list[LbfgsState]
    ) -> list[np.ndarray]:
        """New generalized positions of every structure (xs[i], forces[i]: [rows_i, 3]);
        ``states`` are updated in place."""
        return [self._one(x, f, s) for x, f, s in zip(xs, forces, states)]

    def _one(self, x: np.ndarray, f: np.ndarray, st: LbfgsState) -> np.ndarray:
        p = self.params
        pos = x.reshape(-1)
        force = np.asarray(f, dtype=x.dtype).reshape(-1)
        if st.iteration > 0:
            s = pos - st.x0
            y = st.f0 - force  # (-f) - (-f0)
            st.s.append(s)
            st.y.append(y)
            st.rho.append(1.0 / np.dot(y, s))
            if st.iteration > p.memory:
                st.s.pop(0)
                st.y.pop(0)
                st.rho.pop(0)
        n = min(p.memory, st.iteration)
        coef = np.empty(n, dtype=np.float64)
        q = -force
        for i in range(n - 1, -1, -1):
            coef[i] = st.rho[i] * np.dot(st.s[i], q)
            q = q - coef[i] * st.y[i]
        z = q * (1.0 / p.alpha)
        for i in range(n):
            b = st.rho[i] * np.dot(st.y[i], z)
            z = z + st.s[i] * (coef[i] - b)
        st.iteration += 1
        step = -z.reshape(-1, 3)
        longest = np.sqrt((step * step).sum(1)).max() if len(step) else 0.0
        if longest >= p.maxstep:
            step = step * (p.maxstep / longest)
        step = step * p.damping
        st.x0 = pos.copy()
        st.f0 = force.copy()
        return (pos.reshape(-1, 3) + step).astype(x.dtype, copy=False)
