"""The public client's API shape (``lam_optimize``'s ``CrystalStructure``) over a CrystalDB.

Scripts written for the public client keep working::

    from lamkit.db.compat import CrystalStructure, use_database
    use_database("crystals.db")                 # or set LAMKIT_DB_URL
    data = CrystalStructure.query_by_offset(formula="NaCl", offset=0, limit=10)
    data["items"], data["nextStartId"]          # CrystalStructure objects, 0 on the last page
    everything = CrystalStructure.query(formula="NaCl", min_energy=-30)

Mapping: ``formula`` -> reduced formula (any equivalent formula); ``min_energy`` /
``max_energy`` -> total energy (eV); ``min/max_submission_time`` -> submission time;
``offset`` -> a start id: records with id > offset, ascending; ``nextStartId`` -> the last id
of the page when more records follow, else 0; ``items`` is None when nothing matches, like the
service's answer.  :func:`record_json` gives a record in the public API's JSON form.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

from sqlalchemy import select

from .api import CrystalDB
from .query import between, conditions
from .records import Record, record_from_row
from .schema import records

MAX_LIMIT = 1000
_default: CrystalDB | None = None


def use_database(db: CrystalDB | str | None) -> CrystalDB:
    """Make ``db`` (a CrystalDB or a URL/path) the database of the classmethods below."""
    global _default
    _default = db if isinstance(db, CrystalDB) else CrystalDB(db)
    return _default


def _db() -> CrystalDB:
    if _default is None:
        return use_database(os.environ.get("LAMKIT_DB_URL"))
    return _default


def record_json(rec: Record) -> dict:
    """A record as the public API sends it: id, formula, structure (pymatgen dict as a JSON
    string), energy (total, eV) and submissionTime (ISO 8601)."""
    return {
        "id": rec.id,
        "formula": rec.formula,
        "structure": json.dumps(rec.structure.as_dict()),
        "energy": rec.energy,
        "submissionTime": rec.submitted.isoformat(),
    }


class CrystalStructure:
    """A structure as the public client returns it."""

    formula: str
    structure: Any  # pymatgen Structure
    energy: float
    submission_time: datetime

    def __init__(self, formula: str, structure: Any, energy: float, submission_time: datetime):
        self.formula = formula
        self.structure = structure
        self.energy = energy
        self.submission_time = submission_time

    def __repr__(self) -> str:
        return f"CrystalStructure({self.formula!r}, energy={self.energy})"

    @classmethod
    def from_record(cls, rec: Record) -> CrystalStructure:
        return cls(rec.formula, rec.structure, rec.energy, rec.submitted)

    @classmethod
    def query_by_offset(
        cls,
        formula: str | None = None,
        min_energy: float | None = None,
        max_energy: float | None = None,
        min_submission_time: datetime | None = None,
        max_submission_time: datetime | None = None,
        offset: int = 0,
        limit: int = 10,
        *,
        db: CrystalDB | None = None,
    ) -> dict:
        """{"items": [CrystalStructure] or None, "nextStartId": int} (see the module doc)."""
        return query_by_offset(
            db or _db(),
            formula,
            min_energy,
            max_energy,
            min_submission_time,
            max_submission_time,
            offset,
            limit,
            cls=cls,
        )

    @classmethod
    def query(
        cls,
        formula: str | None = None,
        min_energy: float | None = None,
        max_energy: float | None = None,
        min_submission_time: datetime | None = None,
        max_submission_time: datetime | None = None,
        *,
        db: CrystalDB | None = None,
    ) -> list[CrystalStructure]:
        """Every match, fetched page after page like the public client does."""
        out: list[CrystalStructure] = []
        offset = 0
        while True:
            data = cls.query_by_offset(
                formula,
                min_energy,
                max_energy,
                min_submission_time,
                max_submission_time,
                offset=offset,
                limit=100,
                db=db,
            )
            if data["items"] is None:
                break
            out += data["items"]
            if data["nextStartId"] == 0:
                break
            offset = data["nextStartId"]
        return out


def query_by_offset(
    db: CrystalDB,
    formula: str | None = None,
    min_energy: float | None = None,
    max_energy: float | None = None,
    min_submission_time: datetime | None = None,
    max_submission_time: datetime | None = None,
    offset: int = 0,
    limit: int = 10,
    cls: type = CrystalStructure,
    raw: bool = False,
) -> dict:
    """The public ``query_by_offset`` against ``db``; ``raw=True`` gives the items as the
    service's JSON (:func:`record_json`) instead of CrystalStructure objects."""
    from .errors import QueryError
    from .query import parse_range

    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit: expected an integer 1..{MAX_LIMIT}; found {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise QueryError(f"offset: expected a start id >= 0; found {offset!r}")
    submitted = None
    if min_submission_time is not None or max_submission_time is not None:
        submitted = (min_submission_time, max_submission_time)
    with db._read() as conn:
        conds = conditions(conn, formula=formula, submitted=submitted)
        if min_energy is not None or max_energy is not None:
            conds += between(records.c.energy, *parse_range((min_energy, max_energy), "energy"))
        rows = conn.execute(
            select(records)
            .where(*conds, records.c.id > offset)
            .order_by(records.c.id)
            .limit(limit + 1)
        ).all()
    recs = [record_from_row(r) for r in rows[:limit]]
    if not recs:
        return {"items": None, "nextStartId": 0}
    items = [record_json(r) if raw else cls.from_record(r) for r in recs]
    return {"items": items, "nextStartId": recs[-1].id if len(rows) > limit else 0}
