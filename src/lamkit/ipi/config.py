"""Settings of the i-PI driver: DeePMD-kit's ``dp_ipi`` JSON file or command-line values.

``dp_ipi`` reads a JSON file with ``use_unix``, ``host``, ``port``, ``graph_file``, ``coord_file``
(an XYZ file whose atom *names* are mapped to type indices through ``atom_type``; the coordinates
in it are ignored) and ``verbose``. lamkit reads the same file unchanged and adds optional keys:
``graph_file`` may be a list (a committee), ``head`` (a branch of a multi-task model),
``device`` and ``timeout``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

KNOWN_KEYS = {"verbose", "use_unix", "port", "host", "graph_file", "coord_file", "atom_type",
              "head", "device", "timeout"}


@dataclass
class DriverConfig:
    """Where to connect, which models, and the atom type of each atom i-PI sends."""

    models: list[str]
    atom_names: list[str]
    atom_type: dict[str, int] | None = None  # name -> model type index; None: by element symbol
    use_unix: bool = True
    host: str = "localhost"
    port: int = 31415
    head: str | None = None
    device: str | None = None
    timeout: float | None = None
    verbose: bool = False
    source: str = "<command line>"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError(f"{self.source}: no model given ('graph_file' or -m)")
        if not self.atom_names:
            raise ConfigError(f"{self.source}: the structure has no atoms")
        if not (0 < int(self.port) < 65536):
            raise ConfigError(f"{self.source}: 'port' must be in 1..65535, got {self.port}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"{self.source}: 'timeout' must be positive, got {self.timeout}")

    def types_for(self, type_map: list[str], model: str) -> np.ndarray:
        """Type index of every atom for a model with ``type_map``; a clear error for an atom
        name the mapping or the model does not know."""
        out = np.empty(len(self.atom_names), dtype=np.int64)
        for i, name in enumerate(self.atom_names):
            if self.atom_type is not None:
                if name not in self.atom_type:
                    raise ConfigError(
                        f"{self.source}: atom {i} is named '{name}', which 'atom_type' does not "
                        f"map (it maps {sorted(self.atom_type)})")
                t = self.atom_type[name]
                if not 0 <= t < len(type_map):
                    raise ConfigError(
                        f"{self.source}: 'atom_type' maps '{name}' to {t}, but {model} has "
                        f"{len(type_map)} types {type_map}")
                out[i] = t
            else:
                if name not in type_map:
                    raise ConfigError(
                        f"atom {i} is '{name}', which is not in the type map {type_map} of "
                        f"{model}; give 'atom_type' (dp_ipi JSON) to map names to types")
                out[i] = type_map.index(name)
        return out


def read_xyz_names(path: str | Path) -> list[str]:
    """Atom names of the first frame of an XYZ file (names such as OW or HW1 are kept as they
    are, like ``dp_ipi``; extended XYZ works too)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the coordinate file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text XYZ file") from None
    try:
        natoms = int(lines[0].split()[0])
    except (IndexError, ValueError):
        raise DataError(f"{path}: the first line must be the number of atoms") from None
    if natoms < 1 or len(lines) < natoms + 2:
        raise DataError(f"{path}: says {natoms} atoms but has {max(len(lines) - 2, 0)} atom "
                        "lines")
    names = []
    for k, line in enumerate(lines[2:natoms + 2], start=3):
        parts = line.split()
        if len(parts) < 4:
            raise DataError(f"{path}, line {k}: expected 'name x y z', got {line!r}")
        names.append(parts[0])
    return names


def structure_names(path: str | Path) -> list[str]:
    """Atom names from an XYZ file (names kept) or, failing that, any ASE-readable file
    (element symbols)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such structure file")
    if path.suffix.lower() == ".xyz":
        try:
            return read_xyz_names(path)
        except DataError:
            pass
    import ase.io

    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f"{path}: cannot read the structure ({exc})") from None
    return list(atoms.get_chemical_symbols())


def load_json(path: str | Path) -> DriverConfig:
    """A ``dp_ipi`` JSON file (relative paths are taken from the file's folder)."""
    path = Path(path)
    try:
        conf = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(conf, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    unknown = sorted(set(conf) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(KNOWN_KEYS)}")
    for key in ("graph_file", "coord_file"):
        if key not in conf:
            raise ConfigError(f"{path}: missing '{key}'")
    base = path.parent
    graphs = conf["graph_file"]
    graphs = [graphs] if isinstance(graphs, str) else graphs
    if not isinstance(graphs, list) or not all(isinstance(g, str) for g in graphs):
        raise ConfigError(f"{path}: 'graph_file' must be a file name or a list of them")
    atom_type = conf.get("atom_type")
    if atom_type is not None and (
        not isinstance(atom_type, dict)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in atom_type.values())
    ):
        raise ConfigError(f"{path}: 'atom_type' must map atom names to integer types")
    try:
        port = int(conf.get("port", 31415))
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: 'port' must be an integer, got {conf['port']!r}") from None
    return DriverConfig(
        models=[str(base / g) for g in graphs],
        atom_names=structure_names(base / conf["coord_file"]),
        atom_type=atom_type,
        use_unix=bool(conf.get("use_unix", False)),
        host=str(conf.get("host", "localhost")),
        port=port,
        head=conf.get("head"),
        device=conf.get("device"),
        timeout=conf.get("timeout"),
        verbose=bool(conf.get("verbose", False)),
        source=str(path),
    )
