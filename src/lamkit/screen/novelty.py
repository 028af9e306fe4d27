"""Novelty against the crystal database (:class:`NoveltyIndex`) and uniqueness within a
submission (:func:`find_unique`), with pymatgen's ``StructureMatcher``.

Two structures are the same when ``StructureMatcher(**PRESETS[preset])`` fits the new one onto
the other (primitive cells, Niggli reduction, volumes scaled; pymatgen's defaults otherwise):

* ``openlam``: ltol 0.05, stol 0.1, angle_tol 5° (the OpenLAM competition and lamkit.db);
* ``mattergen``: ltol 0.2, stol 0.3, angle_tol 5° (MatterGen's S.U.N. metrics).

The matcher only runs on structures that pass a prefilter, always the same reduced formula
(the matcher requires it) and, where one formula has many stored structures, a space-group
key:

* ``prefilter="formula"``: every structure of the formula is compared; exactly a brute-force
  search, slow only where a formula has many distinct stored structures;
* ``prefilter="spacegroup"``: only structures whose space groups agree.  A stored record's is
  spglib's at symprec 0.1 Å (the database's indexed ``spacegroup_number``); a candidate's key
  is the set of its space groups at each of ``symprecs`` (default 0.1, 0.3 and 0.5 Å).  The
  first is the database's tolerance; the looser ones find the parent group of a slightly
  distorted candidate (a rocksalt cell strained by 4 % is monoclinic at 0.1 Å and cubic at
  0.3 Å), so that it still meets its symmetric stored twin;
* ``prefilter="auto"`` (the default): "formula" when at most ``auto_limit`` (16) records pass
  the formula (and model and energy) filters, "spacegroup" above; within a submission, the
  same per formula group.

The space-group key misses a match only when the *stored* structure is distorted by more
than 0.1 Å but less than the matcher's tolerances while the candidate is not, or when a
candidate's distortion exceeds even the loosest symprec: a stored rocksalt cell whose sites
were moved by 0.05 Å, or a cell strained by 12 % under the loose ``mattergen`` tolerances (see
tests/test_screen_novelty.py).  Relaxed records rarely carry such distortions.  The key costs
spglib calls (a few ms each for a small cell), so it is only computed when used.

``energy_window`` (relative, e.g. 0.05, the OpenLAM client's 5 %; default off) also requires
energies per atom within that fraction of each other, ``|a - b| <= w * max(|a|, |b|)``, when
both are known; it only makes sense when the energies come from the same model.

Stored structures are compared in id order and each distinct stored geometry (exact bytes) is
fitted once per query; its reduced (Niggli, primitive) structure is cached for the index's
lifetime, so repeated queries against the same records cost one fit each.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import or_, select

if TYPE_CHECKING:
    from lamkit.db import CrystalDB

#: StructureMatcher tolerances per preset (fractional length, site (fraction of the average
#: free length per atom) and angle (degrees) tolerances).
PRESETS: dict[str, dict[str, float]] = {
    "openlam": dict(ltol=0.05, stol=0.1, angle_tol=5.0),
    "mattergen": dict(ltol=0.2, stol=0.3, angle_tol=5.0),
}
#: Prefilters: formula alone, formula and space group, or chosen per formula by its size.
PREFILTERS = ("auto", "spacegroup", "formula")
#: "auto" compares exhaustively up to this many records of one formula.
AUTO_LIMIT = 16
#: spglib tolerances (Å) of a candidate's space-group key; the first is the database's.
SYMPRECS = (0.1, 0.3, 0.5)


def structure_matcher(preset: str):
    """pymatgen ``StructureMatcher`` of a preset name."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**_preset(preset))


def _preset(preset: str) -> dict[str, float]:
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {', '.join(PRESETS)}; found {preset!r}")
    return PRESETS[preset]


def _prefilter(prefilter: str) -> str:
    if prefilter not in PREFILTERS:
        raise ValueError(f"prefilter: expected one of {', '.join(PREFILTERS)}; found {prefilter!r}")
    return prefilter


