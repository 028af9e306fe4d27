"""One deepmd/npy system in memory: :class:`System`, :class:`DataRequirement`, :func:`load_system`.

Layout of a system directory (standard and mixed type)::

    type.raw            one integer per atom (a placeholder of zeros in mixed type)
    type_map.raw        optional element names (required in mixed type)
    nopbc               optional empty file: the system is not periodic
    set.*/coord.npy     [nf, natoms*3] Å
    set.*/box.npy       [nf, 9] Å, cell vectors as rows (periodic systems only)
    set.*/real_atom_types.npy   [nf, natoms] int, mixed type only (-1 = virtual atom)
    set.*/<key>.npy     labels, [nf, ndof] (global) or [nf, natoms*ndof] (atomic)
    set.*/hessian.npy   [nf, (3 natoms)^2] d2E/dx dx, eV/Å^2, rows and columns 3i + xyz

Sets are read in lexicographic order and concatenated.  Everything is float64 in memory.
Large files (``checks.MMAP_MIN_BYTES``) of a single-set system stay memory-mapped read-only:
frames are paged in when a batch uses them, and per-frame type counts are made per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import keys
from ..errors import DataError
from .checks import (
    check_boxes,
    check_columns,
    check_finite,
    check_nframes,
    check_type_range,
    read_float_rows,
    read_npy,
)
from .h5path import H5Path
from .typemap import count_types, read_type_map_raw, read_type_raw, remap_types

MIXED_TYPE_FILE = "real_atom_types.npy"
#: Names that are not labels: geometry, types and the batch bookkeeping entries.
RESERVED_KEYS = frozenset(
    {keys.COORD, keys.BOX, keys.ATYPE, keys.NATOMS, keys.SID, keys.FID, "type", "real_atom_types"}
)


@dataclass(frozen=True)
class DataRequirement:
    """A label (or frame/atomic parameter) the model or loss wants from the data.

    ``key`` names the file ``set.*/<key>.npy`` and the batch entry.  A global key is loaded as
    ``[nf, ndof*repeat]``, an atomic one as ``[nf, natoms, ndof*repeat]``; ``repeat`` repeats
    each value (``atom_pref`` with ndof 1 and repeat 3 becomes one weight per force component).
    A missing file is an error when ``must``; otherwise the label is filled with ``default``
    and ``find_<key>`` is 0.0. ``origin`` says which setting asks for the label (e.g.
    ``"model/fitting_net/task_dim 3"``); errors about the file quote it.
    """

    key: str
    ndof: int
    atomic: bool = False
    must: bool = False
    default: float = 0.0
    repeat: int = 1
    origin: str = ""

    def __post_init__(self) -> None:
        if self.key in RESERVED_KEYS:
            raise ValueError(
                f"'{self.key}' is not a label; reserved names: {sorted(RESERVED_KEYS)}"
            )
        if self.ndof <= 0 or self.repeat <= 0:
            raise ValueError(f"{self.key}: ndof and repeat must be positive integers")

    @property
    def width(self) -> int:
        """Number of values per frame (global) or per atom (atomic) after repetition."""
        return self.ndof * self.repeat


@dataclass
class System:
    """All frames of one system, in memory, float64 (int64 for types and counts).

    Atoms are stored in the order given by ``atom_order``: position ``i`` holds atom
    ``atom_order[i]`` of the file.  Use :meth:`to_file_order` to undo the sort.
    """

    path: str
    coords: np.ndarray  # [nf, natoms, 3] Å
    box: np.ndarray | None  # [nf, 9] Å, rows a, b, c; None when not periodic
    atype: np.ndarray  # [nf, natoms] int64 index into type_map; -1 = virtual atom
    labels: dict[str, np.ndarray]  # key -> [nf, width] (global) or [nf, natoms, width] (atomic)
    find: dict[str, float]  # key -> 1.0 if the label was in the data, else 0.0
    type_count: int  # number of types that ``atype`` indexes
    pbc: bool
    mixed_type: bool
    type_map: list[str] | None
    atom_order: np.ndarray  # [natoms] int64: stored atom i is atom atom_order[i] of the file

    @property
    def nframes(self) -> int:
        return int(self.coords.shape[0])

    @property
    def natoms(self) -> int:
        """Atom slots per frame (virtual atoms of mixed type included)."""
        return int(self.coords.shape[1])

    @property
    def ntypes(self) -> int:
        return self.type_count

    @property
    def natoms_vec(self) -> np.ndarray:
        """``[nf, 2 + ntypes]`` int64: (natoms, natoms, real atoms per type) of every frame."""
        return count_types(self.atype, self.type_count)

    def natoms_vec_of(self, frames: np.ndarray) -> np.ndarray:
        """:attr:`natoms_vec` of the given frames only (cheap for a batch)."""
        return count_types(self.atype[frames], self.type_count)

    def to_file_order(self, arr: np.ndarray, axis: int = 1) -> np.ndarray:
        """Put an atomic array (atoms along ``axis``) back into the file's atom order."""
        inverse = np.argsort(self.atom_order)
        return np.take(arr, inverse, axis=axis)


