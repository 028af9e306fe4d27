"""Systems from any file ASE can read (extxyz, VASP OUTCAR/vasprun.xml, ...).

Frames are grouped by their exact sequence of elements (hence also by atom count): each group
becomes one standard :class:`~lamkit.data.system.System`, in order of first appearance.  Labels:

- ``energy`` [1] eV: the calculator's ``energy`` result, else ``atoms.info["energy"]``;
- ``force`` [natoms, 3] eV/Å: the ``forces`` result, else ``atoms.arrays["forces"]``;
- ``virial`` [9] eV: ``-stress(3x3) * volume`` from the ``stress`` result (ASE stress is
  eV/Å³), else ``atoms.info["virial"]`` as given;
- any other key: ``atoms.info[key]`` (global) or ``atoms.arrays[key]`` (atomic).

A periodic frame is one with any periodic direction; the cell is then used as a full 3D box.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.io import read as ase_read

from ..errors import DataError
from .checks import check_boxes, check_finite
from .system import DataRequirement, System, make_system
from .typemap import name_lookup


def is_deepmd_dir(path: str | Path) -> bool:
    """True when ``path`` is a deepmd/npy system directory (it contains ``type.raw``)."""
    p = Path(path)
    return p.is_dir() and (p / "type.raw").is_file()


def _results(atoms: Atoms) -> dict:
    calc = atoms.calc
    return dict(getattr(calc, "results", {}) or {}) if calc is not None else {}


def _frame_label(atoms: Atoms, key: str, atomic: bool):
    """The raw value of label ``key`` in one frame, or None when the frame lacks it."""
    res = _results(atoms)
    if key == "energy":
        value = res.get("energy", atoms.info.get("energy"))
    elif key == "force":
        value = res.get("forces", atoms.arrays.get("forces"))
    elif key == "virial" and ("stress" in res or "stress" in atoms.info):
        stress = np.asarray(res.get("stress", atoms.info.get("stress")), dtype=np.float64)
        if stress.size == 6:  # Voigt order xx yy zz yz xz xy
            xx, yy, zz, yz, xz, xy = stress
            stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        value = -stress.reshape(3, 3) * atoms.get_volume()
    elif atomic:
        value = atoms.arrays.get(key)
    else:
        value = atoms.info.get(key, res.get(key))
    return None if value is None else np.asarray(value, dtype=np.float64)


def _group_labels(
    path: Path,
    frames: list[Atoms],
    frame_ids: list[int],
    requirements: Sequence[DataRequirement],
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Labels ``[nf, width]`` / ``[nf, natoms, width]`` and find flags of one group of frames."""
    nf, natoms = len(frames), len(frames[0])
    labels, find = {}, {}
    for req in requirements:
        values = [_frame_label(a, req.key, req.atomic) for a in frames]
        have = [v is not None for v in values]
        if not any(have):
            if req.must:
                raise DataError(f"{path}: required label '{req.key}' is missing in every frame")
            shape = (nf, natoms, req.width) if req.atomic else (nf, req.width)
            labels[req.key] = np.full(shape, req.default, dtype=np.float64)
            find[req.key] = 0.0
            continue
        if not all(have):
            first = frame_ids[have.index(False)]
            raise DataError(
                f"{path}: label '{req.key}' is missing in frame {first} but present in others; "
                "every frame of a system needs it or none"
            )
        expected = natoms * req.ndof if req.atomic else req.ndof
        for fid, v in zip(frame_ids, values):
            if v.size != expected:
                raise DataError(
                    f"{path}: frame {fid} has {v.size} values of '{req.key}', expected {expected}"
                )
        arr = np.stack([v.reshape(-1) for v in values])
        check_finite(arr, f"{path} ('{req.key}')", np.asarray(frame_ids))
        if req.atomic:
            arr = arr.reshape(nf, natoms, req.ndof)
        labels[req.key] = np.repeat(arr, req.repeat, axis=-1) if req.repeat > 1 else arr
        find[req.key] = 1.0
    return labels, find


def _read_frames(path: Path, index) -> list[Atoms]:
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        frames = ase_read(path, index=index)
    except Exception as err:  # ASE's readers raise many kinds; report them all as bad data
        raise DataError(f"ASE cannot read {path}: {type(err).__name__}: {err}") from err
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise DataError(f"{path} holds no frames (index {index!r})")
    return frames


def load_ase(
    path: str | Path,
    type_map: Sequence[str] | None,
    requirements: Sequence[DataRequirement],
    index=":",
    sort_atoms: bool = True,
) -> list[System]:
    """Read an ASE-readable file into one System per distinct element sequence.

    ``type_map`` is the model's element list; without it the file's elements, sorted by atomic
    number, form the type map.  ``index`` is passed to ``ase.io.read`` (":" = all frames).
    A file holding several groups gives paths ``"<file>#0"``, ``"<file>#1"``, ...
    """
    path = Path(path)
    frames = _read_frames(path, index)
    if type_map:
        names = list(type_map)
    else:
        found = {s for a in frames for s in a.get_chemical_symbols()}
        names = sorted(found, key=lambda s: atomic_numbers.get(s, 0))
    groups: dict[tuple, list[int]] = {}
    for i, atoms in enumerate(frames):
        symbols = atoms.get_chemical_symbols()
        if not symbols:
            raise DataError(f"{path}: frame {i} has no atoms")
        unknown = sorted(set(symbols) - set(names))
        if unknown:
            name_lookup(unknown, names, f"{path} frame {i}")  # raises with a did-you-mean
        groups.setdefault(tuple(symbols), []).append(i)

    systems = []
    for k, (symbols, ids) in enumerate(groups.items()):
        group = [frames[i] for i in ids]
        fids = np.asarray(ids)
        coords = np.stack([a.get_positions() for a in group]).astype(np.float64)
        check_finite(coords.reshape(len(ids), -1), f"{path} (positions)", fids)
        periodic = [bool(a.pbc.any()) for a in group]
        if any(periodic) and not all(periodic):
            raise DataError(
                f"{path}: frame {ids[periodic.index(not periodic[0])]} differs from frame "
                f"{ids[0]} in periodicity; frames of one system must all be periodic or not"
            )
        box = None
        if periodic[0]:
            box = np.stack([np.asarray(a.cell[:], dtype=np.float64).reshape(9) for a in group])
            check_finite(box, f"{path} (cell)", fids)
            check_boxes(box, f"{path} (cell)", fids)
        atype = name_lookup(list(symbols), names, f"{path} frame {ids[0]}")
        labels, find = _group_labels(path, group, ids, requirements)
        systems.append(
            make_system(
                path=str(path) if len(groups) == 1 else f"{path}#{k}",
                coords=coords,
                box=box,
                atype=np.broadcast_to(atype, (len(ids), len(atype))).copy(),
                labels=labels,
                find=find,
                type_map=names,
                mixed_type=False,
                sort_atoms=sort_atoms,
            )
        )
    return systems
