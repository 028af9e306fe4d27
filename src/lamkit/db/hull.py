"""Convex hulls per chemical system and model (pymatgen ``PhaseDiagram``), formation energies and
energies above hull, kept in the ``records`` table.

Definitions (all eV/atom):

* elemental references of a model: per element, the lower of a declared energy
  (:func:`declare_references`) and the lowest-energy elemental record of that model; stored in
  table ``elemental_refs`` with their source;
* formation energy = energy_per_atom - sum_el x_el * ref_el;
* e_above_hull of a record = its distance above the lower convex hull of all records of the same
  model whose chemical system is a subset of the record's system (energies of different models
  are never mixed).  NULL when an element of the system has no reference.

After an import the systems touched and every stored system containing one are recomputed, one
phase diagram per *maximal* affected system (its hull also serves every subsystem).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, select, update

from .errors import QueryError
from .hull_entries import (
    _composition,
    _Entries,
    _EntryCache,
    _fractions,
    _load_entries,
    _model_cond,
    _model_key,
    _take,
    sane_energy,
)
from .query import parse_elements
from .records import arrays_from, chemsys_of, public_id
from .schema import chemsystems, elemental_refs, records

log = logging.getLogger(__name__)

_DECLARED = "declared"
_RECORD = "record"


def _subsets(elements: frozenset[str]) -> list[frozenset[str]]:
    els = sorted(elements)
    return [frozenset(c) for k in range(1, len(els) + 1) for c in combinations(els, k)]


def _stored_systems(conn: Connection) -> dict[str, frozenset[str]]:
    rows = conn.execute(select(chemsystems.c.chemsys)).scalars().all()
    return {s: frozenset(s.split("-")) for s in rows}


# --------------------------------------------------------------------------- references
def load_references(conn: Connection, model: str | None) -> dict[str, dict]:
    """element -> {"energy_per_atom", "source", "record_id"} for ``model``."""
    rows = conn.execute(
        select(elemental_refs).where(elemental_refs.c.model == _model_key(model))
    ).all()
    return {
        r.element: {
            "energy_per_atom": r.energy_per_atom,
            "source": r.source,
            "record_id": r.record_id,
        }
        for r in rows
    }


#: Key of the PostgreSQL advisory lock that serialises hull updates.
_HULL_LOCK = 0x1A3C_DB01


def serialise_hull_updates(conn: Connection) -> None:
    """Take the hull-update lock until the transaction ends.  Concurrent writers on PostgreSQL
    would otherwise both replace the same ``elemental_refs`` rows (READ COMMITTED lets the
    second delete miss the first's insert: a duplicate key).  SQLite's write transactions are
    serial already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_HULL_LOCK})")


def declare_references(conn: Connection, model: str | None, energies: dict[str, float]) -> None:
    """Store declared references (eV/atom) for ``model`` and recompute the affected hulls."""
    serialise_hull_updates(conn)
    els = parse_elements(list(energies), "references")
    values = {el: float(energies[el]) for el in els}
    bad = [el for el, e in values.items() if not np.isfinite(e)]
    if bad:
        raise QueryError(f"references: energy of {bad[0]} is not a finite number (eV/atom)")
    conn.execute(
        delete(elemental_refs).where(
            elemental_refs.c.model == _model_key(model), elemental_refs.c.element.in_(els)
        )
    )
    conn.execute(
        elemental_refs.insert(),
        [
            {
                "model": _model_key(model),
                "element": el,
                "energy_per_atom": e,
                "source": _DECLARED,
                "record_id": None,
            }
            for el, e in values.items()
        ],
    )
    update_hulls(conn, {(model, el) for el in els})


def _refresh_references(conn: Connection, model: str | None, elements: set[str]) -> None:
    """Make the "record" references of ``elements`` the lowest elemental records of ``model``
    (declared references stay)."""
    if not elements:
        return
    key = _model_key(model)
    rows = conn.execute(
        select(records.c.chemsys, records.c.id, records.c.energy_per_atom).where(
            _model_cond(model),
            records.c.chemsys.in_(sorted(elements)),
            sane_energy(),
        )
    ).all()
    best: dict[str, tuple[float, int]] = {}
    for el, rid, epa in rows:
        if el not in best or (epa, rid) < best[el]:
            best[el] = (epa, rid)
    declared = {el for el, r in load_references(conn, model).items() if r["source"] == _DECLARED}
    conn.execute(
        delete(elemental_refs).where(
            elemental_refs.c.model == key,
            elemental_refs.c.source == _RECORD,
            elemental_refs.c.element.in_(sorted(elements)),
        )
    )
    fresh = [
        {"model": key, "element": el, "energy_per_atom": epa, "source": _RECORD, "record_id": rid}
        for el, (epa, rid) in best.items()
        if el not in declared
    ]
    if fresh:
        conn.execute(elemental_refs.insert(), fresh)