def select_frames(system: System, frames: Sequence[int] | np.ndarray) -> System:
    """A system holding only the given frames (in that order) of ``system``."""
    idx = np.asarray(frames, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= system.nframes):
        raise DataError(
            f"{system.path}: frame indices must lie in [0, {system.nframes}), got "
            f"{idx.min()}..{idx.max()}"
        )
    return replace(
        system,
        coords=system.coords[idx],
        box=None if system.box is None else system.box[idx],
        atype=system.atype[idx],
        labels={k: v[idx] for k, v in system.labels.items()},
    )


def make_system(
    path: str,
    coords: np.ndarray,
    box: np.ndarray | None,
    atype: np.ndarray,
    labels: dict[str, np.ndarray],
    find: dict[str, float],
    type_map: list[str] | None,
    mixed_type: bool,
    sort_atoms: bool,
) -> System:
    """Assemble a :class:`System` from checked arrays; sorts atoms by type unless mixed type.

    ``atype`` is ``[nf, natoms]`` and already indexes ``type_map``.  The sort is stable and uses
    frame 0's types, which are the same in every frame of a standard system.
    """
    natoms = coords.shape[1]
    order = np.arange(natoms, dtype=np.int64)
    if sort_atoms and not mixed_type:
        order = np.argsort(atype[0], kind="stable").astype(np.int64)
        coords, atype = coords[:, order], atype[:, order]
        labels = {k: _sort_label(k, v, order) for k, v in labels.items()}
    if type_map is not None:
        ntypes = len(type_map)
    else:
        ntypes = max(int(atype.max()) + 1, 1)
    return System(
        path=path,
        coords=coords,
        box=box,
        atype=atype,
        labels=labels,
        find=find,
        type_count=ntypes,
        pbc=box is not None,
        mixed_type=mixed_type,
        type_map=list(type_map) if type_map is not None else None,
        atom_order=order,
    )


def join_sets(arrays: list[np.ndarray]) -> np.ndarray:
    """Frames of all sets in one array; a single set is returned as is (it may be mapped)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def permute_hessian(hess: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Hessians ``[nf, (3 natoms)^2]`` with atom ``order[i]`` moved to position ``i`` on both
    axes (the reference's atom sort applied to each atom's 3 rows and 3 columns)."""
    nf, n = hess.shape[0], len(order)
    h = hess.reshape(nf, n, 3, n, 3)[:, order][:, :, :, order]
    return h.reshape(nf, 9 * n * n)


def _sort_label(key: str, arr: np.ndarray, order: np.ndarray) -> np.ndarray:
    if arr.ndim == 3:  # atomic
        return arr[:, order]
    return permute_hessian(arr, order) if key == keys.HESSIAN else arr


def label_width(req: DataRequirement, natoms: int) -> int:
    """Columns of a label file: ``ndof`` (global), ``natoms * ndof`` (atomic), and for the
    Hessian (whatever ``ndof`` says, as in the reference) ``(3 natoms)^2``."""
    if req.key == keys.HESSIAN:
        return 9 * natoms * natoms
    return natoms * req.ndof if req.atomic else req.ndof


