"""Brute-force neighbour search over explicit periodic images, and a checker for the
fixed-slot neighbour layout (``mapping``, ``shift``, ``nlist``) the models consume.

The reference here loops over every atom pair and every image vector in a box large enough to
contain the cutoff sphere, independently of any cell-list code, so it can judge vesin-based
lists on skewed and tiny cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .systems import System, image_offsets, wrap_offsets


@dataclass
class Pairs:
    """Directed neighbour pairs: ``R_j + image @ cell - R_i`` has length ``dist`` <= rcut.

    ``image`` [npair, 3] is relative to the coordinates as given (not wrapped)."""

    i: np.ndarray
    j: np.ndarray
    image: np.ndarray
    dist: np.ndarray


def brute_force_pairs(system: System, rcut: float) -> Pairs:
    """Every pair of real atoms within ``rcut`` Å, including an atom and its own images."""
    coord, cell = system.coord, system.cell
    wrap = wrap_offsets(coord, cell)
    inside = coord if cell is None else coord + wrap @ cell
    images = image_offsets(cell, rcut)
    img_vec = np.zeros((1, 3)) if cell is None else images @ cell
    diff = inside[None, :, None, :] + img_vec[None, None] - inside[:, None, None, :]
    dist = np.sqrt((diff * diff).sum(-1))  # [nloc, nloc, nimg]
    real = system.atype >= 0
    ok = (dist <= rcut) & real[:, None, None] & real[None, :, None]
    zero = np.flatnonzero(np.all(images == 0, axis=1))
    idx = np.arange(system.nloc)
    ok[idx, idx, zero] = False  # an atom is not its own neighbour
    i, j, k = np.nonzero(ok)
    image = images[k] + wrap[j] - wrap[i]
    return Pairs(i=i, j=j, image=image, dist=dist[i, j, k])


def neighbor_counts(system: System, rcut: float, ntypes: int) -> np.ndarray:
    """[nloc, ntypes] number of neighbours of each type within ``rcut`` of every atom."""
    p = brute_force_pairs(system, rcut)
    counts = np.zeros((system.nloc, ntypes), dtype=np.int64)
    np.add.at(counts, (p.i, system.atype[p.j]), 1)
    return counts


def check_sel_not_saturated(system: System, rcut: float, sel: list[int], ntypes: int) -> None:
    """Fail if some atom has more neighbours than slots (truncation makes the energy
    discontinuous, which would make the smoothness and image checks meaningless)."""
    counts = neighbor_counts(system, rcut, ntypes)
    have = counts.sum(1, keepdims=True) if len(sel) == 1 else counts
    over = have > np.asarray(sel)
    if over.any():
        raise AssertionError(
            f"test system saturates sel={sel}: neighbour counts per type up to "
            f"{have.max(0).tolist()}; use a larger sel or a sparser system"
        )


def _fail(msg: str, i: int | None = None) -> None:
    where = "" if i is None else f" (atom {i})"
    raise AssertionError(f"neighbour list{where}: {msg}")


def _check_extended(mapping, shift, nlist, nloc: int, nslots: int) -> None:
    """Slot count, locals first, every ghost a distinct image that some atom uses."""
    if nlist.shape[1] != nslots:
        _fail(f"expected {nslots} slots, found {nlist.shape[1]}")
    if not np.array_equal(mapping[:nloc], np.arange(nloc)):
        _fail("the first nloc extended atoms must be the local atoms in order")
    if len(mapping) != len(shift):
        _fail(f"mapping has {len(mapping)} entries but shift has {len(shift)}")
    used = np.unique(nlist[nlist >= 0])
    if used.size and used.max() >= len(mapping):
        _fail(f"index {used.max()} beyond nall = {len(mapping)}")
    ghosts = np.arange(nloc, len(mapping))
    unused = np.setdiff1d(ghosts, used)
    if unused.size:
        _fail(f"ghost atoms {unused.tolist()} are nobody's neighbour")
    keys = np.concatenate([mapping[:, None], shift - shift[mapping]], axis=1)
    if len(np.unique(keys, axis=0)) != len(keys):
        _fail("two extended atoms are the same image of the same atom")


def check_frame_neighbors(
    mapping: np.ndarray,
    shift: np.ndarray,
    nlist: np.ndarray,
    system: System,
    rcut: float,
    sel: list[int],
    mixed_types: bool,
    decimals: int = 8,
    edge: float = 1e-9,
) -> None:
    """Check one frame's neighbour data against :func:`brute_force_pairs`.

    Expected layout (DeePMD-kit): for each real atom the nearest ``sum(sel)`` neighbours within
    ``rcut`` are kept; with ``mixed_types`` they fill one section sorted by distance, otherwise
    type ``t`` fills its own section of ``sel[t]`` slots (sorted by distance, nearest first,
    keeping at most ``sel[t]`` of the ``sum(sel)`` nearest); empty slots are -1 at the end of
    each section.  Extended atoms: locals first (``mapping[:nloc] = arange``), every ghost is a
    distinct image that some atom uses.  Distances are compared as multisets rounded to
    ``decimals``, which keeps the check independent of how equal distances are ordered;
    pairs within ``edge`` Å of ``rcut`` may be present or not.
    """
    nloc, nnei = nlist.shape
    sel = [int(s) for s in sel]
    _check_extended(mapping, shift, nlist, nloc, sum(sel))

    cell = np.zeros((3, 3)) if system.cell is None else system.cell
    ext = system.coord[mapping] + shift @ cell
    pairs = brute_force_pairs(system, rcut)
    atype = system.atype
    sections = [(0, nnei)] if mixed_types else list(zip(np.cumsum([0, *sel[:-1]]), np.cumsum(sel)))
    ntypes = len(sel)
    for i in range(nloc):
        row = nlist[i]
        if atype[i] < 0:
            if (row >= 0).any():
                _fail("a virtual atom has neighbours", i)
            continue
        mine = pairs.i == i
        ref_d = np.sort(pairs.dist[mine])
        ref_set = {(int(j), *map(int, n)) for j, n in zip(pairs.j[mine], pairs.image[mine])}
        nearest_d = ref_d[: sum(sel)]
        # type of each of the nearest neighbours, in distance order
        order = np.argsort(pairs.dist[mine], kind="stable")[: sum(sel)]
        nearest_t = atype[pairs.j[mine][order]]
        for s, (a, b) in enumerate(sections):
            seg = row[a:b]
            filled = seg >= 0
            if filled.any() and not filled[: filled.sum()].all():
                _fail(f"empty slot before a filled one in section {s}: {seg.tolist()}", i)
            e = seg[filled]
            j = mapping[e]
            if not mixed_types and (atype[j] != s).any():
                _fail(f"section {s} holds atoms of types {atype[j].tolist()}", i)
            if (atype[j] < 0).any():
                _fail("a virtual atom is a neighbour", i)
            image = shift[e] - shift[i]
            for jj, n in zip(j, image):
                if (int(jj), *map(int, n)) not in ref_set:
                    _fail(f"({jj}, image {n.tolist()}) is not within rcut", i)
            d = np.linalg.norm(ext[e] - ext[i], axis=1)
            if (np.diff(d) < -1e-12).any():
                _fail(f"section {s} is not sorted by distance: {d.tolist()}", i)
            if mixed_types:
                want = nearest_d
            else:
                want = nearest_d[nearest_t == s][: sel[s]]
            # a pair at exactly rcut contributes nothing; lists may keep or drop it
            got = np.sort(np.round(d[d < rcut - edge], decimals))
            want = want[want < rcut - edge]
            if not np.array_equal(got, np.sort(np.round(want, decimals))):
                _fail(
                    f"section {s}: neighbour distances {got.tolist()} != brute force "
                    f"{np.round(want, decimals).tolist()} (sel={sel}, ntypes={ntypes})",
                    i,
                )
        if len(np.unique(row[row >= 0])) != (row >= 0).sum():
            _fail("the same extended atom appears twice", i)
