"""``--insert``: write the relaxed structures that pass into the crystal database.

Which rows pass is ``ScreenConfig.insert_when``: "converged" (valid, relaxed and converged, the
default), "metastable", "stable", "unique" (converged and the first of its kind) or "sun".
Each is stored with its relaxed energy, the screening's model name and submitter, the source
``screen:<id>/<input source>`` and the tag ``screen:<id>``.  The database identifies a record
by its structure, energy, model and source, so a re-run (a resumed screening) stores nothing
twice and finds the same record ids.  Left-handed relaxed cells are stored in the equivalent
right-handed basis (cell and fractional coordinates negated: the same atoms), which the
database requires.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import ScreenConfig


def passes(row: dict, when: str) -> bool:
    """Whether a results row is inserted under ``insert_when`` = ``when``."""
    if row["status"] != "ok" or not row.get("converged"):
        return False
    if when == "converged":
        return True
    if when == "unique":
        return bool(row.get("unique"))
    return row.get(when) is True


def _item(atoms, row: dict, model: str, submitter: str | None, screen_id: str) -> dict:
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, dtype=np.float64).T).T
    if np.linalg.det(cell) < 0:
        cell, frac = -cell, -frac
    return {
        "lattice": cell,
        "species": atoms.get_chemical_symbols(),
        "frac_coords": frac,
        "energy": row["energy"],
        "model": model,
        "submitter": submitter,
        "source": f"screen:{screen_id}/{row['source']}"[:1024],
        "tags": [f"screen:{screen_id}"],
    }


def insert_passing(
    db: Any,
    rows: list[dict],
    relaxed: dict[int, Any],
    config: ScreenConfig,
    model: str,
    submitter: str | None,
    screen_id: str,
) -> tuple[dict[int, int], list[str]]:
    """Insert the passing rows; returns (index -> record id, notes on rejected inserts)."""
    from sqlalchemy import select

    from ..db.engine import read_conn
    from ..db.errors import RecordError
    from ..db.records import make_row
    from ..db.schema import records

    chosen = [r for r in rows if passes(r, config.insert_when) and r["index"] in relaxed]
    items = [_item(relaxed[r["index"]], r, model, submitter, screen_id) for r in chosen]
    notes: list[str] = []
    if not items:
        return {}, notes
    report = db.import_records(items, batch_size=1000)
    if report.rejected:
        notes.append(
            f"insert: {len(report.rejected)} structure(s) refused by the database, e.g. "
            f"{report.rejected[0].reason}"
        )
    hashes: dict[str, int] = {}
    for r, item in zip(chosen, items):
        try:
            row = make_row(
                item, item["energy"], item["model"], item["source"], item["submitter"], None
            )
        except RecordError:
            continue
        hashes[row["content_hash"]] = r["index"]
    ids: dict[int, int] = {}
    keys = list(hashes)
    with read_conn(db.engine) as conn:
        for k in range(0, len(keys), 500):
            part = keys[k : k + 500]
            stmt = select(records.c.id, records.c.content_hash).where(
                records.c.content_hash.in_(part)
            )
            for rid, h in conn.execute(stmt).all():
                ids[hashes[h]] = int(rid)
    notes.append(
        f"insert: {len(ids)} structure(s) in the database with tag screen:{screen_id} "
        f"({report.added} new, insert_when={config.insert_when})"
    )
    return ids, notes