def _read_label(path: Path, req: DataRequirement, nframes: int, natoms: int, ref: Path):
    """One label file -> ``[nf, width]`` or ``[nf, natoms, width]`` float64, checked."""
    arr = read_float_rows(path)
    check_nframes(arr, path, nframes, ref)
    if req.key == keys.HESSIAN:
        reason = f"type.raw lists {natoms} atoms: one (3*{natoms})^2 Hessian per frame"
        check_columns(arr, path, label_width(req, natoms), reason)
        check_finite(arr, path)
        return arr
    if req.atomic:
        reason = f"type.raw lists {natoms} atoms and '{req.key}' has {req.ndof} value(s) per atom"
        check_columns(arr, path, natoms * req.ndof, reason)
    else:
        why = f" ({req.origin})" if req.origin else ""
        check_columns(arr, path, req.ndof, f"'{req.key}' has {req.ndof} value(s) per frame{why}")
    check_finite(arr, path)
    if req.atomic:
        arr = arr.reshape(nframes, natoms, req.ndof)
    return np.repeat(arr, req.repeat, axis=-1) if req.repeat > 1 else arr


def _read_set(
    set_dir: Path,
    natoms: int,
    pbc: bool,
    mixed: bool,
    requirements: Sequence[DataRequirement],
) -> dict[str, np.ndarray]:
    """Read one ``set.*`` directory; returns coord/box/types plus the label files present."""
    coord_path = set_dir / "coord.npy"
    if not coord_path.is_file():
        raise DataError(f"{coord_path} is missing; every set needs coordinates")
    coord = read_float_rows(coord_path)
    nf = coord.shape[0]
    if nf == 0:
        raise DataError(f"{coord_path} holds 0 frames; remove the empty set {set_dir}")
    type_raw = set_dir.parent / "type.raw"
    check_columns(
        coord, coord_path, natoms * 3, f"{type_raw} lists {natoms} atoms (3 coordinates each)"
    )
    check_finite(coord, coord_path)
    out = {"coord": coord.reshape(nf, natoms, 3)}
    if pbc:
        box_path = set_dir / "box.npy"
        if not box_path.is_file():
            raise DataError(
                f"{box_path} is missing but the system is periodic; add box.npy [nframes, 9] "
                f"or an empty file named 'nopbc' in {set_dir.parent}"
            )
        box = read_float_rows(box_path)
        check_nframes(box, box_path, nf, coord_path)
        check_columns(box, box_path, 9, "a box is 3 cell vectors of 3 components")
        check_finite(box, box_path)
        check_boxes(box, box_path)
        out["box"] = box
    if mixed:
        types_path = set_dir / MIXED_TYPE_FILE
        types = read_npy(types_path)
        if types.dtype.kind not in "iu":
            raise DataError(f"{types_path} holds {types.dtype}; expected integer type indices")
        types = np.asarray(types, dtype=np.int64).reshape(types.shape[0], -1)
        check_nframes(types, types_path, nf, coord_path)
        check_columns(types, types_path, natoms, f"{type_raw} lists {natoms} atoms")
        out["real_atom_types"] = types
    for req in requirements:
        path = set_dir / f"{req.key}.npy"
        if path.is_file():
            out["label:" + req.key] = _read_label(path, req, nf, natoms, coord_path)
    return out