# --------------------------------------------------------------------------- phase diagrams


def _phase_diagram(entries: _Entries, refs: dict[str, dict], elements: list[str]):
    """(PhaseDiagram, None) or (None, elements without a reference).

    Only the lowest entry of each composition can be on the hull, so the diagram is built from
    those (a large system holds thousands of polymorphs; each becomes one PDEntry, whose
    ``attribute`` is its record id), plus the declared references."""
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Element

    lowest: dict[str, tuple[float, int]] = {}
    for rid, formula, epa in zip(entries.ids, entries.formulas, entries.epa.tolist()):
        if formula not in lowest or epa < lowest[formula][0]:
            lowest[formula] = (epa, rid)
    pd_entries = []
    for formula, (epa, rid) in lowest.items():
        comp = _composition(formula)
        pd_entries.append(PDEntry(comp, epa * comp.num_atoms, name=formula, attribute=rid))
    extra = [
        PDEntry(_composition(el), refs[el]["energy_per_atom"], name=el, attribute=None)
        for el in elements
        if el in refs and refs[el]["source"] == _DECLARED
    ]
    have = {
        e.composition.elements[0].symbol
        for e in pd_entries + extra
        if len(e.composition.elements) == 1
    }
    missing = [el for el in elements if el not in have]
    if missing:
        return None, missing
    try:
        return PhaseDiagram(pd_entries + extra, [Element(el) for el in elements]), None
    except Exception as exc:  # noqa: BLE001 - Qhull (scipy) and pymatgen raise several kinds
        # one system's failure must not stop the hulls of every other system
        log.warning("hull %s: the phase diagram failed: %s", "-".join(elements), _first(exc))
        raise HullFailed(f"the phase diagram could not be built: {_first(exc)}") from None


class HullFailed(Exception):
    """The phase diagram of one system could not be built (e.g. a Qhull precision error)."""


