"""davg/dstd statistics of the environment matrix, per centre-atom type.

The pooled samples include every neighbour slot, empty ones (zero rows) included, so the
statistics depend on ``sel`` exactly as in DeePMD-kit.
"""

from __future__ import annotations

import numpy as np
import torch


class EnvStat:
    """Running ``n, sum, sum of squares`` of the radial column and the three angular columns."""

    def __init__(self, ntypes: int):
        self.ntypes = ntypes
        self.r = np.zeros((ntypes, 3))  # [n, sum, sumsq]
        self.a = np.zeros((ntypes, 3))

    def add(self, env: torch.Tensor, atype: torch.Tensor) -> None:
        """env [nf, nloc, nnei, 4] un-normalised, atype [nf, nloc] (virtual atoms < 0 skipped)."""
        env = env.detach().to(torch.float64)
        for t in range(self.ntypes):
            sel = atype == t
            if not bool(sel.any()):
                continue
            e = env[sel]  # [n, nnei, 4]
            er = e[..., 0]
            self.r[t] += [er.numel(), float(er.sum()), float((er * er).sum())]
            if e.shape[-1] > 1:
                ea = e[..., 1:]
                self.a[t] += [ea.numel(), float(ea.sum()), float((ea * ea).sum())]

    def merge(self, other: EnvStat) -> None:
        self.r += other.r
        self.a += other.a

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"r": self.r.copy(), "a": self.a.copy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> EnvStat:
        st = cls(len(arrays["r"]))
        st.r = np.asarray(arrays["r"], dtype=np.float64).copy()
        st.a = np.asarray(arrays["a"], dtype=np.float64).copy()
        return st

    def davg_dstd(
        self, protection: float = 1e-2, set_davg_zero: bool = False, radial_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``davg, dstd`` of shape [ntypes, 4] (or [ntypes, 1] when ``radial_only``)."""
        ncol = 1 if radial_only else 4
        davg = np.zeros((self.ntypes, ncol))
        dstd = np.full((self.ntypes, ncol), 0.1)
        for t in range(self.ntypes):
            for cols, (n, s, s2) in (((0,), self.r[t]), (tuple(range(1, ncol)), self.a[t])):
                if not cols or n == 0:
                    continue
                avg = s / n
                std = np.sqrt(max(s2 / n - avg * avg, 0.0))
                std = max(std, protection)
                for c in cols:
                    dstd[t, c] = std
                if cols == (0,) and not set_davg_zero:
                    davg[t, 0] = avg
        return davg, dstd