def _collect_labels(
    root: Path, set_dirs: list[Path], sets: list[dict], requirements, natoms: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Concatenate label files over sets, or fill defaults; labels must be in all sets or none."""
    nf = sum(s["coord"].shape[0] for s in sets)
    labels, find = {}, {}
    for req in requirements:
        have = ["label:" + req.key in s for s in sets]
        if all(have):
            labels[req.key] = join_sets([s["label:" + req.key] for s in sets])
            find[req.key] = 1.0
            continue
        if any(have):
            present = [d.name for d, h in zip(set_dirs, have) if h]
            missing = [d.name for d, h in zip(set_dirs, have) if not h]
            raise DataError(
                f"{root}: {req.key}.npy is in {present} but missing in {missing}; "
                "a label must be in every set of a system or in none"
            )
        if req.must:
            why = f"; it is required by {req.origin}" if req.origin else ""
            raise DataError(
                f"{root}: required label file {req.key}.npy is missing from every set "
                f"({', '.join(d.name for d in set_dirs)}){why}"
            )
        shape = (nf, natoms, req.width) if req.atomic else (nf, req.width)
        if req.key == keys.HESSIAN:
            shape = (nf, label_width(req, natoms))
        labels[req.key] = np.full(shape, req.default, dtype=np.float64)
        find[req.key] = 0.0
    return labels, find


def _resolve_types(
    root: Path,
    set_dirs: list[Path],
    sets: list[dict],
    file_types: np.ndarray,
    sys_type_map: list[str] | None,
    model_type_map: list[str] | None,
    mixed: bool,
) -> np.ndarray:
    """Per-frame types ``[nf, natoms]`` int64, range-checked and remapped to the model type_map."""
    type_path, map_path = root / "type.raw", root / "type_map.raw"
    if mixed:  # type.raw is a placeholder; the real types are per frame
        for d, s in zip(set_dirs, sets):
            check_type_range(
                s["real_atom_types"], len(sys_type_map), d / MIXED_TYPE_FILE, True, map_path
            )
        atype = join_sets([s["real_atom_types"] for s in sets])
    else:
        if sys_type_map is not None:
            check_type_range(file_types, len(sys_type_map), type_path, False, map_path)
        elif model_type_map is not None:
            check_type_range(
                file_types, len(model_type_map), type_path, False, "the model type_map"
            )
        elif (file_types < 0).any():
            raise DataError(
                f"{type_path}: negative type index {int(file_types.min())}; only mixed-type "
                f"systems may mark virtual atoms with -1"
            )
        nf = sum(s["coord"].shape[0] for s in sets)
        atype = np.broadcast_to(file_types, (nf, len(file_types))).copy()
    if model_type_map is not None and sys_type_map is not None:
        atype = remap_types(atype, sys_type_map, model_type_map, map_path)
    return atype


def load_system(
    path: str | Path,
    type_map: Sequence[str] | None,
    requirements: Sequence[DataRequirement],
    sort_atoms: bool = True,
) -> System:
    """Load a deepmd/npy system directory (standard or mixed type) into memory; ``path`` may
    also be an :class:`~lamkit.data.h5path.H5Path` group (the deepmd/hdf5 layout).

    ``type_map`` is the model's element list; when both it and ``type_map.raw`` exist, types are
    remapped by element name.  ``sort_atoms`` sorts the atoms of a standard system by type (stable);
    mixed-type systems keep the file order.  Raises DataError for any malformed input.
    """
    root = path if isinstance(path, H5Path) else Path(path)
    type_path = root / "type.raw"
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; a deepmd/npy system is a directory")
    if not type_path.is_file():
        raise DataError(f"{root} is not a deepmd/npy system: type.raw is missing")
    file_types = read_type_raw(type_path)
    natoms = len(file_types)
    map_path = root / "type_map.raw"
    sys_type_map = read_type_map_raw(map_path) if map_path.is_file() else None
    model_type_map = list(type_map) if type_map else None

    set_dirs = sorted(p for p in root.glob("set.*") if p.is_dir())
    if not set_dirs:
        raise DataError(f"{root} has no set.* directories; frames live in set.000/, set.001/, ...")
    is_mixed = [(d / MIXED_TYPE_FILE).is_file() for d in set_dirs]
    mixed = all(is_mixed)
    if any(is_mixed) and not mixed:
        without = [d.name for d, m in zip(set_dirs, is_mixed) if not m]
        raise DataError(
            f"{root}: {MIXED_TYPE_FILE} is in some sets but not in {without}; "
            "a mixed-type system needs it in every set"
        )
    if mixed and sys_type_map is None:
        raise DataError(f"{map_path} is missing; a mixed-type system must name its elements")
    pbc = not (root / "nopbc").exists()

    sets = [_read_set(d, natoms, pbc, mixed, requirements) for d in set_dirs]
    atype = _resolve_types(root, set_dirs, sets, file_types, sys_type_map, model_type_map, mixed)
    labels, find = _collect_labels(root, set_dirs, sets, requirements, natoms)
    return make_system(
        path=str(root),
        coords=join_sets([s["coord"] for s in sets]),
        box=join_sets([s["box"] for s in sets]) if pbc else None,
        atype=atype,
        labels=labels,
        find=find,
        type_map=model_type_map or sys_type_map,
        mixed_type=mixed,
        sort_atoms=sort_atoms,
    )
