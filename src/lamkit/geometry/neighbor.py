"""Neighbour lists with vesin, ghost images and fixed-size neighbour slots.

The differentiable model never searches for neighbours: it receives, per frame,

* ``mapping [nall]``: the local atom each extended atom is an image of (locals come first),
* ``shift [nall, 3]``: the integer cell translation of that image, relative to the coordinates
  the caller passed (it includes the wrap of every atom into the cell),
* ``nlist [nloc, nnei]``: extended indices of the neighbours within ``rcut``, ``-1`` padded,

and rebuilds ``extended_coord = coord[mapping] + shift @ cell`` itself, so forces and virials
flow to the coordinates and the cell by autograd. Only ghosts that are someone's neighbour are
created, unlike the reference which keeps every image in a buffer of ``ceil(rcut/d)`` cells.

Slots follow DeePMD-kit: neighbours sorted by distance; with ``mixed_types=False`` the nearest
``sum(sel)`` neighbours are split into per-type sections of ``sel[t]`` slots (still sorted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from vesin import NeighborList

from .. import keys


@dataclass
class FrameNeighbors:
    """Neighbour data of one frame (numpy, int64)."""

    mapping: np.ndarray  # [nall]
    shift: np.ndarray  # [nall, 3]
    nlist: np.ndarray  # [nloc, nnei]


def _wrap(coord: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Integer cell offsets that move every atom into the cell: ``coord + n @ cell`` is inside."""
    frac = coord @ np.linalg.inv(cell)
    return -np.floor(frac)


def _ranks(group: np.ndarray, ngroups: int) -> np.ndarray:
    """Position of every entry inside its group, for entries already ordered by group."""
    counts = np.bincount(group, minlength=ngroups)
    starts = np.cumsum(counts) - counts
    return np.arange(len(group)) - starts[group]


