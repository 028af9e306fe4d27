"""Readers that turn files and Python objects into import items.

Every reader yields :class:`Item` s: a structure (or something :func:`records.arrays_from`
reads) with its energy and provenance, or an error saying why item ``index`` of ``source`` could
not be read.  A reader never raises for bad content; the import records the reason and goes on.

Formats: CIF (pymatgen), pymatgen JSON (``Structure.as_dict()``, ``ComputedStructureEntry``),
the public API's record JSON (``{"id", "formula", "structure": "<pymatgen dict as a JSON
string>", "energy", "submissionTime"}``, one, a list, ``{"items": [...]}`` or JSON lines),
``Record.to_dict()`` JSON, deepmd/npy system folders, and anything ASE reads (POSCAR/CONTCAR,
extxyz, ...).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .labels import virial_to_stress
from .records import StructureArrays, is_atoms

#: File suffixes picked up when a folder is imported (plus the VASP names below, deepmd folders).
KNOWN_SUFFIXES = (
    ".cif",
    ".json",
    ".jsonl",
    ".ndjson",
    ".extxyz",
    ".xyz",
    ".vasp",
    ".poscar",
    ".traj",
)
#: File name prefixes picked up when a folder is imported (VASP inputs and outputs, read by ASE).
KNOWN_PREFIXES = ("POSCAR", "CONTCAR", "OUTCAR", "XDATCAR", "VASPRUN")
#: Largest JSON file read whole (bytes); bigger record collections should be JSON lines.
MAX_JSON_BYTES = 2 * 1024**3


@dataclass
class Item:
    """One thing to import, or the reason it cannot be (``error``)."""

    source: str  # file name (or "records") the item came from
    index: int  # position in that source (frame, block, line or list index)
    obj: Any = None
    energy: float | None = None  # total energy, eV
    meta: dict = field(default_factory=dict)  # model, submitter, source, submitted, tags
    error: str | None = None
    labels: dict = field(default_factory=dict)  # forces, stress, magmoms (lamkit.db.labels)


def item_from_object(obj: Any, source: str, index: int) -> Item:
    """An Item from a Structure, Atoms, (structure, energy) pair or a record dict."""
    if isinstance(obj, dict):
        return item_from_dict(obj, source, index)
    if isinstance(obj, tuple) and len(obj) == 2:
        return Item(source, index, obj[0], energy=obj[1])
    if is_atoms(obj):
        return _item_from_atoms(obj, source, index)
    return Item(source, index, obj)


_META_KEYS = ("model", "submitter", "source", "submitted", "tags")
_LABEL_KEYS = ("forces", "stress", "magmoms")


def _dict_labels(d: dict) -> dict:
    return {k: d[k] for k in _LABEL_KEYS if d.get(k) is not None}


def item_from_dict(d: dict, source: str, index: int) -> Item:
    """An Item from one of the dict forms listed in the module docstring."""
    cls = d.get("@class")
    if cls in ("ComputedStructureEntry", "ComputedEntry"):
        if "structure" not in d:
            return Item(source, index, error="ComputedEntry without a structure")
        return Item(source, index, d["structure"], energy=d.get("energy"))
    if cls == "Structure" or "sites" in d:
        return Item(source, index, d)
    if "structure" in d:
        s = d["structure"]
        if isinstance(s, str):  # the public API sends the pymatgen dict as a JSON string
            try:
                s = json.loads(s)
            except ValueError as exc:
                return Item(source, index, error=f"'structure' is not valid JSON: {exc}")
        meta = {k: d[k] for k in _META_KEYS if d.get(k) is not None}
        if "submissionTime" in d and "submitted" not in meta:
            meta["submitted"] = d["submissionTime"]
        return Item(source, index, s, energy=d.get("energy"), meta=meta, labels=_dict_labels(d))
    if {"lattice", "species", "frac_coords"} <= d.keys():
        meta = {k: d[k] for k in _META_KEYS if d.get(k) is not None}
        return Item(source, index, d, energy=d.get("energy"), meta=meta, labels=_dict_labels(d))
    return Item(
        source,
        index,
        error="unrecognised record dict: expected 'structure', pymatgen's Structure.as_dict() "
        f"or lattice/species/frac_coords keys; found keys {sorted(map(str, d))[:8]}",
    )


def _item_from_atoms(atoms, source: str, index: int, energy_key: str | None = None) -> Item:
    energy = None
    try:
        if atoms.calc is not None:
            energy = atoms.get_potential_energy()
    except Exception:  # noqa: BLE001 - a calculator without energy
        energy = None
    if energy is None:
        energy = atoms.info.get("energy")
    if energy_key is not None:
        results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
        if energy_key in atoms.info:
            energy = atoms.info[energy_key]
        elif energy_key in results:
            energy = results[energy_key]
        else:
            found = sorted(map(str, atoms.info))[:10]
            return Item(
                source, index, error=f"no info key '{energy_key}' (--energy-key); found {found}"
            )
    meta = {k: atoms.info[k] for k in _META_KEYS if atoms.info.get(k) is not None}
    if isinstance(meta.get("tags"), str):
        meta["tags"] = [t for t in meta["tags"].split(",") if t]
    return Item(source, index, atoms, energy=energy, meta=meta, labels=atoms_labels(atoms))


def atoms_labels(atoms) -> dict:
    """Forces, stress and magnetic moments of an ase.Atoms: the calculator's results (a live
    calculator is asked for forces and, for a periodic cell, stress), else ``arrays`` /
    ``info`` entries of those names."""
    out: dict = {}
    calc = atoms.calc
    if calc is not None:
        results = getattr(calc, "results", {})
        live = type(calc).__name__ != "SinglePointCalculator"
        implemented = getattr(calc, "implemented_properties", ())
        for key in _LABEL_KEYS:
            if key in results:
                out[key] = results[key]
            elif live and key in implemented and (key != "stress" or atoms.pbc.all()):
                try:
                    out[key] = calc.get_property(key, atoms)
                except Exception:  # noqa: BLE001 - a calculator that cannot give it
                    pass
    for key in ("forces", "magmoms"):
        if key not in out and key in atoms.arrays:
            out[key] = atoms.arrays[key]
    if "stress" not in out and atoms.info.get("stress") is not None:
        out["stress"] = atoms.info["stress"]
    return out


def iter_items(items: Iterable[Any], source: str = "records") -> Iterator[Item]:
    """Items from Python objects (each a Structure, Atoms, dict or (structure, energy))."""
    for i, obj in enumerate(items):
        yield item_from_object(obj, source, i)


def iter_files(paths: Iterable[str | Path], energy_key: str | None = None) -> Iterator[Item]:
    """Items from files and folders (folders: deepmd systems, or searched for known files).
    ``energy_key``: take each ASE-read frame's energy from this ``info`` key."""
    for p in paths:
        path = Path(p)
        if not path.exists():
            yield Item(str(path), -1, error="no such file or folder")
        elif path.is_dir():
            yield from _iter_folder(path, energy_key)
        else:
            yield from iter_file(path, energy_key)


