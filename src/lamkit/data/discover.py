"""Finding systems: turn a ``systems`` entry of input.json into paths, then into Systems.

- a directory holding ``type.raw`` is one deepmd/npy system;
- any other directory is searched recursively (sorted, so the order is deterministic) for
  directories holding ``type.raw``; the search does not descend into a system;
- a file is read with ASE (extxyz, OUTCAR, vasprun.xml, ...);
- an LMDB dataset (``*.lmdb`` folder with ``data.mdb``) is read by :mod:`.lmdb`;
- an HDF5 file (``*.h5``/``*.hdf5``, or ``file.hdf5#/group``) holds deepmd/hdf5 systems: every
  group at or below the named one that holds ``type.raw`` (:mod:`.h5path`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .ase_io import is_deepmd_dir, load_ase
from .h5path import H5Path, is_hdf5
from .lmdb import is_lmdb, load_lmdb
from .system import DataRequirement, System, load_system


def _search(root: Path) -> list[Path]:
    """System directories below ``root`` in sorted depth-first order."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        if is_deepmd_dir(here):
            found.append(here)
            dirnames[:] = []  # a system's set.* folders hold no further systems
    return found


def _rglob(root: Path, patterns: Sequence[str]) -> list[Path]:
    """``rglob_patterns``: the directories below ``root`` matching any pattern that hold
    ``type.raw`` (sorted; the reference's order is a set's)."""
    found = {d for pat in patterns for d in root.rglob(pat) if is_deepmd_dir(d)}
    return sorted(found)


def expand_systems(
    spec: str | Path | Sequence[str | Path], patterns: Sequence[str] | None = None
) -> list[Path | H5Path]:
    """Paths of all systems named by ``spec`` (one path or a list), in a deterministic order.

    Each returned path is a deepmd/npy directory, an HDF5 group (:class:`H5Path`), an LMDB
    folder or an ASE-readable file.  Raises DataError for a path that does not exist or a
    directory (or HDF5 file) with no system inside. ``patterns`` (``rglob_patterns``) replaces
    the search below each directory entry by a recursive glob for those patterns.
    """
    entries = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not entries:
        raise DataError("no systems given: the list of system paths is empty")
    out: list[Path] = []
    for entry in entries:
        if isinstance(entry, H5Path) or is_hdf5(entry):
            h5 = entry if isinstance(entry, H5Path) else H5Path.parse(entry)
            if not h5.exists():
                raise DataError(f"system path {h5}: no such group in {h5.file}")
            found = h5.systems()
            if not found:
                raise DataError(f"no system found in {h5}: no group below it holds type.raw")
            out.extend(found)
            continue
        path = Path(entry)
        if path.is_file() or (path.is_dir() and is_lmdb(path)):
            out.append(path)
        elif patterns and path.is_dir():
            found = _rglob(path, patterns)
            if not found:
                raise DataError(
                    f"no system found in {path} for rglob_patterns {list(patterns)}: no matching "
                    "directory below it contains type.raw"
                )
            out.extend(found)
        elif is_deepmd_dir(path):
            out.append(path)
        elif path.is_dir():
            found = _search(path)
            if not found:
                raise DataError(
                    f"no system found in {path}: no directory below it contains type.raw"
                )
            out.extend(found)
        else:
            raise DataError(f"system path {path} does not exist")
    return out


def load_systems(
    spec: str | Path | Sequence[str | Path],
    type_map: Sequence[str] | None,
    requirements: Sequence[DataRequirement],
    sort_atoms: bool = True,
    patterns: Sequence[str] | None = None,
) -> list[System]:
    """Load every system named by ``spec`` (see :func:`expand_systems`) into memory."""
    systems: list[System] = []
    for path in expand_systems(spec, patterns):
        if isinstance(path, H5Path):
            systems.append(load_system(path, type_map, requirements, sort_atoms=sort_atoms))
        elif is_lmdb(path) and path.is_dir():
            systems.extend(load_lmdb(path, type_map, requirements, sort_atoms=sort_atoms))
        elif path.is_dir():
            systems.append(load_system(path, type_map, requirements, sort_atoms=sort_atoms))
        else:
            systems.extend(load_ase(path, type_map, requirements, sort_atoms=sort_atoms))
    return systems
