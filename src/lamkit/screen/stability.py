"""Formation energy, energy above hull and decomposition of candidate structures against the
crystal database (:class:`HullOracle`).

>>> oracle = HullOracle(db, model="emt")
>>> st = oracle.assess(["Cu", "Cu", "Cu", "Au"], energy=-14.2)     # total energy, eV
>>> st.e_above_hull, st.decomposition, st.hull_status

Definitions (energies per atom in eV/atom), those of :mod:`lamkit.db.hull`:

* the hull of a chemical system is the lower convex hull (pymatgen ``PhaseDiagram``) of every
  record of the oracle's model whose chemical system is a subset of it (only the lowest record
  of each reduced formula can be on a hull, so only those enter), plus one point per element at
  its reference energy when one is declared in the database (``CrystalDB.set_references``) or
  given to the oracle (``references=``, which replaces the declared value of that element);
* the formation energy is the energy per atom minus the composition-weighted energies of the
  hull's elemental end points (the lowest of an element's records and its reference), as the
  database stores it for its own records;
* ``e_above_hull`` is the distance of the candidate above that hull; it is negative when the
  candidate lies below it (a new ground state), as in Matbench Discovery.  Distances within
  1e-9 eV/atom of the hull are reported as 0.

A hull that cannot be built is a stated ``hull_status``, never a silent 0 (``e_above_hull`` is
then None).  Phase diagrams are cached per chemical system, and the lowest energy of each
formula per sub-system, for the oracle's lifetime: thousands of candidates in one system cost
one hull build.  The oracle is a snapshot: records stored after a system was first used are not
seen; make a new oracle to see them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

if TYPE_CHECKING:
    from lamkit.db import CrystalDB

#: Distances to the hull below this (eV/atom) are reported as 0 (the database's own snap).
SNAP = 1e-9
#: Largest chemical system whose sub-systems are enumerated; larger ones use the stored list.
_ENUMERATE_MAX = 10


@dataclass(frozen=True)
class Stability:
    """Thermodynamic judgement of one structure (eV/atom).

    ``hull_status``: "ok"; "no-database" (the oracle has no database); "no-reference: Au, Pt"
    (elements with neither an elemental record of the model nor a reference); "no-records" (the
    database holds no record of the model in the system or its sub-systems, and references are
    missing); "error: ..." (an invalid input or a failed hull).  ``e_above_hull`` and
    ``decomposition`` are None unless the status is "ok".  ``decomposition`` reads like
    "0.5 lam-12 (Cu) + 0.5 lam-40 (AuCu)"; an end point that is a reference energy rather than
    a record reads "reference (Au)"."""

    formation_energy_per_atom: float | None
    e_above_hull: float | None
    decomposition: str | None
    hull_status: str
    chemsys: str


@dataclass
class _System:
    """A cached hull: the phase diagram, or the status saying why there is none."""

    status: str
    pd: Any = None
    end_points: dict[str, float] | None = None  # element -> eV/atom of the hull's end point


class HullOracle:
    """Energy above the database's hull for candidate structures of one model.

    ``db``: a :class:`~lamkit.db.CrystalDB`, a database URL or path, or None (then every
    assessment has status "no-database"; formation energies still come from ``references``).
    ``model``: the records (and declared references) of this model form the hulls; None means
    records stored without a model.  ``references``: {element: energy per atom (eV/atom)}
    replacing the database's declared reference of those elements.  ``min_formation_energy``
    (eV/atom, None to disable): a formation energy below it is no physical compound but a model
    failure (an exploded relaxation or a hole in a potential): status "error", no hull energy.
    """

    def __init__(
        self,
        db: CrystalDB | str | Path | None,
        model: str | None = "emt",
        references: dict[str, float] | None = None,
        *,
        min_formation_energy: float | None = -10.0,
    ):
        self.db = _open(db)
        self.model = model
        self.references = _check_references(references)
        self.min_formation_energy = min_formation_energy
        self._systems: dict[str, _System] = {}
        self._lowest: dict[str, dict[str, float]] = {}  # sub-system -> {formula: min eV/atom}
        self._declared: dict[str, float] | None = None
        self._stored: list[frozenset[str]] | None = None
        self._ids: dict[tuple[str, float], int | None] = {}

    # ------------------------------------------------------------------ public
    def assess(self, species: list[str], energy: float) -> Stability:
        """Judge a structure of ``species`` (one symbol per atom) with total ``energy`` (eV).
        Never raises for bad input: it becomes an "error: ..." status."""
        from pymatgen.core import Composition

        problem = _check_input(species, energy)
        chemsys = "" if problem else "-".join(sorted(set(species)))
        if problem:
            return Stability(None, None, None, f"error: {problem}", chemsys)
        counts = Counter(species)
        n = len(species)
        epa = float(energy) / n
        system = self._system(chemsys)
        if system.status != "ok":
            form = self._formation_without_hull(counts, n, epa)
            return Stability(form, None, None, system.status, chemsys)
        form = epa - sum(k / n * system.end_points[el] for el, k in counts.items())
        if self.min_formation_energy is not None and form < self.min_formation_energy:
            return Stability(
                form,
                None,
                None,
                f"error: formation energy {form:.4g} eV/atom is below "
                f"{self.min_formation_energy:g} eV/atom (no physical compound: a model failure?)",
                chemsys,
            )
        try:
            from pymatgen.analysis.phase_diagram import PDEntry

            comp = Composition(dict(counts))
            decomp, e = system.pd.get_decomp_and_e_above_hull(
                PDEntry(comp, float(energy)), allow_negative=True, check_stable=False
            )
            text = self._describe(decomp)
        except Exception as exc:  # noqa: BLE001 - any failure is a stated status
            return Stability(form, None, None, f"error: {type(exc).__name__}: {exc}", chemsys)
        e = float(e)
        return Stability(form, 0.0 if abs(e) < SNAP else e, text, "ok", chemsys)

    def hull_status(self, elements: str | list[str]) -> str:
        """The ``hull_status`` that candidates of a chemical system get ("Cu-Au", or a list of
        element symbols): "ok" when a hull can be built (it is then built and cached)."""
        if isinstance(elements, str):
            elements = elements.split("-")
        problem = _check_input(list(elements), 0.0)
        return f"error: {problem}" if problem else self._system("-".join(elements)).status

    @property
    def n_systems(self) -> int:
        """Chemical systems whose hull (or status) is cached."""
        return len(self._systems)

    def _system(self, chemsys: str) -> _System:
        """The cached hull of ``chemsys`` ("Cu-Au" in any element order), built on first use."""
        key = "-".join(sorted(set(chemsys.split("-"))))
        hit = self._systems.get(key)
        if hit is None:
            try:
                hit = self._build(key.split("-"))
            except Exception as exc:  # noqa: BLE001 - a database or pymatgen failure
                hit = _System(f"error: {type(exc).__name__}: {exc}")
            self._systems[key] = hit
        return hit

    # ------------------------------------------------------------------ hull building
    def _build(self, elements: list[str]) -> _System:
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
        from pymatgen.core import Composition, Element

        if self.db is None:
            return _System("no-database")
        lowest = self._load(elements)
        refs = {**self._declared_references(), **self.references}
        entries = []
        for formula, epa in lowest.items():
            comp = Composition(formula)
            entries.append(
                PDEntry(comp, epa * comp.num_atoms, name=formula, attribute=(formula, epa))
            )
        entries += [
            PDEntry(Composition(el), refs[el], name=el, attribute=None)
            for el in elements
            if el in refs
        ]
        have = {e.composition.elements[0].symbol for e in entries if e.is_element}
        missing = [el for el in elements if el not in have]
        if missing:
            if not lowest:
                return _System("no-records")
            return _System(f"no-reference: {', '.join(missing)}")
        pd = PhaseDiagram(entries, [Element(el) for el in elements])
        ends = {el.symbol: float(pd.el_refs[el].energy_per_atom) for el in pd.elements}
        return _System("ok", pd, ends)

    def _load(self, elements: list[str]) -> dict[str, float]:
        """{reduced formula: lowest energy per atom} of the model's records in every sub-system
        of ``elements`` (per sub-system cached; one grouped query for those not cached)."""
        from lamkit.db.engine import read_conn
        from lamkit.db.schema import records

        subs = self._subsystems(frozenset(elements))
        todo = [s for s in subs if s not in self._lowest]
        c = records.c
        for k in range(0, len(todo), 500):
            part = todo[k : k + 500]
            stmt = (
                select(c.chemsys, c.formula, func.min(c.energy_per_atom))
                .where(
                    self._model_cond(),
                    c.chemsys.in_(part),
                    c.energy_per_atom.is_not(None),
                )
                .group_by(c.chemsys, c.formula)
            )
            with read_conn(self.db.engine) as conn:
                rows = conn.execute(stmt).all()
            found: dict[str, dict[str, float]] = {s: {} for s in part}
            for cs, formula, epa in rows:
                found[cs][formula] = float(epa)
            self._lowest.update(found)
        return {f: e for s in subs for f, e in self._lowest[s].items()}

    def _subsystems(self, elements: frozenset[str]) -> list[str]:
        if len(elements) <= _ENUMERATE_MAX:
            els = sorted(elements)
            return ["-".join(c) for k in range(1, len(els) + 1) for c in combinations(els, k)]
        if self._stored is None:
            from lamkit.db.engine import read_conn
            from lamkit.db.schema import chemsystems

            with read_conn(self.db.engine) as conn:
                names = conn.execute(select(chemsystems.c.chemsys)).scalars().all()
            self._stored = [frozenset(s.split("-")) for s in names]
        return ["-".join(sorted(s)) for s in self._stored if s <= elements]

    def _declared_references(self) -> dict[str, float]:
        if self._declared is None:
            from lamkit.db.engine import read_conn
            from lamkit.db.hull import load_references

            with read_conn(self.db.engine) as conn:
                refs = load_references(conn, self.model)
            self._declared = {
                el: float(r["energy_per_atom"])
                for el, r in refs.items()
                if r["source"] == "declared"
            }
        return self._declared

    def _model_cond(self):
        from lamkit.db.schema import records

        c = records.c
        return c.model.is_(None) if self.model is None else c.model == self.model

    # ------------------------------------------------------------------ helpers
    def _formation_without_hull(self, counts: Counter, n: int, epa: float) -> float | None:
        """Formation energy against the given references alone (no database, no hull)."""
        if self.db is not None or not all(el in self.references for el in counts):
            return None
        return epa - sum(k / n * self.references[el] for el, k in counts.items())

    def _describe(self, decomp: dict) -> str:
        parts = []
        for entry, frac in sorted(decomp.items(), key=lambda kv: (-kv[1], kv[0].name)):
            if entry.attribute is None:
                label = f"reference ({entry.name})"
            else:
                rid = self._record_id(*entry.attribute)
                label = f"lam-{rid} ({entry.name})" if rid is not None else entry.name
            parts.append(f"{frac:.4g} {label}")
        return " + ".join(parts)

    def _record_id(self, formula: str, epa: float) -> int | None:
        """The lowest id among the model's records of ``formula`` at exactly ``epa``."""
        key = (formula, epa)
        if key not in self._ids:
            from lamkit.db.engine import read_conn
            from lamkit.db.schema import records

            c = records.c
            stmt = select(func.min(c.id)).where(
                c.energy_per_atom == epa, c.formula == formula, self._model_cond()
            )
            with read_conn(self.db.engine) as conn:
                self._ids[key] = conn.execute(stmt).scalar()
        return self._ids[key]