def build_frame_neighbors(
    coord: np.ndarray,
    atype: np.ndarray,
    cell: np.ndarray | None,
    rcut: float,
    sel: list[int],
    mixed_types: bool,
    nl: NeighborList | None = None,
) -> FrameNeighbors:
    """Neighbour data of one frame.

    Args:
        coord: [nloc, 3] Å.  atype: [nloc] type indices, -1 for virtual atoms.
        cell: [3, 3] rows are cell vectors (Å), or None for a non-periodic system.
        rcut: cutoff radius, Å.  sel: slots per neighbour type (one entry if ``mixed_types``).
    """
    coord = np.asarray(coord, dtype=np.float64)
    atype = np.asarray(atype)
    nloc = len(coord)
    nl = nl or NeighborList(cutoff=float(rcut), full_list=True)
    if cell is not None:
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        wrap = _wrap(coord, cell)
        i, j, S, d = nl.compute(coord + wrap @ cell, cell, True, "ijSd")
    else:
        wrap = np.zeros((nloc, 3))
        i, j, d = nl.compute(coord, np.zeros((3, 3)), False, "ijd")
        S = np.zeros((len(i), 3), dtype=np.int64)
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    S = S.astype(np.int64)
    real = atype >= 0
    keep = real[i] & real[j] & (d <= rcut)
    i, j, S, d = i[keep], j[keep], S[keep], d[keep]

    # sort by centre, then distance; keep the nearest sum(sel)
    order = np.lexsort((j, d, i))
    i, j, S, d = i[order], j[order], S[order], d[order]
    rank = _ranks(i, nloc)
    nsel = int(sum(sel))
    keep = rank < nsel
    i, j, S, rank = i[keep], j[keep], S[keep], rank[keep]
    if mixed_types:
        slot = rank
    else:
        ntypes = len(sel)
        tj = atype[j]
        order = np.lexsort((rank, tj, i))  # stable in distance inside (centre, type)
        i, j, S, tj = i[order], j[order], S[order], tj[order]
        rank_t = _ranks(i * ntypes + tj, nloc * ntypes)
        sel_arr = np.asarray(sel, dtype=np.int64)
        keep = rank_t < sel_arr[tj]
        i, j, S, tj, rank_t = i[keep], j[keep], S[keep], tj[keep], rank_t[keep]
        offsets = np.concatenate([[0], np.cumsum(sel_arr)[:-1]])
        slot = offsets[tj] + rank_t

    # ghost images: unique (j, shift) pairs with a non-zero shift
    is_ghost = np.any(S != 0, axis=1)
    ext = j.copy()
    if is_ghost.any():
        gj, gS = j[is_ghost], S[is_ghost]
        span = int(np.abs(gS).max()) * 2 + 1
        code = ((gj * span + gS[:, 0] + span // 2) * span + gS[:, 1] + span // 2) * span + (
            gS[:, 2] + span // 2
        )
        uniq, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        ext[is_ghost] = nloc + inverse
        ghost_j, ghost_S = gj[first], gS[first]
    else:
        ghost_j = np.zeros(0, dtype=np.int64)
        ghost_S = np.zeros((0, 3), dtype=np.int64)
    mapping = np.concatenate([np.arange(nloc), ghost_j])
    shift = np.concatenate([wrap, wrap[ghost_j] + ghost_S]).astype(np.int64)
    nlist = np.full((nloc, nsel), -1, dtype=np.int64)
    nlist[i, slot] = ext
    return FrameNeighbors(mapping=mapping, shift=shift, nlist=nlist)


def collate_neighbors(frames: list[FrameNeighbors], dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Stack per-frame neighbour data, padding ``nall`` with unused images of atom 0."""
    nall = max(len(f.mapping) for f in frames)
    nf = len(frames)
    mapping = np.zeros((nf, nall), dtype=np.int64)
    shift = np.zeros((nf, nall, 3), dtype=np.int64)
    for k, f in enumerate(frames):
        mapping[k, : len(f.mapping)] = f.mapping
        shift[k, : len(f.shift)] = f.shift
    nlist = np.stack([f.nlist for f in frames])
    return {
        keys.MAPPING: torch.from_numpy(mapping),
        keys.SHIFT: torch.from_numpy(shift).to(dtype),
        keys.NLIST: torch.from_numpy(nlist),
    }


class NeighborBuilder:
    """Builds model-ready neighbour data for batches of frames, for one (rcut, sel) layout.

    ``cache=True`` memoises frames by a caller-given key (e.g. system and frame index), which
    makes training epochs after the first free of neighbour searches. The cache stops growing
    at ``cache_bytes`` (frames beyond it are rebuilt each time), so large datasets stay bounded.
    """

    def __init__(
        self,
        rcut: float,
        sel: list[int],
        mixed_types: bool,
        cache: bool = False,
        cache_bytes: int = 2 << 30,
    ):
        self.rcut = float(rcut)
        self.sel = [int(s) for s in sel]
        self.mixed_types = mixed_types
        self._nl = NeighborList(cutoff=self.rcut, full_list=True)
        self._cache: dict | None = {} if cache else None
        self.cache_bytes = cache_bytes
        self._cached_bytes = 0

    def frame(self, coord, atype, cell, key=None) -> FrameNeighbors:
        if self._cache is not None and key is not None and key in self._cache:
            return self._cache[key]
        out = build_frame_neighbors(
            coord, atype, cell, self.rcut, self.sel, self.mixed_types, self._nl
        )
        if self._cache is not None and key is not None:
            size = out.mapping.nbytes + out.shift.nbytes + out.nlist.nbytes
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[key] = out
                self._cached_bytes += size
        return out

    def __call__(
        self,
        coord: torch.Tensor | np.ndarray,
        atype: torch.Tensor | np.ndarray,
        box: torch.Tensor | np.ndarray | None,
        cache_keys: list | None = None,
    ) -> dict[str, torch.Tensor]:
        """Neighbour data for a batch: coord [nf, nloc, 3], atype [nf, nloc], box [nf, 9]|None."""
        coord_np = _numpy(coord).reshape(len(coord), -1, 3)
        atype_np = _numpy(atype).reshape(len(coord), -1)
        box_np = None if box is None else _numpy(box).reshape(len(coord), 3, 3)
        frames = [
            self.frame(
                coord_np[k],
                atype_np[k],
                None if box_np is None else box_np[k],
                None if cache_keys is None else cache_keys[k],
            )
            for k in range(len(coord_np))
        ]
        dtype = coord.dtype if isinstance(coord, torch.Tensor) else torch.float64
        return collate_neighbors(frames, dtype=dtype)


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
