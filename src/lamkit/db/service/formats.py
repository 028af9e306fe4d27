"""Structure files in and out of the service: CIF, POSCAR, extended XYZ and JSON.

Downloads are written from a record's pymatgen ``Structure``; uploads are parsed into
:class:`Upload` items (structure, energy, where in the file) or a :class:`FormatError` that
names the file and what is wrong with it. Parsers' own warnings (pymatgen's CIF reader is
chatty) are kept out of the caller's warning filters.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.core.periodic_table import Element

#: format -> (media type, file name suffix)
DOWNLOADS: dict[str, tuple[str, str]] = {
    "cif": ("chemical/x-cif", ".cif"),
    "poscar": ("text/plain; charset=utf-8", ".vasp"),
    "extxyz": ("chemical/x-extxyz", ".extxyz"),
    "json": ("application/json", ".json"),
}

#: upload file suffix -> format
SUFFIXES = {
    ".cif": "cif",
    ".vasp": "poscar",
    ".poscar": "poscar",
    ".xyz": "extxyz",
    ".extxyz": "extxyz",
    ".json": "json",
}


class FormatError(ValueError):
    """An uploaded file or posted record that cannot be read; the message says where."""


@dataclass
class Upload:
    """One structure read from a request, with the energy and metadata found next to it."""

    structure: Structure
    where: str
    energy: float | None = None
    model: str | None = None
    source: str | None = None
    tags: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- downloads
def write_structure(record: Any, fmt: str) -> str:
    """The record's structure as text in ``fmt`` (one of :data:`DOWNLOADS`)."""
    structure: Structure = record.structure
    if fmt == "cif":
        if hasattr(record, "to_cif"):
            return record.to_cif()
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(structure))
    if fmt == "poscar":
        from pymatgen.io.vasp import Poscar

        return Poscar(structure, comment=f"{record.formula} lamkit-db id {record.id}").get_str()
    if fmt == "extxyz":
        from ase.io import write

        atoms = record.to_atoms() if hasattr(record, "to_atoms") else _to_atoms(structure)
        atoms.info.update({"lamkit_db_id": int(record.id)})
        if record.energy is not None:
            atoms.info["energy"] = float(record.energy)
        if record.model:
            atoms.info["model"] = str(record.model)
        buf = io.StringIO()
        write(buf, atoms, format="extxyz")
        return buf.getvalue()
    if fmt == "json":
        return json.dumps(record.to_dict(), indent=1, default=str)
    raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(DOWNLOADS)}")


def _to_atoms(structure: Structure):
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_atoms(structure)


# ----------------------------------------------------------------------------- uploads
def format_of(filename: str, given: str | None) -> str:
    """The upload format: ``given`` if set, else from the file name's suffix."""
    if given:
        if given not in DOWNLOADS:
            raise FormatError(
                f"format: unknown format {given!r}; expected one of {sorted(DOWNLOADS)}"
            )
        return given
    lower = filename.lower()
    if lower.startswith("poscar") or lower.startswith("contcar"):
        return "poscar"
    for suffix, fmt in SUFFIXES.items():
        if lower.endswith(suffix):
            return fmt
    raise FormatError(
        f"file: cannot tell the format of {filename!r} from its name; name it "
        f"*.cif, *.vasp/POSCAR, *.extxyz/*.xyz or *.json, or give the form field "
        f"'format'"
    )