def _first(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _hull_energies(pd, entries: _Entries, clamp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(formation energy, e_above_hull) per entry, eV/atom.  The lower hull, as a function of
    composition, is convex and piecewise linear, so it is the maximum of its facet planes
    (pymatgen's ``qhull_data`` rows are [fractions of elements 1.., energy per atom]); this
    evaluates all entries at once instead of one decomposition each."""
    els = tuple(el.symbol for el in pd.elements)
    n = len(entries.ids)
    x_all = np.array([_fractions(f, els) for f in entries.formulas], dtype=np.float64)
    x_all = x_all.reshape(n, len(els))
    epa = np.asarray(entries.epa, dtype=np.float64)
    refs = np.array([pd.el_refs[el].energy_per_atom for el in pd.elements], dtype=np.float64)
    form = epa - x_all @ refs
    low = 0.0 if clamp else -np.inf
    if len(els) == 1:
        return form, _snap(np.maximum(epa - refs[0], low))
    x = x_all[:, 1:]
    data = np.asarray(pd.qhull_data)
    best = np.full(n, -np.inf)
    for facet in pd.facets:
        pts = data[list(facet)]
        a = np.hstack([pts[:, :-1], np.ones((len(pts), 1))])
        try:
            coef = np.linalg.solve(a, pts[:, -1])
        except np.linalg.LinAlgError:
            continue
        best = np.maximum(best, x @ coef[:-1] + coef[-1])
    return form, _snap(np.maximum(epa - best, low))


#: Distances to the hull below this (eV/atom) are rounding of the facet planes: stored as 0, so
#: that ``e_above_hull_max=0`` finds every hull entry.
SNAP = 1e-9


def _snap(e: np.ndarray) -> np.ndarray:
    return np.where(np.abs(e) < SNAP, 0.0, e)


def _maximal(systems: Iterable[frozenset[str]]) -> list[frozenset[str]]:
    systems = set(systems)
    covered: set[frozenset[str]] = set()
    for s in systems:
        if len(s) <= 12:
            covered.update(sub for sub in _subsets(s) if sub != s)
    return sorted((s for s in systems if s not in covered), key=lambda s: (-len(s), sorted(s)))


def _affected(stored: dict[str, frozenset[str]], touched: set[str]) -> set[str]:
    """Stored systems that contain (or are) one of the touched systems."""
    out = set()
    touched_sets = {frozenset(t.split("-")) for t in touched}
    for name, els in stored.items():
        if len(els) <= 12:
            if any(sub in touched_sets for sub in _subsets(els)):
                out.add(name)
        elif any(t <= els for t in touched_sets):
            out.add(name)
    return out


def update_hulls(
    conn: Connection, touched: set[tuple[str | None, str]], progress: bool = False
) -> int:
    """Recompute references, formation energies and e_above_hull after records of the given
    (model, chemsys) pairs changed.  Returns the number of phase diagrams built."""
    from tqdm.auto import tqdm

    serialise_hull_updates(conn)
    by_model: dict[str | None, set[str]] = defaultdict(set)
    for model, cs in touched:
        by_model[model].add(cs)
    stored = _stored_systems(conn)
    built = 0
    for model, systems in by_model.items():
        _refresh_references(conn, model, {el for cs in systems for el in cs.split("-")})
        refs = load_references(conn, model)
        with_model = set(
            conn.execute(select(records.c.chemsys).distinct().where(_model_cond(model))).scalars()
        )
        affected = _affected({k: v for k, v in stored.items() if k in with_model}, systems)
        done: set[str] = set()
        updates: list[dict] = []
        cache = _EntryCache(conn, model)
        queue = _maximal(stored[a] for a in affected)
        bar = tqdm(
            total=len(queue),
            disable=not progress,
            unit=" systems",
            desc=f"hulls {model or ''}".strip(),
        )
        while queue:
            top = queue.pop(0)
            bar.update(1)
            subs = [chemsys_of(s) for s in _subsets(top) if chemsys_of(s) in with_model]
            entries = cache.get(subs)
            pd, missing = _try_diagram(entries, refs, top)
            if pd is not None:
                built += 1
                finished = set(subs)
            else:
                finished, new = _without_hull(top, subs, missing, stored, affected - done)
                queue.extend(new)
                bar.total += len(new)
            todo = finished & affected - done
            idx = [i for i, cs in enumerate(entries.chemsys) if cs in todo]
            mine = _take(entries, idx)
            if pd is not None:
                form, ehull = _hull_energies(pd, mine)
            else:
                form = _formation_from_refs(mine, refs)
                ehull = np.full(len(mine.ids), np.nan)
            updates += [
                {"rid": rid, "f": _num(f), "e": _num(e)}
                for rid, f, e in zip(mine.ids, form.tolist(), ehull.tolist())
            ]
            done |= todo
            if len(updates) >= 5000:
                _write(conn, updates)
                updates = []
        bar.close()
        _write(conn, updates)
    return built


def _try_diagram(entries: _Entries, refs: dict, top: frozenset[str]):
    """(PhaseDiagram, None); (None, elements without a reference); (None, None) when the
    diagram failed (logged by :func:`_phase_diagram`)."""
    try:
        return _phase_diagram(entries, refs, sorted(top))
    except HullFailed:
        return None, None


def _without_hull(top, subs, missing, stored, pending) -> tuple[set[str], list]:
    """When the diagram of ``top`` cannot be built: (systems that get no hull energies, smaller
    systems to try on their own).  Elements without a reference: the systems with them get
    none, the largest systems without them their own hulls.  A failed diagram: ``top`` gets
    none, its largest proper subsystems their own hulls (so one bad system spoils no other)."""
    if missing is None:
        name = chemsys_of(top)
        rest = [stored[s] for s in subs if s in pending and s != name]
        return {name}, _maximal(rest)
    bad = set(missing)
    rest = [stored[s] for s in subs if s in pending and not (stored[s] & bad)]
    return {s for s in subs if stored[s] & bad}, [t for t in _maximal(rest) if t != top]


#: Largest number of new records for which :func:`update_after_insert` tries its shortcut.
FAST_PATH_MAX = 1000


def update_after_insert(conn: Connection, new_ids: list[int]) -> bool:
    """Hull upkeep after inserting ``new_ids`` when none of them lowers a hull.

    A new entry strictly above the hull of its own system (built from the records stored before
    it) is also above the hull of every system containing it (more entries only lower a hull),
    and it cannot be an elemental reference: no stored hull or formation energy changes, and
    only the new records need their own values.  Returns False, having written nothing, when
    that does not hold (an entry on or below a hull, a system without references, too many
    records): the caller then runs :func:`update_hulls`."""
    if not new_ids or len(new_ids) > FAST_PATH_MAX:
        return False
    serialise_hull_updates(conn)
    c = records.c
    new = conn.execute(
        select(c.id, c.formula, c.chemsys, c.energy_per_atom, c.model).where(
            c.id.in_(new_ids), c.energy_per_atom.is_not(None)
        )
    ).all()
    fresh = set(new_ids)
    groups: dict[tuple, list] = defaultdict(list)
    for row in new:
        groups[(row.model, row.chemsys)].append(row)
    stored = _stored_systems(conn)
    updates = []
    for (model, cs), rows in groups.items():
        els = frozenset(cs.split("-"))
        subs = [s for s, e in stored.items() if e <= els]
        entries = _load_entries(conn, model, subs)
        old = _take(entries, [i for i, rid in enumerate(entries.ids) if rid not in fresh])
        pd, _ = _try_diagram(old, load_references(conn, model), els)
        if pd is None:
            return False
        mine = _Entries(
            [r.id for r in rows],
            [r.formula for r in rows],
            [r.chemsys for r in rows],
            np.array([r.energy_per_atom for r in rows], dtype=np.float64),
        )
        form, above = _hull_energies(pd, mine, clamp=False)
        if not (above > 1e-9).all():
            return False
        updates += [
            {"rid": rid, "f": _num(f), "e": _num(e)}
            for rid, f, e in zip(mine.ids, form.tolist(), above.tolist())
        ]
    _write(conn, updates)
    return True


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _formation_from_refs(entries: _Entries, refs: dict[str, dict]) -> np.ndarray:
    out = np.full(len(entries.ids), np.nan)
    for i, formula in enumerate(entries.formulas):
        comp = _composition(formula)
        if all(el.symbol in refs for el in comp.elements):
            ref = sum(
                comp.get_atomic_fraction(el) * refs[el.symbol]["energy_per_atom"]
                for el in comp.elements
            )
            out[i] = entries.epa[i] - ref
    return out


def _write(conn: Connection, updates: list[dict]) -> None:
    if updates:
        stmt = (
            update(records)
            .where(records.c.id == bindparam("rid"))
            .values(e_above_hull=bindparam("e"), formation_energy_per_atom=bindparam("f"))
        )
        conn.execute(stmt, updates)


def update_all(conn: Connection, chemsys: Iterable[str] | None = None, progress=False) -> int:
    """Recompute hulls for ``chemsys`` (and systems containing them) or everything, all models."""
    if chemsys is not None:
        wanted = {chemsys_of(parse_elements(c, "chemsys")) for c in chemsys}
    else:
        wanted = None
    pairs = conn.execute(
        select(records.c.model, records.c.chemsys).distinct().where(records.c.energy.is_not(None))
    ).all()
    if wanted is not None:
        wanted_sets = [frozenset(w.split("-")) for w in wanted]
        pairs = [p for p in pairs if any(w <= frozenset(p[1].split("-")) for w in wanted_sets)]
    return update_hulls(conn, {(m, c) for m, c in pairs}, progress=progress)


# --------------------------------------------------------------------------- public objects
@dataclass
class Hull:
    """The convex hull of one chemical system for one model (energies eV/atom)."""

    chemsys: str
    model: str | None
    entries: list[
        dict
    ]  # id, public_id, formula, chemsys, energy_per_atom, formation..., e_above_hull
    references: dict[str, dict]
    phase_diagram: Any = field(repr=False, default=None)

    @property
    def stable(self) -> list[dict]:
        """Entries on the hull (e_above_hull within 1e-8 eV/atom), records only."""
        return [e for e in self.entries if e["stable"]]

    def e_above_hull(self, record_id: int) -> float:
        for e in self.entries:
            if e["id"] == record_id:
                return e["e_above_hull"]
        raise KeyError(f"record {record_id} is not on the {self.chemsys} hull")

    def to_dict(self) -> dict:
        """JSON-ready: chemsys, model, references, entries and the stable entries."""
        return {
            "chemsys": self.chemsys,
            "model": self.model,
            "elements": self.chemsys.split("-"),
            "references": self.references,
            "entries": self.entries,
            "stable": self.stable,
        }


def _pick_model(conn: Connection, systems: list[str], model: str | None, chemsys: str):
    models = sorted(
        conn.execute(
            select(records.c.model)
            .distinct()
            .where(records.c.chemsys.in_(systems), records.c.energy_per_atom.is_not(None))
        ).scalars(),
        key=lambda m: (m is not None, m or ""),
    )
    if model is not None:
        if model not in models:
            raise QueryError(
                f"hull {chemsys}: no energies of model '{model}'; models here: {models or 'none'}"
            )
        return model
    if len(models) > 1:
        raise QueryError(
            f"hull {chemsys}: energies of several models {models}; choose one with model=..."
        )
    if not models:
        raise QueryError(f"hull {chemsys}: no records with energies in this chemical system")
    return models[0]


def _context(conn: Connection, chemsys, model):
    els = parse_elements(chemsys, "chemsys")
    name = chemsys_of(els)
    stored = _stored_systems(conn)
    systems = [s for s, e in stored.items() if e <= frozenset(els)]
    model = _pick_model(conn, systems, model, name)
    refs = load_references(conn, model)
    entries = _load_entries(conn, model, systems)
    try:
        pd, missing = _phase_diagram(entries, refs, els)
    except HullFailed as exc:
        raise QueryError(f"hull {name} (model {model!r}): {exc}") from None
    if pd is None:
        raise QueryError(
            f"hull {name} (model {model!r}): no elemental reference for "
            f"{', '.join(missing)}; store an elemental structure with an "
            "energy or declare references with set_references()"
        )
    return name, model, refs, entries, pd


def build_hull(conn: Connection, chemsys, model: str | None = None) -> Hull:
    """The :class:`Hull` of ``chemsys`` from the stored energies."""
    name, model, refs, entries, pd = _context(conn, chemsys, model)
    form, ehull = _hull_energies(pd, entries)
    rows = [
        {
            "id": rid,
            "public_id": public_id(rid),
            "formula": entries.formulas[i],
            "chemsys": entries.chemsys[i],
            "energy_per_atom": float(entries.epa[i]),
            "formation_energy_per_atom": float(form[i]),
            "e_above_hull": float(ehull[i]),
            "stable": bool(ehull[i] < 1e-8),
        }
        for i, rid in enumerate(entries.ids)
    ]
    return Hull(name, model, rows, refs, pd)


def _composition_of(obj: Any):
    from pymatgen.core import Composition

    if isinstance(obj, Composition):
        return obj
    if isinstance(obj, str):
        try:
            return Composition(obj)
        except Exception:  # noqa: BLE001
            raise QueryError(f"'{obj[:50]}' is not a chemical formula") from None
    s = arrays_from(obj)
    return Composition(" ".join(s.species))


def e_above_hull_of(conn: Connection, obj: Any, energy: float, model: str | None = None):
    """(e_above_hull eV/atom, decomposition [{id, public_id, formula, fraction}]) of a structure or
    composition with total energy ``energy`` (eV) against the stored hull of its system."""
    from pymatgen.analysis.phase_diagram import PDEntry

    comp = _composition_of(obj)
    try:
        energy = float(energy)
    except (TypeError, ValueError):
        raise QueryError(f"energy: expected a number (eV); found {energy!r}") from None
    if not np.isfinite(energy):
        raise QueryError(f"energy: expected a finite number (eV); found {energy}")
    els = sorted(el.symbol for el in comp.elements)
    _, _, _, _, pd = _context(conn, els, model)
    decomp, e = pd.get_decomp_and_e_above_hull(PDEntry(comp, energy), allow_negative=True)
    parts = [
        {
            "id": entry.attribute,
            "public_id": None if entry.attribute is None else public_id(entry.attribute),
            "formula": entry.composition.reduced_formula,
            "fraction": float(frac),
        }
        for entry, frac in sorted(decomp.items(), key=lambda kv: -kv[1])
    ]
    return float(e), parts
