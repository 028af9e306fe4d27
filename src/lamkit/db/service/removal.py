"""Deleting a record for ``DELETE /api/v1/structures/{id}``.

``CrystalDB.delete`` does it (one write transaction; the elemental references, formation
energies and energies above hull of the record's system and every system containing it are
recomputed).  The fallback below serves a store object without ``delete``.
"""

from __future__ import annotations

from typing import Any


def delete_record(db: Any, record_id: int) -> bool:
    """Remove record ``record_id``; False if there was none."""
    if hasattr(db, "delete"):
        return bool(db.delete(record_id))
    from sqlalchemy import delete, select

    from ..engine import write_tx
    from ..hull import update_hulls
    from ..schema import records

    with write_tx(db.engine) as conn:
        row = conn.execute(
            select(records.c.model, records.c.chemsys, records.c.energy).where(
                records.c.id == record_id
            )
        ).first()
        if row is None:
            return False
        conn.execute(delete(records).where(records.c.id == record_id))
        if row.energy is not None:
            update_hulls(conn, {(row.model, row.chemsys)})
    return True
