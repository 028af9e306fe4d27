"""Structures <-> database rows: validation, derived fields and the :class:`Record` dataclass.

A structure is three arrays: ``lattice`` [3, 3] Å (rows a, b, c), ``species`` [nsites] element
symbols and ``frac_coords`` [nsites, 3] fractional coordinates.  They are stored as float64
little-endian bytes, so what comes back is bit-identical to what went in.

Derived fields: pymatgen's reduced formula, alphabetically sorted elements and chemical system
("Fe-Li-O"), nsites, volume (Å^3), density (g/cm^3, ASE's standard atomic masses) and the spglib
space group with ``SYMPREC`` = 0.1 Å.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from .distances import shortest_distance
from .errors import RecordError
from .labels import LABELS, LATTICE_PARAMS, decode, label_columns, lattice_parameters

#: spglib tolerance (Å) for the stored space group and :meth:`CrystalDB.symmetry`.
SYMPREC = 0.1
#: Two atoms closer than this (Å) make a structure invalid (overlapping atoms).
MIN_DISTANCE = 0.5
#: Largest cell volume accepted (Å^3): beyond it distances lose all precision.
MAX_VOLUME = 1e12
#: Largest structure accepted, in sites.
MAX_SITES = 5000
#: Accepted window of energies per atom (eV/atom), wide enough for every real calculation:
#: all-electron total energies reach about -1.5e6 eV/atom for the heaviest elements (Og, Z=118,
#: about -52,000 Hartree by Thomas-Fermi), pseudopotential and ML-model energies are within
#: about -1e4..+1e3 eV/atom, and nothing physical is above +1e5 eV/atom.  An energy outside it
#: (1e308 eV, a unit slip by 1e10) is refused on import; inside it convex hulls stay well
#: conditioned (Qhull fails on entries of order 1e20 eV/atom).
ENERGY_PER_ATOM_MIN = -1.0e7
ENERGY_PER_ATOM_MAX = 1.0e5
#: ``spacegroup_symbol`` of a record imported with deferred symmetry (``spacegroup_number`` is
#: NULL) until :func:`lamkit.db.symindex.index_symmetry` (``lam db index``) fills both in.
SYMMETRY_PENDING = "pending"
#: Valid element symbols: H (Z=1) to Og (Z=118).
ELEMENTS: tuple[str, ...] = tuple(chemical_symbols[1:119])
_ELEMENT_SET = frozenset(ELEMENTS)
_AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660
_MASS = {el: float(atomic_masses[atomic_numbers[el]]) for el in ELEMENTS}


def public_id(record_id: int) -> str:
    """The stable public string id of a record: ``lam-<id>``."""
    return f"lam-{record_id}"


def element_mask(elements) -> tuple[int, int]:
    """128-bit element mask as two non-negative 63-bit integers: bit Z-1 of ``lo`` for Z 1..63,
    bit Z-64 of ``hi`` for Z 64..126."""
    lo = hi = 0
    for el in elements:
        z = atomic_numbers[el]
        if z <= 63:
            lo |= 1 << (z - 1)
        else:
            hi |= 1 << (z - 64)
    return lo, hi


def chemsys_of(elements) -> str:
    """Canonical chemical system: distinct symbols sorted alphabetically, joined by '-'."""
    return "-".join(sorted(set(elements)))


@lru_cache(maxsize=65536)
def _reduced_formula(counts: tuple[tuple[str, int], ...]) -> str:
    from pymatgen.core import Composition

    return Composition(dict(counts)).reduced_formula


def reduced_formula(species) -> str:
    """pymatgen's reduced formula of a list of element symbols (cached per composition)."""
    counts = Counter(species)
    g = 0
    for n in counts.values():
        g = math.gcd(g, n)
    return _reduced_formula(tuple(sorted((el, n // g) for el, n in counts.items())))


@dataclass
class StructureArrays:
    """A validated structure: ``lattice`` [3, 3] Å, ``species`` [n], ``frac_coords`` [n, 3]."""

    lattice: np.ndarray
    species: list[str]
    frac_coords: np.ndarray


def is_atoms(obj: Any) -> bool:
    """Whether ``obj`` is an ase.Atoms (subclasses too, e.g. pymatgen's MSONAtoms)."""
    from ase import Atoms

    return isinstance(obj, Atoms)


def arrays_from(obj: Any) -> StructureArrays:
    """Lattice, species and fractional coordinates of a pymatgen Structure, an ase.Atoms, a
    :class:`Record`, or a dict (``Record.to_dict()``'s ``structure`` with lattice / species /
    frac_coords, or pymatgen's ``Structure.as_dict()``).  Raises RecordError if unreadable."""
    if isinstance(obj, Record):
        return StructureArrays(obj.lattice, list(obj.species), obj.frac_coords)
    if isinstance(obj, StructureArrays):
        return obj
    if is_atoms(obj):
        return StructureArrays(
            np.asarray(obj.cell.array, dtype=np.float64),
            list(obj.get_chemical_symbols()),
            np.asarray(obj.get_scaled_positions(wrap=False), dtype=np.float64),
        )
    if type(obj).__module__.startswith("pymatgen") and hasattr(obj, "is_ordered"):
        if not obj.is_ordered:
            raise RecordError(
                "disordered structure (partial occupancies); only ordered structures are stored"
            )
        return StructureArrays(
            np.asarray(obj.lattice.matrix, dtype=np.float64),
            [sp.symbol for sp in obj.species],
            np.asarray(obj.frac_coords, dtype=np.float64),
        )
    if isinstance(obj, dict):
        if "structure" in obj and isinstance(obj["structure"], dict):
            obj = obj["structure"]
        if {"lattice", "species", "frac_coords"} <= obj.keys():
            try:
                lattice = np.asarray(obj["lattice"], dtype=np.float64)
                frac = np.asarray(obj["frac_coords"], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise RecordError(f"lattice/frac_coords are not numbers: {exc}") from None
            return StructureArrays(lattice, [str(s) for s in obj["species"]], frac)
        if obj.get("@class") == "Structure" or ("lattice" in obj and "sites" in obj):
            return _arrays_from_pymatgen_dict(obj)
        raise RecordError(
            "a structure dict needs lattice/species/frac_coords or pymatgen's Structure.as_dict()"
            f" keys (lattice, sites); found keys {sorted(obj)[:10]}"
        )
    raise RecordError(
        f"expected a pymatgen Structure, an ase.Atoms or a dict; found {type(obj).__name__}"
    )


def _arrays_from_pymatgen_dict(d: dict) -> StructureArrays:
    try:
        lat = d["lattice"]
        lattice = np.asarray(lat["matrix"] if isinstance(lat, dict) else lat, dtype=np.float64)
        species, frac = [], []
        for i, site in enumerate(d["sites"]):
            occ = site["species"]
            if len(occ) != 1 or abs(float(occ[0].get("occu", 1.0)) - 1.0) > 1e-8:
                raise RecordError(f"site {i} is disordered (partial occupancy); not supported")
            species.append(str(occ[0]["element"]))
            frac.append(site["abc"])
        return StructureArrays(lattice, species, np.asarray(frac, dtype=np.float64).reshape(-1, 3))
    except RecordError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RecordError(
            f"malformed pymatgen structure dict: {type(exc).__name__}: {exc}"
        ) from None


def validate(s: StructureArrays) -> StructureArrays:
    """Check shapes, finiteness, elements, volume and interatomic distances; return ``s`` with
    contiguous float64 arrays.  Raises RecordError with the reason."""
    lattice = np.ascontiguousarray(s.lattice, dtype=np.float64)
    frac = np.ascontiguousarray(s.frac_coords, dtype=np.float64)
    if lattice.shape != (3, 3):
        raise RecordError(f"lattice must be 3x3; found shape {lattice.shape}")
    n = len(s.species)
    if n == 0:
        raise RecordError("structure has no sites")
    if n > MAX_SITES:
        raise RecordError(f"structure has {n} sites; at most {MAX_SITES} are accepted")
    if frac.ndim != 2 or frac.shape != (n, 3):
        raise RecordError(
            f"mismatched lengths: {n} species but coordinates of shape {tuple(frac.shape)}"
        )
    unknown = sorted({el for el in s.species if el not in _ELEMENT_SET})
    if unknown:
        raise RecordError(f"unknown element symbol(s) {unknown}; expected symbols H..Og")
    if not np.isfinite(lattice).all():
        raise RecordError("lattice contains NaN or infinite values")
    if not np.isfinite(frac).all():
        raise RecordError("fractional coordinates contain NaN or infinite values")
    # a left-handed cell (negative determinant) is as valid as its mirror; it is stored as
    # given and its volume is the determinant's magnitude
    volume = abs(det3(lattice))
    if not 1e-6 < volume < MAX_VOLUME:
        raise RecordError(
            f"cell volume is {volume:.6g} Å^3; expected a non-degenerate lattice with a volume "
            f"above 1e-6 and below {MAX_VOLUME:.0e} Å^3"
        )
    dmin = min_distance(lattice, frac)
    if dmin < MIN_DISTANCE:
        raise RecordError(
            f"overlapping atoms: two sites are {dmin:.3f} Å apart (minimum {MIN_DISTANCE} Å)"
        )
    return StructureArrays(lattice, list(s.species), frac)


def det3(lattice: np.ndarray) -> float:
    """Determinant of a 3x3 matrix (the signed cell volume, Å^3) in plain floats: several times
    faster than ``np.linalg.det`` for one small matrix."""
    (a, b, c), (d, e, f), (g, h, i) = lattice.tolist()
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def min_distance(lattice: np.ndarray, frac: np.ndarray, cutoff: float = MIN_DISTANCE) -> float:
    """Shortest distance (Å) between two sites, periodic images included, or ``inf`` if none is
    shorter than ``cutoff``.  Cached on the exact bytes of the geometry."""
    key = (lattice.tobytes(), frac.tobytes(), float(cutoff))
    hit = _GEOMETRY_CACHE.get(("d", key))
    if hit is None:
        hit = shortest_distance(lattice, frac, cutoff)
        _cache_put(("d", key), hit)
    return hit


# Exact caches of the geometry-only results (minimum distance, space group).  High-throughput
# sets decorate the same prototype cells with many element combinations, and the space group
# depends only on which sites carry equal species, not on their names, so the key is the exact
# lattice and coordinate bytes plus the pattern of species (first-occurrence indices).
_GEOMETRY_CACHE: dict = {}
_CACHE_MAX = 200_000


def _cache_put(key, value) -> None:
    if len(_GEOMETRY_CACHE) >= _CACHE_MAX:
        _GEOMETRY_CACHE.clear()
    _GEOMETRY_CACHE[key] = value


def _species_pattern(species) -> bytes:
    first: dict[str, int] = {}
    return bytes(first.setdefault(el, len(first)) for el in species)


def load_spglib():
    """spglib with exceptions on errors (its future default; the old mode warns on every call)."""
    # spglib's C library prints "No centring was found" and the like to stderr unless told not to
    os.environ.setdefault("SPGLIB_WARNING", "OFF")
    import spglib
    import spglib.error

    spglib.error.OLD_ERROR_HANDLING = False
    return spglib


def spacegroup(lattice: np.ndarray, frac: np.ndarray, species) -> tuple[int | None, str | None]:
    """spglib space group (number, Hermann-Mauguin symbol) at ``SYMPREC``; (None, None) if spglib
    finds none.  Cached (exactly) on the geometry and the species pattern."""
    if len(species) > 255:
        return _spacegroup(lattice, frac, species)
    key = ("s", lattice.tobytes(), frac.tobytes(), _species_pattern(species))
    hit = _GEOMETRY_CACHE.get(key)
    if hit is None:
        hit = _spacegroup(lattice, frac, species)
        _cache_put(key, hit)
    return hit


def _spacegroup(lattice: np.ndarray, frac: np.ndarray, species) -> tuple[int | None, str | None]:
    spglib = load_spglib()
    numbers = [atomic_numbers[el] for el in species]
    try:
        text = spglib.get_spacegroup((lattice, frac, numbers), symprec=SYMPREC)
    except spglib.error.SpglibError:
        text = None
    if not text:
        return None, None
    symbol, _, number = text.rpartition(" (")
    return int(number.rstrip(")")), symbol


def content_hash(
    s: StructureArrays, energy: float | None, model: str | None, source: str | None
) -> str:
    """sha256 (hex) of the exact structure bytes, the energy, the model and the source: the same
    input imported twice gives the same hash (the UNIQUE key that makes imports idempotent)."""
    h = hashlib.sha256()
    h.update(s.lattice.astype("<f8").tobytes())
    h.update(s.frac_coords.astype("<f8").tobytes())
    h.update(" ".join(s.species).encode())
    h.update(b"\0" + repr(None if energy is None else float(energy)).encode())
    h.update(b"\0" + (model or "").encode() + b"\0" + (source or "").encode())
    return h.hexdigest()


def utc_naive(t: datetime | str | None) -> datetime:
    """A datetime (or ISO string) as naive UTC, the form stored; now if None."""
    if t is None:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RecordError(f"submission time '{t}' is not an ISO 8601 date/time") from None
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return t


def clean_text(name: str, value, maxlen: int) -> str | None:
    """A provenance string (model, source, submitter) checked the same way on every backend:
    at most ``maxlen`` characters and no NUL character (PostgreSQL cannot store one)."""
    if value is None:
        return None
    value = str(value)
    if len(value) > maxlen:
        raise RecordError(f"{name} is {len(value)} characters long; at most {maxlen} are stored")
    if "\x00" in value:
        raise RecordError(f"{name} contains a NUL character")
    return value


def clean_tags(tags) -> list[str]:
    """Tags as a sorted list of distinct non-empty strings."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    out = sorted({str(t).strip() for t in tags} - {""})
    for t in out:
        if len(t) > 100:
            raise RecordError(f"tag '{t[:20]}...' is {len(t)} characters; at most 100")
    return out


def make_row(
    obj: Any,
    energy: float | None = None,
    model: str | None = None,
    source: str | None = None,
    submitter: str | None = None,
    submitted: datetime | str | None = None,
    tags=None,
    labels: dict | None = None,
    symmetry: bool = True,
) -> dict:
    """The ``records`` row (without id) of a structure and its total energy (eV), with optional
    ``labels`` (``forces`` [n, 3] eV/Å, ``stress`` [3, 3] eV/Å^3, ``magmoms`` [n]).

    Validates (RecordError with the reason) and computes every derived field; with
    ``symmetry=False`` the space group is left pending (:data:`SYMMETRY_PENDING`)."""
    s = validate(arrays_from(obj))
    if energy is not None:
        try:
            energy = float(energy)
        except (TypeError, ValueError):
            raise RecordError(f"energy must be a number (eV); found {energy!r}") from None
        if not math.isfinite(energy):
            raise RecordError(f"energy is {energy}; expected a finite number (eV)")
        epa = energy / len(s.species)
        if not ENERGY_PER_ATOM_MIN <= epa <= ENERGY_PER_ATOM_MAX:
            raise RecordError(
                f"energy {energy:g} eV is {epa:g} eV/atom over {len(s.species)} sites; expected "
                f"{ENERGY_PER_ATOM_MIN:g}..{ENERGY_PER_ATOM_MAX:g} eV/atom (a total energy in eV; "
                "lamkit.db.records.ENERGY_PER_ATOM_MIN/MAX)"
            )
    model = clean_text("model", model, 255)
    source = clean_text("source", source, 1024)
    submitter = clean_text("submitter", submitter, 255)
    n = len(s.species)
    elements = sorted(set(s.species))
    volume = abs(det3(s.lattice))  # Å^3, positive for left-handed cells too
    mass = float(sum(_MASS[el] for el in s.species))
    if symmetry:
        number, symbol = spacegroup(s.lattice, s.frac_coords, s.species)
    else:
        number, symbol = None, SYMMETRY_PENDING
    return {
        **label_columns(labels, n),
        **lattice_parameters(s.lattice),
        "content_hash": content_hash(s, energy, model, source),
        "lattice": s.lattice.astype("<f8").tobytes(),
        "frac_coords": s.frac_coords.astype("<f8").tobytes(),
        "species": " ".join(s.species),
        "formula": reduced_formula(s.species),
        "elements": " ".join(elements),
        "chemsys": "-".join(elements),
        "nelements": len(elements),
        "nsites": n,
        "volume": volume,
        "density": mass / volume * _AMU_PER_A3_TO_G_PER_CM3,
        "spacegroup_number": number,
        "spacegroup_symbol": symbol,
        "energy": energy,
        "energy_per_atom": None if energy is None else energy / n,
        "model": model,
        "formation_energy_per_atom": None,
        "e_above_hull": None,
        "source": source,
        "submitter": submitter,
        "submitted": utc_naive(submitted),
        "tags": json.dumps(clean_tags(tags)),
    }


@dataclass
class Record:
    """One stored structure with its energy and derived fields (energies in eV, eV/atom)."""

    id: int
    lattice: np.ndarray  # [3, 3] Å, rows a, b, c
    species: list[str]  # [nsites]
    frac_coords: np.ndarray  # [nsites, 3]
    formula: str
    elements: list[str]
    chemsys: str
    nsites: int
    volume: float  # Å^3
    density: float  # g/cm^3
    spacegroup_number: int | None
    spacegroup_symbol: str | None
    energy: float | None  # eV
    energy_per_atom: float | None  # eV/atom
    model: str | None
    formation_energy_per_atom: float | None  # eV/atom
    e_above_hull: float | None  # eV/atom
    source: str | None
    submitter: str | None
    submitted: datetime  # UTC, timezone-aware
    tags: list[str] = field(default_factory=list)
    content_hash: str = ""
    forces: np.ndarray | None = None  # [nsites, 3] eV/Å
    stress: np.ndarray | None = None  # [3, 3] eV/Å^3, ASE sign; virial = -stress * volume
    magmoms: np.ndarray | None = None  # [nsites] Bohr magnetons
    a: float | None = None  # lattice parameters: Å
    b: float | None = None
    c: float | None = None
    alpha: float | None = None  # degrees
    beta: float | None = None
    gamma: float | None = None

    @property
    def public_id(self) -> str:
        return public_id(self.id)

    @property
    def structure(self):
        """The structure as a pymatgen Structure."""
        from pymatgen.core import Lattice, Structure

        return Structure(Lattice(self.lattice), self.species, self.frac_coords)

    def to_atoms(self):
        """The structure as an ase.Atoms (periodic), energy and id in ``info``."""
        from ase import Atoms

        atoms = Atoms(
            symbols=self.species, scaled_positions=self.frac_coords, cell=self.lattice, pbc=True
        )
        atoms.info.update({"id": self.id, "formula": self.formula})
        if self.energy is not None:
            atoms.info["energy"] = self.energy
        # label names ASE's extxyz reader turns into calculator results
        if self.forces is not None:
            atoms.arrays["forces"] = self.forces.copy()
        if self.stress is not None:
            atoms.info["stress"] = self.stress.copy()
        if self.magmoms is not None:
            atoms.arrays["magmoms"] = self.magmoms.copy()
        if self.model:
            atoms.info["model"] = self.model
        return atoms

    def to_cif(self) -> str:
        """CIF text of the structure (pymatgen's CifWriter, P1 setting)."""
        from pymatgen.io.cif import CifWriter

        return str(CifWriter(self.structure))

    def to_dict(self) -> dict:
        """JSON-ready dict; floats survive ``json.dumps``/``loads`` exactly."""
        return {
            "id": self.id,
            "public_id": self.public_id,
            "formula": self.formula,
            "elements": list(self.elements),
            "chemsys": self.chemsys,
            "nsites": self.nsites,
            "volume": self.volume,
            "density": self.density,
            "spacegroup_number": self.spacegroup_number,
            "spacegroup_symbol": self.spacegroup_symbol,
            "energy": self.energy,
            "energy_per_atom": self.energy_per_atom,
            "model": self.model,
            "formation_energy_per_atom": self.formation_energy_per_atom,
            "e_above_hull": self.e_above_hull,
            "source": self.source,
            "submitter": self.submitter,
            "submitted": self.submitted.isoformat(),
            "tags": list(self.tags),
            "content_hash": self.content_hash,
            **{p: getattr(self, p) for p in LATTICE_PARAMS},
            **{k: None if getattr(self, k) is None else getattr(self, k).tolist() for k in LABELS},
            "structure": {
                "lattice": self.lattice.tolist(),
                "species": list(self.species),
                "frac_coords": self.frac_coords.tolist(),
            },
        }


def record_from_row(row) -> Record:
    """A :class:`Record` from a ``records`` row (a SQLAlchemy Row or mapping)."""
    m = row._mapping if hasattr(row, "_mapping") else row
    species = m["species"].split()
    submitted = m["submitted"]
    if isinstance(submitted, str):  # defensive: raw SQLite text
        submitted = datetime.fromisoformat(submitted)
    if submitted.tzinfo is None:
        submitted = submitted.replace(tzinfo=timezone.utc)
    return Record(
        id=int(m["id"]),
        lattice=np.frombuffer(m["lattice"], dtype="<f8").reshape(3, 3).astype(np.float64),
        species=species,
        frac_coords=np.frombuffer(m["frac_coords"], dtype="<f8").reshape(-1, 3).astype(np.float64),
        formula=m["formula"],
        elements=m["elements"].split(),
        chemsys=m["chemsys"],
        nsites=int(m["nsites"]),
        volume=float(m["volume"]),
        density=float(m["density"]),
        spacegroup_number=m["spacegroup_number"],
        spacegroup_symbol=m["spacegroup_symbol"],
        energy=m["energy"],
        energy_per_atom=m["energy_per_atom"],
        model=m["model"],
        formation_energy_per_atom=m["formation_energy_per_atom"],
        e_above_hull=m["e_above_hull"],
        source=m["source"],
        submitter=m["submitter"],
        submitted=submitted,
        tags=json.loads(m["tags"] or "[]"),
        content_hash=m["content_hash"],
        **{k: decode(k, m.get(k)) for k in LABELS},
        **{p: m.get(p) for p in LATTICE_PARAMS},
    )
