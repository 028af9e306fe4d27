"""Energies that hulls are built from: per chemical system and model, loaded in one query per
500 systems and cached for one hull update.

Only energies per atom inside the accepted window (:data:`lamkit.db.records.ENERGY_PER_ATOM_MIN`
.. :data:`~lamkit.db.records.ENERGY_PER_ATOM_MAX`) enter a hull.  New records outside it are
refused on import; one stored before that check existed (or written by hand) is left out of
every hull with a logged warning, so it can never break the hull of its system.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sqlalchemy import Connection, and_, select

from .records import ENERGY_PER_ATOM_MAX, ENERGY_PER_ATOM_MIN
from .schema import records

log = logging.getLogger(__name__)


def _model_key(model: str | None) -> str:
    return model or ""


def _model_cond(model: str | None):
    return records.c.model.is_(None) if model is None else records.c.model == model


def sane_energy():
    """SQL condition: an energy per atom inside the accepted window (NULL, NaN and infinities
    are outside it on both backends)."""
    epa = records.c.energy_per_atom
    return and_(epa >= ENERGY_PER_ATOM_MIN, epa <= ENERGY_PER_ATOM_MAX)


@dataclass
class _Entries:
    ids: list[int]
    formulas: list[str]
    chemsys: list[str]
    epa: np.ndarray  # eV/atom


def _load_entries(conn: Connection, model: str | None, systems: list[str]) -> _Entries:
    rows = conn.execute(
        select(records.c.id, records.c.formula, records.c.chemsys, records.c.energy_per_atom)
        .where(
            _model_cond(model),
            records.c.chemsys.in_(systems),
            records.c.energy_per_atom.is_not(None),
        )
        .order_by(records.c.id)
    ).all()
    bad = [r for r in rows if not ENERGY_PER_ATOM_MIN <= r[3] <= ENERGY_PER_ATOM_MAX]
    if bad:
        _warn_outside(bad, model)
        rows = [r for r in rows if ENERGY_PER_ATOM_MIN <= r[3] <= ENERGY_PER_ATOM_MAX]
    return _Entries(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        np.array([r[3] for r in rows], dtype=np.float64),
    )


def _warn_outside(rows, model: str | None) -> None:
    """Log the stored records left out of a hull (once per load: once per hull update)."""
    shown = ", ".join(f"record {r[0]} ({r[1]}: {r[3]!r} eV/atom)" for r in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    log.warning(
        "%s%s of model %r: energy per atom outside the accepted window %g..%g eV/atom; "
        "left out of every hull",
        shown,
        more,
        model,
        ENERGY_PER_ATOM_MIN,
        ENERGY_PER_ATOM_MAX,
    )


def _concat(parts: list[_Entries]) -> _Entries:
    return _Entries(
        [i for p in parts for i in p.ids],
        [f for p in parts for f in p.formulas],
        [c for p in parts for c in p.chemsys],
        np.concatenate([p.epa for p in parts]) if parts else np.zeros(0),
    )


def _take(entries: _Entries, idx: list[int]) -> _Entries:
    return _Entries(
        [entries.ids[i] for i in idx],
        [entries.formulas[i] for i in idx],
        [entries.chemsys[i] for i in idx],
        entries.epa[idx] if idx else np.zeros(0),
    )


class _EntryCache:
    """Entries per chemical system of one model, loaded once per hull update (an elemental or
    binary system is a subsystem of many ternaries)."""

    def __init__(self, conn: Connection, model: str | None):
        self.conn, self.model, self.systems = conn, model, {}

    def get(self, systems: list[str]) -> _Entries:
        missing = [s for s in systems if s not in self.systems]
        for k in range(0, len(missing), 500):
            part = missing[k : k + 500]
            loaded = _load_entries(self.conn, self.model, part)
            rows: dict[str, list[int]] = {s: [] for s in part}
            for i, cs in enumerate(loaded.chemsys):
                rows[cs].append(i)
            for cs, idx in rows.items():
                self.systems[cs] = _take(loaded, idx)
        return _concat([self.systems[s] for s in systems])


@lru_cache(maxsize=65536)
def _composition(formula: str):
    from pymatgen.core import Composition

    return Composition(formula)


@lru_cache(maxsize=65536)
def _fractions(formula: str, elements: tuple[str, ...]) -> tuple[float, ...]:
    comp = _composition(formula)
    return tuple(comp.get_atomic_fraction(el) for el in elements)
