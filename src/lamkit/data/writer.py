"""Writing deepmd/npy systems (for built-in examples and format conversion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_deepmd_system(
    path: str | Path,
    coords: np.ndarray,
    atype: np.ndarray,
    type_map: list[str],
    box: np.ndarray | None = None,
    labels: dict[str, np.ndarray] | None = None,
    set_size: int | None = None,
) -> Path:
    """Write one standard deepmd/npy system.

    Args:
        coords: [nf, natoms, 3] Å.  atype: [natoms] type indices into ``type_map``.
        box: [nf, 9] (rows a, b, c) or None for a non-periodic system (writes ``nopbc``).
        labels: e.g. ``{"energy": [nf], "force": [nf, natoms, 3], "virial": [nf, 9]}``.
        set_size: frames per ``set.NNN`` folder (default: all in ``set.000``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    coords = np.asarray(coords, dtype=np.float64)
    nf, natoms = coords.shape[:2]
    np.savetxt(path / "type.raw", np.asarray(atype, dtype=np.int64), fmt="%d")
    (path / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if box is None:
        (path / "nopbc").touch()
    set_size = set_size or nf
    for k, start in enumerate(range(0, nf, set_size)):
        sl = slice(start, min(start + set_size, nf))
        d = path / f"set.{k:03d}"
        d.mkdir(exist_ok=True)
        np.save(d / "coord.npy", coords[sl].reshape(-1, natoms * 3))
        if box is not None:
            np.save(d / "box.npy", np.asarray(box, dtype=np.float64)[sl].reshape(-1, 9))
        for key, arr in (labels or {}).items():
            arr = np.asarray(arr, dtype=np.float64)
            np.save(d / f"{key}.npy", arr[sl].reshape(arr[sl].shape[0], -1))
    return path


def write_hdf5_systems(systems: dict[str, str | Path], file: str | Path) -> Path:
    """Pack deepmd/npy system folders into one deepmd/hdf5 file, one group per entry of
    ``systems`` (group name -> folder): every file of a system becomes a dataset named by its
    relative path (``type.raw`` as integers, ``type_map.raw`` as names, ``nopbc``,
    ``set.000/coord.npy``, ...), the layout DeePMD-kit and lamkit read with
    ``"systems": "file.hdf5"`` or ``"file.hdf5#/group"``."""
    import h5py

    file = Path(file)
    with h5py.File(file, "w") as h5:
        for group, folder in systems.items():
            folder = Path(folder)
            g = h5.require_group(group) if group.strip("/") else h5
            for item in sorted(folder.rglob("*")):
                if not item.is_file():
                    continue
                name = item.relative_to(folder).as_posix()
                if item.suffix == ".npy":
                    g.create_dataset(name, data=np.load(item, allow_pickle=False))
                elif item.name == "type.raw":
                    g.create_dataset(name, data=np.loadtxt(item, dtype=np.int64, ndmin=1))
                elif item.name == "type_map.raw":
                    g.create_dataset(name, data=np.array(item.read_text().split(), dtype="S"))
                elif item.name == "nopbc":
                    g.create_dataset(name, data=True)
    return file
