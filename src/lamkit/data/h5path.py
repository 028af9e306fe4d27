"""deepmd/hdf5 systems: the deepmd/npy layout inside an HDF5 file.

DeePMD-kit (and dpdata's ``deepmd/hdf5`` format) store a system as an HDF5 group whose dataset
names are the npy layout's file names: ``type.raw`` (integer types), ``type_map.raw`` (element
names), ``nopbc`` (present for non-periodic systems), ``set.000/coord.npy``, ... A ``systems``
entry names a file (every group below its root that holds ``type.raw`` is a system, as the
reference searches it) or one group with ``file.hdf5#/path/to/group``.

:class:`H5Path` offers the part of :class:`pathlib.Path` the npy reader uses (``/``,
``is_file``, ``is_dir``, ``exists``, ``glob``, ``name``, ``parent``, ``read_text``) plus
``load()`` for a dataset's array, so one reader serves both layouts.
"""

from __future__ import annotations

import fnmatch
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError

SUFFIXES = (".h5", ".hdf5")


@lru_cache(maxsize=64)
def _open(file: str):
    import h5py

    try:
        return h5py.File(file, "r")
    except OSError as exc:
        raise DataError(f"cannot read {file} as HDF5: {exc}") from exc


class H5Path:
    """A node of an HDF5 file: ``H5Path("data.hdf5", "/sys1/set.000/coord.npy")``."""

    def __init__(self, file: str | Path, name: str = "/"):
        self.file = str(file)
        self.key = "/" + name.strip("/") if name.strip("/") else "/"

    @classmethod
    def parse(cls, spec: str | Path) -> H5Path:
        """``file.hdf5`` or ``file.hdf5#/group``."""
        file, _, name = str(spec).partition("#")
        if not Path(file).is_file():
            raise DataError(f"system path {file} does not exist")
        return cls(file, name or "/")

    def _node(self):
        h5 = _open(self.file)
        return h5.get(self.key) if self.key != "/" else h5

    def __truediv__(self, name: str) -> H5Path:
        return H5Path(self.file, f"{self.key.rstrip('/')}/{name}")

    def __str__(self) -> str:
        return f"{self.file}#{self.key}"

    def __repr__(self) -> str:
        return f"H5Path({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, H5Path) and (self.file, self.key) == (other.file, other.key)

    def __lt__(self, other: H5Path) -> bool:
        return (self.file, self.key) < (other.file, other.key)

    def __hash__(self) -> int:
        return hash((self.file, self.key))

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> H5Path:
        return H5Path(self.file, self.key.rsplit("/", 1)[0] or "/")

    def exists(self) -> bool:
        return self._node() is not None

    def is_file(self) -> bool:
        import h5py

        return isinstance(self._node(), h5py.Dataset)

    def is_dir(self) -> bool:
        import h5py

        return isinstance(self._node(), h5py.Group)

    def glob(self, pattern: str) -> list[H5Path]:
        """Children whose name matches ``pattern`` (one level, as the npy reader uses it)."""
        node = self._node()
        names = sorted(node.keys()) if hasattr(node, "keys") else []
        return [self / n for n in names if fnmatch.fnmatchcase(n, pattern)]

    def load(self) -> np.ndarray:
        """The dataset's array (read into memory)."""
        node = self._node()
        if not self.is_file():
            raise DataError(f"{self} is not a dataset")
        return np.asarray(node[()])

    def read_text(self) -> str:
        """A ``.raw`` dataset as whitespace-separated text (numbers or element names)."""
        arr = np.atleast_1d(self.load())
        return "\n".join(x.decode() if isinstance(x, bytes) else str(x) for x in arr.ravel())

    def systems(self) -> list[H5Path]:
        """Every group at or below this node that holds ``type.raw``, in sorted order."""
        import h5py

        found = [self] if (self / "type.raw").is_file() else []
        node = self._node()
        if not isinstance(node, h5py.Group):
            return found
        names: list[str] = []
        node.visit(names.append)
        for name in sorted(names):
            if name.endswith("/type.raw") or name == "type.raw":
                group = name.rsplit("/", 1)[0] if "/" in name else ""
                path = self / group if group else self
                if path != self:
                    found.append(path)
        return found


def is_hdf5(spec: str | Path) -> bool:
    """An HDF5 system entry: ``*.h5``/``*.hdf5`` (optionally ``#/group``), or a file that
    starts with the HDF5 signature."""
    file = str(spec).partition("#")[0]
    if "#" in str(spec) or Path(file).suffix.lower() in SUFFIXES:
        return True
    path = Path(file)
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"