def parse_file(text: str, fmt: str, name: str) -> list[Upload]:
    """Every structure in one uploaded file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "cif":
                return _parse_cif(text, name)
            if fmt == "poscar":
                from pymatgen.io.vasp import Poscar

                return [Upload(Poscar.from_str(text).structure, where=name)]
            if fmt == "extxyz":
                return _parse_extxyz(text, name)
            if fmt == "json":
                data = json.loads(text)
                items = data.get("records", data) if isinstance(data, dict) else data
                items = items if isinstance(items, list) else [items]
                return [parse_item(it, f"{name}[{i}]") for i, it in enumerate(items)]
    except FormatError:
        raise
    except json.JSONDecodeError as exc:
        raise FormatError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except Exception as exc:  # noqa: BLE001 - parsers raise anything on garbage
        raise FormatError(
            f"{name}: could not read it as {fmt.upper()}: {type(exc).__name__}: {exc}"
        ) from exc
    raise FormatError(f"{name}: unknown format {fmt!r}")


def _parse_cif(text: str, name: str) -> list[Upload]:
    from pymatgen.io.cif import CifParser

    parser = CifParser(io.StringIO(text))
    structures = parser.parse_structures(primitive=False)
    if not structures:
        raise FormatError(f"{name}: no structure in this CIF")
    return [
        Upload(s, where=f"{name}[{i}]" if len(structures) > 1 else name)
        for i, s in enumerate(structures)
    ]


def _parse_extxyz(text: str, name: str) -> list[Upload]:
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = read(io.StringIO(text), index=":", format="extxyz")
    out = []
    for i, atoms in enumerate(frames):
        where = f"{name}[{i}]"
        if not atoms.pbc.all() or atoms.cell.rank < 3:
            raise FormatError(
                f"{where}: a crystal needs a full 3D periodic cell "
                f"(pbc={atoms.pbc.tolist()}, cell rank {atoms.cell.rank})"
            )
        energy = atoms.info.get("energy")
        if energy is None and atoms.calc is not None:
            energy = atoms.calc.results.get("energy")
        out.append(
            Upload(
                AseAtomsAdaptor.get_structure(atoms),
                where=where,
                energy=None if energy is None else float(energy),
                model=atoms.info.get("model"),
            )
        )
    return out


def bad_character(text: str) -> str | None:
    """What is wrong with the first character that cannot be stored as text in both SQLite
    and PostgreSQL (control characters, NUL among them; lone UTF-16 surrogates, which have no
    UTF-8 form), or None."""
    for c in text:
        if ord(c) < 32 or ord(c) == 127:
            return f"control character {c!r} is not allowed"
        if 0xD800 <= ord(c) <= 0xDFFF:
            return f"lone surrogate {c!r} is not a character"
    return None


def check_text(text: str | None, where: str, max_len: int = 1024) -> None:
    """Free text to store: characters both databases can store, bounded length."""
    if text is None:
        return
    if len(text) > max_len:
        raise FormatError(f"{where}: {len(text)} characters; at most {max_len}")
    bad = bad_character(text)
    if bad is not None:
        raise FormatError(f"{where}: {bad}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FormatError(f"{where}: expected a number, got {value!r:.60}")
    try:
        x = float(value)  # an int too large for a float overflows here
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise FormatError(f"{where}: expected a finite number, got {value!r:.60}")
    return x


#: Longest cell vector accepted (Å) and largest fractional coordinate: beyond these a cell is
#: a typo or an attack, and its numbers lose all precision.
MAX_CELL_LENGTH = 10_000.0
MAX_FRAC = 1_000.0


def check_geometry(structure: Structure, where: str) -> None:
    """Refuse cells with absurd vector lengths or atoms absurdly far outside the cell."""
    lengths = np.asarray(structure.lattice.abc, dtype=float)
    if not np.all(np.isfinite(lengths)) or lengths.max() > MAX_CELL_LENGTH:
        raise FormatError(
            f"{where}: cell vector lengths {np.round(lengths, 3).tolist()} Å; at most "
            f"{MAX_CELL_LENGTH:g} Å are accepted"
        )
    frac = np.asarray(structure.frac_coords, dtype=float)
    if frac.size and (not np.all(np.isfinite(frac)) or np.abs(frac).max() > MAX_FRAC):
        raise FormatError(
            f"{where}: fractional coordinates up to {np.abs(frac).max():.3g}; at most "
            f"{MAX_FRAC:g} (in cell lengths) are accepted"
        )


def _matrix(value: Any, shape: tuple[int, int], where: str, bound: float = math.inf) -> np.ndarray:
    if not isinstance(value, list) or len(value) != shape[0]:
        raise FormatError(f"{where}: expected a list of {shape[0]} rows of {shape[1]} numbers")
    rows = []
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != shape[1]:
            raise FormatError(f"{where}[{i}]: expected {shape[1]} numbers, got {row!r}"[:200])
        rows.append([_number(x, f"{where}[{i}][{j}]") for j, x in enumerate(row)])
        big = next((j for j, x in enumerate(rows[-1]) if abs(x) > bound), None)
        if big is not None:
            raise FormatError(f"{where}[{i}][{big}]: {rows[-1][big]:.3g} is beyond ±{bound:g}")
    return np.array(rows, dtype=float)


def _species(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise FormatError(f"{where}: expected a non-empty list of element symbols")
    out = []
    for i, sym in enumerate(value):
        if isinstance(sym, dict) and "element" in sym:  # pymatgen species dicts
            sym = sym["element"]
        if not isinstance(sym, str) or not Element.is_valid_symbol(sym):
            raise FormatError(f"{where}[{i}]: unknown element {sym!r}")
        out.append(sym)
    return out


def _lattice(value: Any, where: str) -> Lattice:
    if isinstance(value, dict):  # {"matrix": ...} as in pymatgen and the record JSON
        where, value = f"{where}.matrix", value.get("matrix")
    matrix = _matrix(value, (3, 3), where, bound=MAX_CELL_LENGTH)
    if abs(np.linalg.det(matrix)) < 1e-6:
        raise FormatError(
            f"{where}: the cell vectors are (nearly) coplanar: volume "
            f"{abs(np.linalg.det(matrix)):.3g} Å^3"
        )
    return Lattice(matrix)


def parse_item(item: Any, where: str) -> Upload:
    """One posted record: ``{"structure": <pymatgen dict>, ...}`` or ``{"lattice",
    "species", "frac_coords" | "cart_coords", ...}`` (the record JSON of this database), plus
    optional ``energy`` (eV, total), ``model``, ``source`` and ``tags``."""
    if not isinstance(item, dict):
        raise FormatError(f"{where}: expected a JSON object, got {type(item).__name__}")
    inner = item.get("structure")
    if isinstance(inner, str):  # the public API sends the pymatgen dict as a JSON string
        try:
            inner = json.loads(inner)
        except json.JSONDecodeError as exc:
            raise FormatError(
                f"{where}.structure: a string that is not valid JSON ({exc.msg})"
            ) from None
    if isinstance(inner, dict) and "species" in inner and "lattice" in inner:
        # the record JSON of this database nests lattice/species/frac_coords under "structure"
        structure = parse_item(inner, f"{where}.structure").structure
    elif inner is not None:
        structure = _pymatgen_structure(inner, f"{where}.structure")
    elif "lattice" in item and "species" in item:
        lattice = _lattice(item["lattice"], f"{where}.lattice")
        species = _species(item["species"], f"{where}.species")
        key = "frac_coords" if "frac_coords" in item else "cart_coords"
        if key not in item:
            raise FormatError(f"{where}: needs 'frac_coords' or 'cart_coords' with 'species'")
        bound = MAX_FRAC if key == "frac_coords" else MAX_FRAC * MAX_CELL_LENGTH
        coords = _matrix(item[key], (len(species), 3), f"{where}.{key}", bound=bound)
        structure = Structure(lattice, species, coords, coords_are_cartesian=key == "cart_coords")
    else:
        raise FormatError(
            f"{where}: expected 'structure' (a pymatgen Structure dict) or "
            f"'lattice', 'species' and 'frac_coords'; got keys {sorted(item)}"[:300]
        )
    energy = item.get("energy")
    energy = None if energy is None else _number(energy, f"{where}.energy")
    tags = item.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise FormatError(f"{where}.tags: expected a list of strings")
    for key in ("model", "source"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise FormatError(f"{where}.{key}: expected a string")
    for key, text in [("model", item.get("model")), ("source", item.get("source"))] + [
        (f"tags[{i}]", t) for i, t in enumerate(tags)
    ]:
        check_text(text, f"{where}.{key}")
    return Upload(
        structure,
        where=where,
        energy=energy,
        model=item.get("model"),
        source=item.get("source"),
        tags=tags,
    )


def _pymatgen_structure(value: Any, where: str) -> Structure:
    if not isinstance(value, dict) or "lattice" not in value or "sites" not in value:
        raise FormatError(f"{where}: expected a pymatgen Structure dict with 'lattice' and 'sites'")
    sites = value["sites"]
    if not isinstance(sites, list) or not sites:
        raise FormatError(f"{where}.sites: expected a non-empty list")
    lattice = _lattice(value["lattice"], f"{where}.lattice")
    species, coords = [], []
    for i, site in enumerate(sites):
        w = f"{where}.sites[{i}]"
        if not isinstance(site, dict):
            raise FormatError(f"{w}: expected an object")
        spec = site.get("species")
        if isinstance(spec, list) and len(spec) == 1 and isinstance(spec[0], dict):
            spec = spec[0].get("element")
        elif isinstance(spec, list):
            raise FormatError(f"{w}.species: partial occupancy is not supported")
        if spec is None and isinstance(site.get("label"), str):
            spec = site["label"]
        species.extend(_species([spec], f"{w}.species"))
        key = "abc" if "abc" in site else "xyz"
        if key not in site:
            raise FormatError(f"{w}: needs 'abc' (fractional) or 'xyz' (Cartesian) coordinates")
        bound = MAX_FRAC if key == "abc" else MAX_FRAC * MAX_CELL_LENGTH
        xyz = _matrix([site[key]], (1, 3), f"{w}.{key}", bound=bound)[0]
        coords.append(xyz if key == "abc" else lattice.get_fractional_coords(xyz))
    return Structure(lattice, species, np.array(coords))
