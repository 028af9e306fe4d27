"""Tabulated pair potentials (the reference's ``PairTab``/``PairTabAtomicModel``).

A table file has one row per distance on a uniform grid (Å) and one column per unordered type
pair: 0-0, 0-1, ..., 0-(n-1), 1-1, ... (``n (n + 1) / 2`` energy columns, eV). Each column
becomes a clamped cubic spline (zero slope at both ends), stored per grid interval as the
coefficients ``[a3, a2, a1, a0]`` of ``((a3 u + a2) u + a1) u + a0`` in the interval's
reduced coordinate ``u`` in [0, 1). When the cutoff lies beyond the table, the table is padded
to the cutoff with zeros (a table that ends at zero) or with one cubic that decays to zero
(the reference's extrapolation, including its slope taken per grid step).

An atom's pair energy is half the sum of the tabulated energies of its neighbours within the
cutoff; pairs beyond the cutoff or the (padded) table give zero.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, ModelFileError
from ..geometry.env import gather_rows
from ..nn.params import RefNames, TypeRows


def _clamped_slopes(vv: np.ndarray, hh: float) -> np.ndarray:
    """Node slopes [n, ncol] of the clamped cubic spline through ``vv`` [n, ncol] on a
    uniform grid of step ``hh`` (tridiagonal solve, zero slope at both ends)."""
    n = vv.shape[0]
    dd = np.zeros_like(vv)
    if n < 3:
        return dd
    rhs = 3.0 * (vv[2:] - vv[:-2]) / hh  # interior nodes 1..n-2
    m = n - 2
    diag = np.full(m, 4.0)
    b = rhs.copy()
    for i in range(1, m):  # forward elimination, sub/super diagonals are 1
        w = 1.0 / diag[i - 1]
        diag[i] -= w
        b[i] -= w * b[i - 1]
    x = np.zeros_like(b)
    x[-1] = b[-1] / diag[-1]
    for i in range(m - 2, -1, -1):
        x[i] = (b[i] - x[i + 1]) / diag[i]
    dd[1:-1] = x
    return dd


def _hermite(x0, x1, v0, v1, s0, s1, xs: np.ndarray) -> np.ndarray:
    """Cubic through (x0, v0) and (x1, v1) with end slopes s0, s1, evaluated at xs."""
    h = x1 - x0
    t = ((xs - x0) / h)[:, None]
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * v0 + h10 * h * s0 + h01 * v1 + h11 * h * s1


def _pad_to_rcut(vdata: np.ndarray, rcut: float) -> np.ndarray:
    """The table extended to cover ``rcut`` (unchanged when it already does)."""
    rmin, rmax, hh = vdata[0, 0], vdata[-1, 0], vdata[1, 0] - vdata[0, 0]
    if rcut <= rmax:
        return vdata
    nlast = vdata.shape[0] - 1
    npad = int(np.ceil(rcut / hh - rmin / hh)) - nlast
    if npad <= 0:
        return vdata
    pad = np.zeros((npad, vdata.shape[1]))
    pad[:, 0] = np.linspace(rmax + hh, rmax + hh * npad, npad)
    if np.any(vdata[-1, 1:] != 0):
        slope = vdata[-1, 1:] - vdata[-2, 1:]  # per grid step, as the reference takes it
        end = -2 if pad[-1, 0] / hh - rmax / hh >= 2 else -1
        x1 = pad[end, 0]
        zero = np.zeros_like(slope)
        pad[:, 1:] = _hermite(rmax, x1, vdata[-1, 1:], zero, slope, zero, pad[:, 0])
        if end == -2:
            pad = pad[:-1]
    return np.concatenate([vdata, pad], axis=0)


def read_pair_table(path: str | Path, rcut: float, key: str = "model/use_srtab"):
    """``(tab_info [rmin, hh, nspline, ntypes], tab_data [nt, nt, nspline, 4])`` as float64
    arrays from a table file, padded to ``rcut``."""
    try:
        vdata = np.loadtxt(str(path), dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read the pair table '{path}' ({exc})") from None
    ncol = vdata.shape[1] - 1
    ntypes = int((math.sqrt(1 + 8 * ncol) - 1) / 2 + 0.1)
    if vdata.shape[0] < 2 or ntypes * (ntypes + 1) // 2 != ncol:
        raise ConfigError(
            f"{key}: '{path}' needs >= 2 rows of a distance and n(n+1)/2 energy columns, "
            f"got {ncol} energy columns"
        )
    vdata = _pad_to_rcut(vdata, rcut)
    hh = vdata[1, 0] - vdata[0, 0]
    nspline = vdata.shape[0] - 1
    data = np.zeros((ntypes, ntypes, nspline, 4))
    vv = vdata[:, 1:]
    dd = _clamped_slopes(vv, hh) * hh
    coef = np.stack(
        [
            2 * vv[:-1] - 2 * vv[1:] + dd[:-1] + dd[1:],
            -3 * vv[:-1] + 3 * vv[1:] - 2 * dd[:-1] - dd[1:],
            dd[:-1],
            vv[:-1],
        ],
        axis=-1,
    )  # [nspline, ncol, 4]
    col = 0
    for t0 in range(ntypes):
        for t1 in range(t0, ntypes):
            data[t0, t1] = data[t1, t0] = coef[:, col]
            col += 1
    info = np.array([vdata[0, 0], hh, nspline, ntypes], dtype=np.float64)
    return info, data


def pair_distances(ext_coord: torch.Tensor, nlist: torch.Tensor) -> torch.Tensor:
    """|r_j - r_i| [nf, nloc, nnei] for the neighbour list (0 on empty slots and on
    coincident atoms, with a zero gradient there)."""
    nloc = nlist.shape[1]
    diff = gather_rows(ext_coord, nlist) - ext_coord[:, :nloc, None, :]
    d2 = (diff * diff).sum(-1)
    ok = (nlist >= 0) & (d2 > 0)
    return torch.where(ok, torch.sqrt(torch.where(ok, d2, torch.ones_like(d2))), 0.0 * d2)


class PairTable(nn.Module):
    """Pair energies from a tabulated potential (buffers ``tab_info``, ``tab_data``).

    Built from a table file; without one (a model file whose table travels in the state dict)
    the buffers are empty until a state dict fills them.
    """

    def __init__(self, tab_file: str | None, rcut: float, ntypes: int):
        super().__init__()
        self.rcut = float(rcut)
        self.tab_file = tab_file
        info = torch.zeros(4, dtype=torch.float64)
        data = torch.zeros(0, 0, 0, 4, dtype=torch.float64)
        if tab_file is not None and Path(tab_file).is_file():
            tinfo, tdata = read_pair_table(tab_file, self.rcut)
            if int(tinfo[3]) != ntypes:
                raise ConfigError(
                    f"model/use_srtab: '{tab_file}' is a table for {int(tinfo[3])} types, "
                    f"the type_map has {ntypes}"
                )
            info, data = torch.from_numpy(tinfo), torch.from_numpy(tdata)
        self.register_buffer("tab_info", info)
        self.register_buffer("tab_data", data)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the table's size comes with the state dict
        for name in ("tab_info", "tab_data"):
            value = state_dict.get(prefix + name)
            if value is not None:
                setattr(self, name, torch.empty_like(value, dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def pair_energy(self, rr: torch.Tensor, itype: torch.Tensor, jtype: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
        """Tabulated energies [nf, nloc, nnei] of the pairs at distances rr with centre types
        itype [nf, nloc] and neighbour types jtype [nf, nloc, nnei] (0 where not valid)."""
        if self.tab_data.numel() == 0:
            raise ModelFileError(f"model/use_srtab: the pair table '{self.tab_file}' is missing")
        rmin, hh = float(self.tab_info[0]), float(self.tab_info[1])
        nspline, ntypes = int(self.tab_info[2] + 0.1), self.tab_data.shape[0]
        uu = torch.where(valid, (rr - rmin) / hh, torch.full_like(rr, nspline + 1.0))
        if bool((uu < 0).any()):
            raise DataError(
                f"a pair distance {float(rr[valid].min()):.4g} Å is below the pair table's "
                f"first distance {rmin} Å"
            )
        idx = uu.to(torch.int64)
        frac = uu - idx.to(uu.dtype)
        table = self.tab_data.reshape(ntypes * ntypes * nspline, 4)
        row = (itype.unsqueeze(-1) * ntypes + jtype.clamp(min=0)) * nspline
        coef = table[(row + idx.clamp(0, nspline - 1)).reshape(-1)].reshape(*rr.shape, 4)
        a3, a2, a1, a0 = coef.unbind(-1)
        ener = ((a3 * frac + a2) * frac + a1) * frac + a0
        keep = (idx <= nspline) & (rr < self.rcut) & (rr < rmin + nspline * hh)
        return torch.where(keep & valid, ener, torch.zeros_like(ener))

    def forward(self, ext_coord: torch.Tensor, ext_atype: torch.Tensor,
                nlist: torch.Tensor) -> torch.Tensor:
        """Atomic pair energies [nf, nloc, 1]: half the sum over the neighbours."""
        nloc = nlist.shape[1]
        valid = nlist >= 0
        rr = pair_distances(ext_coord, nlist)
        itype = ext_atype[:, :nloc].clamp(min=0)
        jtype = torch.gather(ext_atype, 1, nlist.clamp(min=0).reshape(nlist.shape[0], -1))
        jtype = jtype.reshape(nlist.shape)
        ener = self.pair_energy(rr, itype, jtype, valid & (jtype >= 0))
        return 0.5 * ener.sum(-1, keepdim=True)

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = (TypeRows("out_bias"),)  # a linear_ener member's bias
    REF_NAMES = RefNames(names=tuple((n, n) for n in ("tab_info", "tab_data", "out_bias")))
