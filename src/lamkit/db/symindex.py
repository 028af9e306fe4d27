"""Deferred symmetry: space groups of records imported with ``defer_symmetry``.

spglib's symmetry search is nearly all of an import's CPU time for distinct structures (about
1-20 ms a structure against 0.5 ms for everything else), so a bulk import can leave it out:
such records are stored with ``spacegroup_number`` NULL and ``spacegroup_symbol`` "pending"
(:data:`records.SYMMETRY_PENDING`) and :func:`index_symmetry` (``lam db index``) fills both in
later, with the same function and tolerance as an ordinary import.  Until then every query
works, but a space-group filter does not match the pending records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .engine import write_tx
from .handle import Database
from .records import SYMMETRY_PENDING, spacegroup
from .rowpool import make_rows
from .schema import records

__all__ = ["IndexReport", "count_pending", "index_symmetry"]

_PENDING = records.c.spacegroup_number.is_(None) & (
    records.c.spacegroup_symbol == SYMMETRY_PENDING
)


@dataclass
class IndexReport:
    """What :func:`index_symmetry` did: ``indexed`` records in ``seconds`` of wall time."""

    indexed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return f"{self.indexed} space groups in {self.seconds:.1f} s ({self.rate:.0f}/s)"


def count_pending(db: Database) -> int:
    """Records whose space group is still pending."""
    from sqlalchemy import func, select

    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(_PENDING)).scalar_one())


def symmetry_of(row: tuple) -> tuple[int, int | None, str | None]:
    """(id, space-group number, symbol) of a stored ``(id, lattice, frac_coords, species)``."""
    rid, lattice, frac, species = row
    lat = np.frombuffer(lattice, dtype="<f8").reshape(3, 3).astype(np.float64)
    pos = np.frombuffer(frac, dtype="<f8").reshape(-1, 3).astype(np.float64)
    return (int(rid), *spacegroup(lat, pos, species.split()))


def _pending_rows(db: Database, batch_size: int) -> Iterator[tuple]:
    """Pending records in id order, read ``batch_size`` at a time (keyset paging)."""
    from sqlalchemy import select

    c = records.c
    last = 0
    while True:
        stmt = (
            select(c.id, c.lattice, c.frac_coords, c.species)
            .where(_PENDING & (c.id > last))
            .order_by(c.id)
            .limit(batch_size)
        )
        with db.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(stmt)]
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def index_symmetry(
    db: Database, *, workers: int = 1, batch_size: int = 1000, progress: bool = False
) -> IndexReport:
    """Compute the space group of every pending record (``workers`` processes) and store it,
    ``batch_size`` records per transaction.  A record indexed meanwhile by another process is
    left as that process wrote it; an interrupted run keeps its committed batches."""
    from sqlalchemy import bindparam, update
    from tqdm.auto import tqdm

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer; found {workers!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; found {batch_size!r}")
    report = IndexReport()
    start = time.perf_counter()
    stmt = (
        update(records)
        .where(_PENDING & (records.c.id == bindparam("rid")))
        .values(
            spacegroup_number=bindparam("number"), spacegroup_symbol=bindparam("symbol")
        )
    )
    done: list[dict] = []
    bar = tqdm(disable=not progress, unit=" records", desc="index", mininterval=0.5)

    def flush() -> None:
        if done:
            with write_tx(db.engine) as conn:
                conn.execute(stmt, done)
            report.indexed += len(done)
            done.clear()

    try:
        for _row, result, reason in make_rows(symmetry_of, _pending_rows(db, batch_size), workers):
            if reason is not None:  # spglib errors are caught in spacegroup(); cannot happen
                raise RuntimeError(f"symmetry of a stored record failed: {reason}")
            rid, number, symbol = result
            done.append({"rid": rid, "number": number, "symbol": symbol})
            bar.update(1)
            if len(done) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report
