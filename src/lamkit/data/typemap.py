"""Atom types: reading ``type.raw``/``type_map.raw``, remapping by element name, counting.

A system's type indices point into its own type map (``type_map.raw``); the model has its own
``type_map``.  When both are known, indices are translated **by element name**, so a system
written as [H, C, N, O] feeds a model with [O, N, C, H] correctly.  Index -1 (a virtual atom of
a mixed-type system) is kept as -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..registry import did_you_mean


def read_type_raw(path: Path) -> np.ndarray:
    """Integer type of each atom from ``type.raw`` (whitespace separated) -> ``[natoms]`` int64."""
    tokens = path.read_text().split()
    if not tokens:
        raise DataError(f"{path} is empty; expected one integer type index per atom")
    try:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{path}: expected integer type indices, got {err}") from err


def read_type_map_raw(path: Path) -> list[str]:
    """Element names from ``type_map.raw``, one per line (blank lines ignored)."""
    names = path.read_text().split()
    if not names:
        raise DataError(f"{path} is empty; expected one element name per line")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path} lists element(s) {dup} more than once")
    return names


def name_lookup(
    names: Sequence[str], model_type_map: Sequence[str], source: Path | str
) -> np.ndarray:
    """Index of each of ``names`` in ``model_type_map`` -> ``[len(names)]`` int64.

    Raises DataError naming the first element that the model does not know.
    """
    model = list(model_type_map)
    out = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        if name not in model:
            raise DataError(
                f"element '{name}' in {source} is not in the model type_map {model}."
                + did_you_mean(name, model)
            )
        out[i] = model.index(name)
    return out


def remap_types(
    atype: np.ndarray,
    sys_type_map: Sequence[str],
    model_type_map: Sequence[str],
    source: Path | str,
) -> np.ndarray:
    """Translate indices into ``sys_type_map`` to indices into ``model_type_map``; -1 stays -1.

    ``atype``: any shape, int; the caller has checked it lies in ``[-1, len(sys_type_map))``.
    """
    lookup = name_lookup(sys_type_map, model_type_map, source)
    if np.array_equal(lookup, np.arange(len(lookup))):
        return atype  # same order: no copy (a memory-mapped array stays mapped)
    # append -1 so that index -1 (virtual atom) maps to the last entry, i.e. stays -1
    lookup = np.concatenate([lookup, np.array([-1], dtype=np.int64)])
    return lookup[atype]


def count_types(atype: np.ndarray, ntypes: int) -> np.ndarray:
    """Per-frame natoms vector ``[nf, 2 + ntypes]`` int64 from ``atype`` ``[nf, natoms]``.

    Columns: (natoms, natoms, count of type 0, type 1, ...).  The first two entries are the number
    of atom slots; virtual atoms (-1) are not counted in the per-type counts.  This is the
    reference's ``real_natoms_vec`` for mixed type and its ``natoms_vec`` for standard systems.
    """
    nf, natoms = atype.shape
    out = np.zeros((nf, 2 + ntypes), dtype=np.int64)
    out[:, :2] = natoms
    for t in range(ntypes):
        out[:, 2 + t] = (atype == t).sum(axis=1)
    return out