def _window(energy_window: float | None) -> float | None:
    if energy_window is None:
        return None
    w = float(energy_window)
    if not 0 <= w < 1:
        raise ValueError(f"energy_window: expected a fraction in [0, 1); found {energy_window!r}")
    return w


def energy_close(a: float | None, b: float | None, window: float | None) -> bool:
    """Whether energies per atom ``a`` and ``b`` pass the relative window (always when the
    window is None or an energy is unknown)."""
    if window is None or a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return True
    return abs(a - b) <= window * max(abs(a), abs(b))


@dataclass
class Probe:
    """A structure prepared for matching: its reduced formula, exact geometry (``lattice``
    [3, 3] Å, ``frac_coords`` [n, 3], ``species`` [n]), the reduced (Niggli, primitive)
    pymatgen structure the matcher works on, and its space groups per spglib tolerance,
    computed on first use (:meth:`spacegroups`)."""

    formula: str
    lattice: np.ndarray
    frac_coords: np.ndarray
    species: list[str]
    reduced: Any
    key: bytes  # the exact geometry and species, as the database stores them
    _groups: dict[float, int | None] = field(default_factory=dict, repr=False)

    def spacegroups(self, symprecs: Sequence[float] = SYMPRECS) -> frozenset[int | None]:
        """spglib's space-group numbers at each tolerance (Å); None where it finds none."""
        for sp in symprecs:
            if float(sp) not in self._groups:
                self._groups[float(sp)] = _spacegroup(
                    self.lattice, self.frac_coords, self.species, float(sp)
                )
        return frozenset(self._groups[float(sp)] for sp in symprecs)


def _geometry_key(lattice: np.ndarray, frac: np.ndarray, species: list[str]) -> bytes:
    """The exact geometry as bytes, as the database stores it (float64 little-endian lattice
    and fractional coordinates, space-separated species)."""
    lat = np.ascontiguousarray(lattice, dtype="<f8").tobytes()
    return lat + np.ascontiguousarray(frac, dtype="<f8").tobytes() + " ".join(species).encode()


def _reduce(lattice: np.ndarray, frac: np.ndarray, species: list[str]):
    """The matcher's own reduction (Niggli, then primitive cell), done once per structure."""
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice(lattice), species, frac)
    return s.get_reduced_structure(reduction_algo="niggli").get_primitive_structure()


def _spacegroup(lattice: np.ndarray, frac: np.ndarray, species: list[str], symprec: float):
    """spglib's space-group number at ``symprec`` (Å), None if it finds none; at the
    database's tolerance exactly as lamkit.db.records computes (and caches) it."""
    from lamkit.db.records import SYMPREC, load_spglib, spacegroup

    if symprec == SYMPREC:
        return spacegroup(lattice, frac, species)[0]
    from ase.data import atomic_numbers

    spglib = load_spglib()
    try:
        ds = spglib.get_symmetry_dataset(
            (lattice, frac, [atomic_numbers[el] for el in species]), symprec=symprec
        )
    except spglib.error.SpglibError:
        return None
    return None if ds is None else int(ds.number)


def probe(structure: Any) -> Probe:
    """A :class:`Probe` of a pymatgen Structure, an ase.Atoms or a lamkit Record: build one
    per structure and pass it to both :meth:`NoveltyIndex.match` and :func:`find_unique` to
    reduce it (and find its space groups) once.  Raises lamkit.db.RecordError (a ValueError)
    with the reason when the structure cannot be stored in the database (unreadable,
    non-finite, overlapping atoms: see lamkit.db.records.validate)."""
    from lamkit.db.records import arrays_from, reduced_formula, validate

    s = validate(arrays_from(structure))
    lattice = np.ascontiguousarray(s.lattice, dtype=np.float64)
    frac = np.ascontiguousarray(s.frac_coords, dtype=np.float64)
    species = list(s.species)
    return Probe(
        reduced_formula(species),
        lattice,
        frac,
        species,
        _reduce(lattice, frac, species),
        _geometry_key(lattice, frac, species),
    )


def _fit(sm, a: Any, b: Any) -> bool:
    """``sm.fit`` of two reduced structures (the reduction is not repeated).  Primitive cells
    of different sizes never match (the matcher maps sites one to one, without supercells)."""
    if len(a) != len(b):
        return False
    return bool(sm.fit(a, b, skip_structure_reduction=True))