def _iter_folder(path: Path, energy_key: str | None = None) -> Iterator[Item]:
    if (path / "type.raw").is_file():
        yield from iter_deepmd(path)
        return
    for child in sorted(path.iterdir()):
        if child.is_dir():
            yield from _iter_folder(child, energy_key)
        elif child.suffix.lower() in KNOWN_SUFFIXES or child.name.upper().startswith(
            KNOWN_PREFIXES
        ):
            yield from iter_file(child, energy_key)


def _is_poscar_name(path: Path) -> bool:
    return path.name.upper().startswith(("POSCAR", "CONTCAR"))


def iter_file(path: Path, energy_key: str | None = None) -> Iterator[Item]:
    """Items of one file, by its suffix (anything unknown goes to ASE)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".cif":
            yield from _iter_cif(path)
        elif suffix == ".json":
            yield from _iter_json(path)
        elif suffix in (".jsonl", ".ndjson"):
            yield from _iter_jsonl(path)
        else:
            yield from _iter_ase(path, energy_key)
    except Exception as exc:  # noqa: BLE001 - a reader failing on a whole file
        yield Item(str(path), -1, error=f"cannot read file: {type(exc).__name__}: {exc}")


def _iter_cif(path: Path) -> Iterator[Item]:
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about every CIF quirk it fixes
        try:
            structures = CifParser(str(path)).parse_structures(primitive=False)
        except Exception as exc:  # noqa: BLE001 - pymatgen raises many kinds on a bad CIF
            yield Item(str(path), 0, error=f"invalid CIF: {type(exc).__name__}: {exc}")
            return
    if not structures:
        yield Item(str(path), 0, error="invalid CIF: no structure could be read")
    for i, s in enumerate(structures):
        yield Item(str(path), i, s)


def _json_items(data: Any, source: str) -> Iterator[Item]:
    if (  # the public API's envelope {"code", "data": {"items": [...], "nextStartId"}}
        isinstance(data, dict)
        and isinstance(data.get("data"), dict)
        and isinstance(data["data"].get("items"), list)
    ):
        data = data["data"]
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if isinstance(data, list):
        for i, d in enumerate(data):
            if isinstance(d, dict):
                yield item_from_dict(d, source, i)
            else:
                yield Item(source, i, error=f"expected a JSON object; found {type(d).__name__}")
    elif isinstance(data, dict):
        yield item_from_dict(data, source, 0)
    else:
        yield Item(source, 0, error=f"expected a JSON object or list; found {type(data).__name__}")


def _iter_json(path: Path) -> Iterator[Item]:
    if path.stat().st_size > MAX_JSON_BYTES:
        yield Item(str(path), -1, error="JSON file over 2 GiB; write it as JSON lines (.jsonl)")
        return
    try:
        data = json.loads(path.read_text())
    except ValueError:
        yield from _iter_jsonl(path)  # JSON lines saved as .json
        return
    yield from _json_items(data, str(path))


def _iter_jsonl(path: Path) -> Iterator[Item]:
    index = 0
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError as exc:
                yield Item(str(path), index, error=f"line is not JSON: {exc}")
            else:
                if isinstance(d, dict):
                    yield item_from_dict(d, str(path), index)
                else:
                    yield Item(str(path), index, error="expected a JSON object on the line")
            index += 1


def _iter_ase(path: Path, energy_key: str | None = None) -> Iterator[Item]:
    import ase.io

    fmt = "vasp" if _is_poscar_name(path) or path.suffix.lower() in (".vasp", ".poscar") else None
    for i, atoms in enumerate(ase.io.iread(str(path), index=":", format=fmt)):
        yield _item_from_atoms(atoms, str(path), i, energy_key)


def iter_deepmd(path: Path) -> Iterator[Item]:
    """Frames of a deepmd/npy system (standard or mixed type; virtual atoms dropped)."""
    from ..data.system import DataRequirement, load_system
    from ..errors import DataError

    try:
        reqs = [
            DataRequirement("energy", 1),
            DataRequirement("force", 3, atomic=True),
            DataRequirement("virial", 9),
        ]
        system = load_system(path, None, reqs, sort_atoms=False)
    except DataError as exc:
        yield Item(str(path), -1, error=str(exc))
        return
    if system.type_map is None:
        yield Item(str(path), -1, error="type_map.raw is missing: the element names are unknown")
        return
    if not system.pbc or system.box is None:
        yield Item(str(path), -1, error="system is not periodic (nopbc); crystals need a cell")
        return
    has_energy = system.find.get("energy", 0.0) > 0
    has_force = system.find.get("force", 0.0) > 0
    has_virial = system.find.get("virial", 0.0) > 0
    names = list(system.type_map)
    for f in range(system.nframes):
        types = system.atype[f]
        real = types >= 0
        if (types[real] >= len(names)).any():
            yield Item(str(path), f, error=f"type index beyond type_map ({len(names)} names)")
            continue
        lattice = system.box[f].reshape(3, 3)
        try:
            frac = np.linalg.solve(lattice.T, system.coords[f][real].T).T
        except np.linalg.LinAlgError:
            yield Item(str(path), f, error="singular cell (zero volume)")
            continue
        species = [names[t] for t in types[real]]
        energy = float(system.labels["energy"][f, 0]) if has_energy else None
        labels = {}
        if has_force:
            labels["forces"] = system.labels["force"][f][real]
        if has_virial:
            volume = abs(float(np.linalg.det(lattice)))
            if volume > 0:
                labels["stress"] = virial_to_stress(system.labels["virial"][f], volume)
        structure = StructureArrays(lattice, species, frac)
        yield Item(str(path), f, structure, energy=energy, labels=labels)


def read_energy_file(path: str | Path) -> dict[str, float]:
    """``name energy`` lines (whitespace or comma separated, ``#`` comments): structure file name
    -> total energy in eV.  Raises RecordError naming the file and line of a bad entry."""
    import math

    from .errors import RecordError

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"energy file {path}: cannot read it: {exc}") from None
    out: dict[str, float] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        where = f"energy file {path}, line {lineno}"
        if len(parts) != 2:
            raise RecordError(f"{where}: expected 'file-name energy-in-eV'; found {line[:80]!r}")
        name, value = parts
        try:
            energy = float(value)
        except ValueError:
            raise RecordError(f"{where}: energy {value[:40]!r} is not a number (eV)") from None
        if not math.isfinite(energy):
            raise RecordError(f"{where}: energy is {energy}; expected a finite number (eV)")
        if name in out:
            raise RecordError(f"{where}: '{name}' is listed twice")
        out[name] = energy
    if not out:
        raise RecordError(f"energy file {path}: no entries")
    return out


def with_energies(items: Iterable[Item], energies: dict[str, float], used: set) -> Iterator[Item]:
    """``items`` with the energy of their file taken from ``energies`` (keys: the path as given
    or its file name).  A file listed there must hold exactly one structure; an energy that
    contradicts one in the file is an error.  Names that matched are added to ``used``."""
    pending: list[Item] = []

    def flush() -> Iterator[Item]:
        if not pending:
            return
        source = pending[0].source
        name = source if source in energies else Path(source).name
        if name not in energies:
            yield from pending
            return
        used.add(name)
        good = [it for it in pending if it.error is None]
        if len(good) != 1:
            for it in pending:
                reason = it.error or (
                    f"the energy file gives one energy for '{name}' but it holds {len(good)} "
                    "structures"
                )
                yield Item(it.source, it.index, error=reason)
            return
        for it in pending:
            if it.error is None:
                given = energies[name]
                if it.energy is not None and float(it.energy) != given:
                    it = Item(
                        it.source,
                        it.index,
                        error=f"energy {it.energy} eV in the file contradicts {given} eV in "
                        "the energy file",
                    )
                else:
                    it.energy = given
            yield it

    for item in items:
        if pending and item.source != pending[0].source:
            yield from flush()
            pending.clear()
        pending.append(item)
    yield from flush()