def _open(db: Any):
    if db is None:
        return None
    if isinstance(db, (str, Path)):
        from lamkit.db import CrystalDB

        return CrystalDB(db)
    if not hasattr(db, "engine"):
        raise TypeError(f"db: expected a CrystalDB, a database URL or None; found {type(db)}")
    return db


def _check_references(references: dict[str, float] | None) -> dict[str, float]:
    from lamkit.db.records import ELEMENTS

    if references is None:
        return {}
    if not isinstance(references, dict):
        raise TypeError(
            f"references: expected {{element: eV/atom}}; found {type(references).__name__}"
        )
    out = {}
    for el, e in references.items():
        if el not in ELEMENTS:
            raise ValueError(f"references: '{el}' is not an element symbol")
        try:
            value = float(e)
        except (TypeError, ValueError):
            raise ValueError(f"references: {el} = {e!r} is not a number (eV/atom)") from None
        if not math.isfinite(value):
            raise ValueError(f"references: {el} = {value} is not a finite energy (eV/atom)")
        out[el] = value
    return out


def _check_input(species: Any, energy: Any) -> str | None:
    """Why ``species`` and ``energy`` cannot be judged, or None."""
    from lamkit.db.records import ELEMENTS

    if isinstance(species, str) or not hasattr(species, "__len__") or len(species) == 0:
        return f"species: expected a non-empty list of element symbols; found {species!r:.60}"
    unknown = sorted({str(s) for s in species if s not in ELEMENTS})
    if unknown:
        return f"species: unknown element symbol(s) {', '.join(unknown[:5])}"
    try:
        value = float(energy)
    except (TypeError, ValueError):
        return f"energy: expected a number (eV); found {energy!r:.60}"
    if not math.isfinite(value):
        return f"energy is {value} eV; expected a finite total energy"
    return None