class NoveltyIndex:
    """Matches candidate structures against the records of a crystal database.

    ``db``: a CrystalDB, a database URL or path, or None (an empty reference set: nothing
    matches).  ``model``: compare only against the records of this model (None: all records).
    ``prefilter``, ``auto_limit``, ``energy_window`` and ``symprecs``: see the module
    docstring.  ``cache_size``: the number of records whose reduced structures are kept (the
    cache is emptied when full; a reduced structure of a few sites takes about 5 kB)."""

    def __init__(
        self,
        db: CrystalDB | str | Path | None,
        preset: str = "openlam",
        model: str | None = None,
        *,
        prefilter: str = "auto",
        auto_limit: int = AUTO_LIMIT,
        energy_window: float | None = None,
        symprecs: Sequence[float] = SYMPRECS,
        cache_size: int = 50_000,
    ):
        from .stability import _open

        self.db = _open(db)
        self.preset = preset
        self.matcher = structure_matcher(preset)
        self.model = model
        self.prefilter = _prefilter(prefilter)
        self.auto_limit = int(auto_limit)
        self.energy_window = _window(energy_window)
        self.symprecs = _symprecs(symprecs)
        self.cache_size = int(cache_size)
        self._keys: dict[int, bytes] = {}  # record id -> geometry key
        self._reduced: dict[bytes, Any] = {}  # geometry key -> reduced structure
        self.fits = 0  # StructureMatcher calls made (a measure of the prefilter's work)

    def match(self, structure: Any, energy_per_atom: float | None = None) -> int | None:
        """The lowest id of a stored record that ``structure`` (pymatgen Structure, ase.Atoms
        or :class:`Probe`) matches, or None if it is new.  ``energy_per_atom`` (eV/atom)
        narrows the prefilter when the index has an ``energy_window``.  Raises RecordError
        for an unreadable structure."""
        if self.db is None:
            return None
        from lamkit.db.engine import read_conn

        p = structure if isinstance(structure, Probe) else probe(structure)
        if len(self._keys) >= self.cache_size:
            self._keys.clear()
            self._reduced.clear()
        tried: dict[bytes, bool] = {}
        with read_conn(self.db.engine) as conn:
            ids = self._candidate_ids(conn, p, energy_per_atom)
            # structures are loaded in id order, in growing chunks, until one matches: a known
            # structure usually matches one of the first records of its group
            start, size = 0, 16
            while start < len(ids):
                chunk = ids[start : start + size]
                self._load(conn, [rid for rid in chunk if rid not in self._keys])
                for rid in chunk:
                    key = self._keys[rid]
                    if key not in tried:
                        tried[key] = self._fit_record(p, key)
                    if tried[key]:
                        return rid
                start, size = start + size, min(4 * size, 1024)
        return None

    def _candidate_ids(self, conn, p: Probe, epa: float | None) -> list[int]:
        """Ids of the stored records passing the prefilter, ascending."""
        from lamkit.db.schema import records

        c = records.c
        conds = [c.formula == p.formula]
        if self.model is not None:
            conds.append(c.model == self.model)
        w = self.energy_window
        if w is not None and epa is not None and math.isfinite(epa):
            # a superset of the window in SQL (|a - b| <= w |b| implies
            # |a - b| <= w |a| / (1 - w)), the exact test in Python
            half = w * abs(epa) / (1.0 - w) * (1 + 1e-12)
            conds.append(
                or_(c.energy_per_atom.is_(None), c.energy_per_atom.between(epa - half, epa + half))
            )
        else:
            w = None

        def ids(*extra) -> list[int]:
            # sorted here, not in SQL: an ORDER BY id would keep SQLite from answering from an
            # index on (formula, spacegroup_number) alone where one exists
            if w is None:
                return sorted(conn.execute(select(c.id).where(*conds, *extra)).scalars())
            rows = conn.execute(select(c.id, c.energy_per_atom).where(*conds, *extra)).all()
            return sorted(rid for rid, e in rows if energy_close(epa, e, w))

        if self.prefilter == "formula":
            return ids()
        if self.prefilter == "auto":
            everything = ids()
            if len(everything) <= self.auto_limit:
                return everything
        groups = p.spacegroups(self.symprecs)
        cond = c.spacegroup_number.in_(sorted(n for n in groups if n is not None))
        if None in groups:
            cond = or_(cond, c.spacegroup_number.is_(None))
        return ids(cond)

    def _load(self, conn, ids: list[int]) -> None:
        """Cache the geometry keys and reduced structures of records ``ids``."""
        from lamkit.db.schema import records

        if not ids:
            return
        c = records.c
        stmt = select(c.id, c.lattice, c.frac_coords, c.species).where(c.id.in_(ids))
        for rid, lat, frac, species in conn.execute(stmt):
            key = lat + frac + species.encode()
            self._keys[rid] = key
            if key not in self._reduced:
                lattice = np.frombuffer(lat, dtype="<f8").reshape(3, 3)
                coords = np.frombuffer(frac, dtype="<f8").reshape(-1, 3)
                self._reduced[key] = _reduce(lattice, coords, species.split())

    def _fit_record(self, p: Probe, key: bytes) -> bool:
        if key == p.key:
            return True  # the very same geometry
        self.fits += 1
        return _fit(self.matcher, p.reduced, self._reduced[key])


