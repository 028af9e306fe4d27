"""LMDB training data, the format of DeePMD-kit 3.2 (``examples/lmdb_downsample_data``).

A dataset is one LMDB environment (a ``*.lmdb`` folder holding ``data.mdb``)::

    __metadata__    msgpack map: nframes, frame_idx_fmt ("012d"), type_map, frame_nlocs, ...
    000000000000    one frame per key (the index formatted with frame_idx_fmt): a msgpack map
                    of arrays, each {"type": numpy dtype, "shape": [...], "data": raw bytes}

Frame fields: ``atom_types`` [nloc] (indices into the metadata's type_map), ``coords``
[nloc, 3] Å, ``cells`` [3, 3] Å (absent or null: not periodic), ``energies`` [] eV,
``forces`` [nloc, 3] eV/Å, ``virials`` [3, 3] eV; any other label under its own name, per
atom when prefixed ``atomic_`` (``atomic_population`` is the label ``atom_population``).

:func:`load_lmdb` reads a dataset into :class:`~lamkit.data.system.System` objects, one per
atom count (mixed type when the frames of a count differ in their types), so the usual
samplers, statistics and checks apply. :func:`write_lmdb` writes the same layout. Needs the
optional packages ``lmdb`` and ``msgpack`` (``pip install lamkit[lmdb]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import keys
from ..errors import DataError
from .checks import check_boxes, check_finite
from .system import DataRequirement, System, make_system
from .typemap import name_lookup

METADATA = b"__metadata__"
# field names in the file -> lamkit's label keys
FIELDS = {"energies": keys.ENERGY, "forces": keys.FORCE, "virials": keys.VIRIAL}


def is_lmdb(path: str | Path) -> bool:
    """A ``*.lmdb`` path or a folder holding ``data.mdb``."""
    path = Path(path)
    return path.suffix == ".lmdb" or (path / "data.mdb").is_file()


def _modules(path):
    try:
        import lmdb
        import msgpack
    except ImportError as exc:
        raise DataError(
            f"{path}: reading LMDB data needs the packages lmdb and msgpack "
            "(pip install 'lamkit[lmdb]')"
        ) from exc
    return lmdb, msgpack


def _decode(value):
    if isinstance(value, dict) and "data" in value and "type" in value:
        arr = np.frombuffer(value["data"], dtype=np.dtype(value["type"]))
        return arr.reshape(tuple(value["shape"])) if "shape" in value else arr
    return value


def _encode(arr: np.ndarray) -> dict:
    arr = np.ascontiguousarray(arr)
    return {"type": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


def label_name(field: str) -> tuple[str, bool]:
    """The label key of a frame field and whether it is per atom."""
    if field in FIELDS:
        return FIELDS[field], field == "forces"
    if field.startswith("atomic_"):
        return "atom_" + field[len("atomic_") :], True
    return field, False


def read_frames(path: str | Path) -> tuple[dict, list[dict]]:
    """The metadata and every frame (fields decoded to arrays) of an LMDB dataset."""
    path = Path(path)
    if not (path / "data.mdb").is_file():
        raise DataError(f"{path}: not an LMDB dataset (no data.mdb inside)")
    lmdb, msgpack = _modules(path)
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True, readahead=False)
    try:
        with env.begin() as txn:
            raw = txn.get(METADATA)
            if raw is None:
                raise DataError(f"{path}: the LMDB has no __metadata__ entry")
            meta = msgpack.unpackb(raw, raw=False)
            if "nframes" not in meta:
                raise DataError(f"{path}: __metadata__ has no 'nframes'")
            fmt = meta.get("frame_idx_fmt", "012d")
            frames = []
            for i in range(int(meta["nframes"])):
                data = txn.get(format(i, fmt).encode())
                if data is None:
                    raise DataError(f"{path}: frame {i} (key {format(i, fmt)}) is missing")
                frame = msgpack.unpackb(data, raw=False)
                frames.append({k: _decode(v) for k, v in frame.items()})
    finally:
        env.close()
    return meta, frames


def _labels(path, frames, ids, natoms, requirements):
    nf, labels, find = len(ids), {}, {}
    fields = {label_name(f)[0]: f for f in frames[ids[0]] if f not in ("atom_types", "coords")}
    for req in requirements:
        field = fields.get(req.key)
        values = [None if field is None else frames[i].get(field) for i in ids]
        have = [v is not None for v in values]
        if not any(have):
            if req.must:
                raise DataError(f"{path}: required label '{req.key}' is in no frame")
            shape = (nf, natoms, req.width) if req.atomic else (nf, req.width)
            labels[req.key], find[req.key] = np.full(shape, req.default), 0.0
            continue
        if not all(have):
            raise DataError(
                f"{path}: label '{req.key}' is missing in frame {ids[have.index(False)]} but "
                "present in others of the same atom count"
            )
        size = natoms * req.ndof if req.atomic else req.ndof
        for i, v in zip(ids, values):
            if np.size(v) != size:
                raise DataError(
                    f"{path}: frame {i} has {np.size(v)} values of '{req.key}', expected {size}"
                )
        arr = np.stack([np.asarray(v, np.float64).reshape(-1) for v in values])
        check_finite(arr, f"{path} ('{req.key}')", np.asarray(ids))
        if req.atomic:
            arr = arr.reshape(nf, natoms, req.ndof)
        labels[req.key] = np.repeat(arr, req.repeat, axis=-1) if req.repeat > 1 else arr
        find[req.key] = 1.0
    return labels, find


def load_lmdb(
    path: str | Path,
    type_map: Sequence[str] | None,
    requirements: Sequence[DataRequirement],
    sort_atoms: bool = True,
) -> list[System]:
    """Read an LMDB dataset: one System per atom count (paths ``<path>#nloc<n>``; just
    ``<path>`` when all frames have one count), types mapped onto ``type_map`` by name."""
    path = Path(path)
    meta, frames = read_frames(path)
    if not frames:
        raise DataError(f"{path}: the LMDB holds no frames")
    names = meta.get("type_map")
    if not names:
        raise DataError(f"{path}: __metadata__ has no type_map (element names of atom_types)")
    model_map = list(type_map) if type_map else list(names)
    to_model = name_lookup(list(names), model_map, f"{path} (type_map)")
    groups: dict[int, list[int]] = {}
    for i, fr in enumerate(frames):
        for field in ("atom_types", "coords"):
            if field not in fr:
                raise DataError(f"{path}: frame {i} has no '{field}'")
        groups.setdefault(int(np.size(fr["atom_types"])), []).append(i)
    systems = []
    for nloc, ids in groups.items():
        where = str(path) if len(groups) == 1 else f"{path}#nloc{nloc}"
        atype = np.stack([np.asarray(frames[i]["atom_types"], np.int64) for i in ids])
        if atype.min() < 0 or atype.max() >= len(names):
            raise DataError(f"{where}: atom_types outside the {len(names)} types of type_map")
        atype = np.asarray(to_model, np.int64)[atype]
        coords = np.stack([np.asarray(frames[i]["coords"], np.float64) for i in ids])
        coords = coords.reshape(len(ids), nloc, 3)
        check_finite(coords.reshape(len(ids), -1), f"{where} (coords)", np.asarray(ids))
        cells = [frames[i].get("cells") for i in ids]
        box = None
        if any(c is not None for c in cells):
            if not all(c is not None for c in cells):
                raise DataError(f"{where}: some frames have cells and others not")
            box = np.stack([np.asarray(c, np.float64).reshape(9) for c in cells])
            check_boxes(box, f"{where} (cells)", np.asarray(ids))
        labels, find = _labels(where, frames, ids, nloc, requirements)
        systems.append(
            make_system(
                path=where,
                coords=coords,
                box=box,
                atype=atype,
                labels=labels,
                find=find,
                type_map=model_map,
                mixed_type=bool((atype != atype[:1]).any()),
                sort_atoms=sort_atoms,
            )
        )
    return systems


def write_lmdb(path: str | Path, frames: Sequence[dict], type_map: Sequence[str]) -> Path:
    """Write frames (``atom_types``, ``coords``, optional ``cells``, ``energies``, ``forces``,
    ``virials``, other labels; numpy arrays) as an LMDB dataset in the reference's layout."""
    path = Path(path)
    lmdb, msgpack = _modules(path)
    nbytes = sum(v.nbytes for fr in frames for v in fr.values() if isinstance(v, np.ndarray))
    env = lmdb.open(str(path), map_size=max(1 << 24, 4 * nbytes), subdir=True)
    try:
        with env.begin(write=True) as txn:
            for i, fr in enumerate(frames):
                enc = {k: _encode(np.asarray(v)) for k, v in fr.items() if v is not None}
                txn.put(format(i, "012d").encode(), msgpack.packb(enc, use_bin_type=True))
            meta = {
                "nframes": len(frames),
                "frame_idx_fmt": "012d",
                "type_map": list(type_map),
                "frame_nlocs": [int(np.size(fr["atom_types"])) for fr in frames],
            }
            txn.put(METADATA, msgpack.packb(meta, use_bin_type=True))
    finally:
        env.close()
    return path