def _symprecs(symprecs: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(x) for x in symprecs)
    if not out or not all(math.isfinite(x) and x > 0 for x in out):
        raise ValueError(f"symprecs: expected positive spglib tolerances (Å); found {symprecs!r}")
    return out


def find_unique(
    structures: Sequence[Any],
    preset: str = "openlam",
    energies_per_atom: Sequence[float | None] | None = None,
    *,
    prefilter: str = "auto",
    auto_limit: int = AUTO_LIMIT,
    energy_window: float | None = None,
    symprecs: Sequence[float] = SYMPRECS,
) -> list[int | None]:
    """Duplicates within a submission: ``dups[i]`` is the smallest ``j < i`` such that
    structure ``i`` matches structure ``j`` (``StructureMatcher.fit(s_i, s_j)`` of the preset,
    energies per atom within ``energy_window`` when given), or None when ``i`` is the first of
    its kind.  Deterministic in input order.  Only structures of the same reduced formula are
    compared; with ``prefilter="spacegroup"``, and with "auto" in formulas of more than
    ``auto_limit`` structures, only those whose space-group keys (spglib at each of
    ``symprecs``) share a space group: both sides are candidates here, so a distorted structure
    meets its symmetric twin whichever comes first.  ``structures`` may hold
    :class:`Probe` objects; entries that are None or cannot be read are never duplicates (None)
    nor matched."""
    sm = structure_matcher(preset)
    _prefilter(prefilter)
    w = _window(energy_window)
    symprecs = _symprecs(symprecs)
    n = len(structures)
    if energies_per_atom is not None and len(energies_per_atom) != n:
        raise ValueError(
            f"energies_per_atom: expected {n} values (one per structure); "
            f"found {len(energies_per_atom)}"
        )
    probes: list[Probe | None] = []
    for s in structures:
        try:
            probes.append(None if s is None else s if isinstance(s, Probe) else probe(s))
        except ValueError:
            probes.append(None)
    sizes = Counter(p.formula for p in probes if p is not None)
    groups: dict[str, list[tuple[int, Probe, float | None]]] = defaultdict(list)
    dups: list[int | None] = [None] * n
    for i, p in enumerate(probes):
        if p is None:
            continue
        epa = None if energies_per_atom is None else energies_per_atom[i]
        epa = None if epa is None else float(epa)
        keyed = prefilter == "spacegroup" or (prefilter == "auto" and sizes[p.formula] > auto_limit)
        for j, q, e in groups[p.formula]:
            if keyed and not p.spacegroups(symprecs) & q.spacegroups(symprecs):
                continue
            if energy_close(epa, e, w) and (p.key == q.key or _fit(sm, p.reduced, q.reduced)):
                dups[i] = j
                break
        groups[p.formula].append((i, p, epa))
    return dups
