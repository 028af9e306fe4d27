"""Batched, transactional, idempotent import.

Items (see :mod:`lamkit.db.readers`) become rows (:func:`records.make_row`), ``batch_size`` rows
go in one transaction as one multi-row ``INSERT ... ON CONFLICT (content_hash) DO NOTHING``: a
killed import keeps every committed batch, and a re-run skips what is stored (same structure,
energy, model and source).  Invalid items are rejected with (source, index, reason).  Hulls of
the touched chemical systems (and the systems containing them) are recomputed once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from .engine import write_tx
from .errors import RecordError
from .handle import Database
from .readers import Item, iter_files, iter_items
from .records import element_mask, make_row
from .rowpool import make_rows
from .schema import chemsystems, records

__all__ = [
    "Dropped",
    "ImportReport",
    "Rejection",
    "import_items",
    "insert_rows",
    "iter_files",
    "iter_items",
]


@dataclass
class Rejection:
    """An item that was not imported: where it came from and why."""

    source: str
    index: int  # -1: the whole file
    reason: str

    def __str__(self) -> str:
        where = self.source if self.index < 0 else f"{self.source} [{self.index}]"
        return f"{where}: {self.reason}"


@dataclass
class Dropped:
    """An item that ``dedupe`` left out: where it came from and the record (``lam-<id>``) or
    earlier item ("<source> [<index>]") it duplicates."""

    source: str
    index: int
    duplicate_of: str

    def __str__(self) -> str:
        return f"{self.source} [{self.index}]: duplicate of {self.duplicate_of}"


@dataclass
class ImportReport:
    """What an import did: ``added`` new records, ``duplicates`` already stored (or matched,
    with ``dedupe``), ``rejected`` items with reasons, ``seconds`` of wall time."""

    added: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    seen: int = 0
    seconds: float = 0.0
    hull_diagrams: int = 0
    added_ids: list[int] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)  # with dedupe: what and why
    unused_energies: list[str] = field(default_factory=list)  # energy-file names unmatched

    @property
    def rate(self) -> float:
        """Items processed per second."""
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"{self.added} added, {self.duplicates} duplicates, {len(self.rejected)} rejected "
            f"of {self.seen} in {self.seconds:.1f} s ({self.rate:.0f}/s)"
        )
        lines = [text] + [f"  rejected {r}" for r in self.rejected[:20]]
        if len(self.rejected) > 20:
            lines.append(f"  ... and {len(self.rejected) - 20} more")
        lines += [f"  dropped {d}" for d in self.dropped[:20]]
        if len(self.dropped) > 20:
            lines.append(f"  ... and {len(self.dropped) - 20} more dropped")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "duplicates": self.duplicates,
            "rejected": [
                {"source": r.source, "index": r.index, "reason": r.reason} for r in self.rejected
            ],
            "seen": self.seen,
            "seconds": self.seconds,
            "dropped": [
                {"source": d.source, "index": d.index, "duplicate_of": d.duplicate_of}
                for d in self.dropped
            ],
        }


def _insert(conn: Connection, table):
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    return mod.insert(table)


#: Columns written by an import (all but the id), in the order of the bulk paths below.
_COLUMNS = [c.name for c in records.columns if c.name != "id"]


def insert_rows(conn: Connection, rows: list[dict]) -> list[int]:
    """Insert rows made by :func:`records.make_row` (skipping stored content hashes) and their
    chemical systems; returns the ids of the rows actually inserted, in input order.

    Bulk paths: one ``executemany`` of a plain ``INSERT ... ON CONFLICT DO NOTHING`` on SQLite
    (under the write lock the new ids are those above the last id handed out before), and
    ``COPY`` into a temporary table then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING
    RETURNING`` on PostgreSQL."""
    if not rows:
        return []
    systems = {}
    for r in rows:
        if r["chemsys"] not in systems:
            lo, hi = element_mask(r["elements"].split())
            systems[r["chemsys"]] = {
                "chemsys": r["chemsys"],
                "nelements": r["nelements"],
                "mask_lo": lo,
                "mask_hi": hi,
            }
    conn.execute(_insert(conn, chemsystems).on_conflict_do_nothing(), list(systems.values()))
    if conn.dialect.name == "sqlite":
        return _insert_sqlite(conn, rows)
    if conn.dialect.name == "postgresql":
        return _insert_postgresql(conn, rows)
    stmt = (  # pragma: no cover - only SQLite and PostgreSQL are accepted by make_engine
        _insert(conn, records)
        .on_conflict_do_nothing(index_elements=["content_hash"])
        .returning(records.c.id)
    )
    return [int(i) for i in conn.execute(stmt, rows).scalars().all()]


def _sqlite_time(t) -> str:
    # the text form SQLAlchemy's SQLite DateTime type stores and parses
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def _insert_sqlite(conn: Connection, rows: list[dict]) -> list[int]:
    names = ", ".join(_COLUMNS)
    marks = ", ".join("?" * len(_COLUMNS))
    sql = f"INSERT INTO records ({names}) VALUES ({marks}) ON CONFLICT (content_hash) DO NOTHING"
    before = _sqlite_last_id(conn)
    data = []
    for r in rows:
        values = [r[c] for c in _COLUMNS]
        values[_COLUMNS.index("submitted")] = _sqlite_time(r["submitted"])
        data.append(tuple(values))
    conn.exec_driver_sql(sql, data)
    # new ids are above every id handed out before (skipped duplicates use up ids too, so
    # they need not be contiguous); the write lock keeps other writers out meanwhile
    new = conn.exec_driver_sql("SELECT id FROM records WHERE id > ? ORDER BY id", (before,))
    return [int(i) for i in new.scalars()]


def _sqlite_last_id(conn: Connection) -> int:
    """The largest id handed out so far: AUTOINCREMENT's counter (it stays when the record
    with the largest id is deleted), or the largest id of a table without one."""
    top = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM records").scalar_one()
    seq = conn.exec_driver_sql(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'records'"
    ).scalar_one()
    return max(int(top), int(seq))


_PG_STAGE = "lamkit_import_stage"


def _insert_postgresql(conn: Connection, rows: list[dict]) -> list[int]:
    names = ", ".join(_COLUMNS)
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_PG_STAGE} ON COMMIT DROP AS "
            f"SELECT 0::bigint AS ord, {names} FROM records WITH NO DATA"
        )
        with cur.copy(f"COPY {_PG_STAGE} (ord, {names}) FROM STDIN") as copy:
            for i, r in enumerate(rows):
                copy.write_row((i, *(r[c] for c in _COLUMNS)))
        cur.execute(
            f"INSERT INTO records ({names}) SELECT {names} FROM {_PG_STAGE} ORDER BY ord "
            "ON CONFLICT (content_hash) DO NOTHING RETURNING id"
        )
        ids = sorted(int(r[0]) for r in cur.fetchall())
        cur.execute(f"TRUNCATE {_PG_STAGE}")
    finally:
        cur.close()
    return ids


def _row_of(item: Item, model, submitter, source, symmetry: bool = True) -> dict:
    if item.error is not None:
        raise RecordError(item.error)
    meta = item.meta
    src = meta.get("source", source if source is not None else _source_name(item.source))
    return make_row(
        item.obj,
        energy=item.energy,
        model=meta.get("model", model),
        source=str(src) if src is not None else None,
        submitter=meta.get("submitter", submitter),
        submitted=meta.get("submitted"),
        tags=meta.get("tags"),
        labels=item.labels,
        symmetry=symmetry,
    )


def _source_name(source: str) -> str | None:
    """The default provenance of a file's items: the file name without its folder (so a moved
    folder re-imports as duplicates); None for Python objects."""
    if source == "records":
        return None
    return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _dedupe(conn: Connection, rows: list[dict], places: list, report: ImportReport) -> list:
    """The rows that are not duplicates (see :func:`lamkit.db.match.dedupe_rows`); the others
    are counted as duplicates and listed in ``report.dropped``."""
    from .match import dedupe_rows

    kept, dropped = dedupe_rows(conn, rows)
    for pos, twin in dropped.items():
        if twin.startswith("#"):
            src, index = places[int(twin[1:])]
            twin = f"{src} [{index}]"
        report.dropped.append(Dropped(*places[pos], twin))
    report.duplicates += len(dropped)
    return [rows[i] for i in kept]


def import_items(
    db: Database,
    items: Iterable[Item] | Iterator[Item],
    *,
    submitter: str | None = None,
    model: str | None = None,
    source: str | None = None,
    batch_size: int = 1000,
    progress: bool = False,
    dedupe: bool = False,
    update_hull: bool = True,
    workers: int = 1,
    defer_symmetry: bool = False,
) -> ImportReport:
    """Import items in batches of ``batch_size`` (one transaction each); see the module doc.
    ``workers`` > 1: rows are made in that many processes (:mod:`lamkit.db.rowpool`).
    ``defer_symmetry``: store the space groups as pending, for :mod:`lamkit.db.symindex`
    (``lam db index``) to fill in; several times faster for distinct structures."""
    from tqdm.auto import tqdm

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; found {batch_size!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer; found {workers!r}")
    if defer_symmetry and dedupe:
        raise ValueError(
            "dedupe compares space groups, so it cannot defer them; import with dedupe or "
            "with defer_symmetry, not both"
        )
    report = ImportReport()
    touched: set[tuple[str | None, str]] = set()
    start = time.perf_counter()
    batch: list[dict] = []
    where: list[tuple[str, int]] = []  # (source, index) of each row of the batch
    bar = tqdm(disable=not progress, unit=" structures", desc="import", mininterval=0.5)

    def flush() -> None:
        if not batch:
            return
        rows, places = list(batch), list(where)
        batch.clear()
        where.clear()
        with write_tx(db.engine) as conn:
            if dedupe:
                rows = _dedupe(conn, rows, places, report)
            ids = insert_rows(conn, rows)
        report.added += len(ids)
        report.added_ids.extend(ids)
        report.duplicates += len(rows) - len(ids)
        touched.update((r["model"], r["chemsys"]) for r in rows if r["energy"] is not None)
        bar.set_postfix(added=report.added, rejected=len(report.rejected), refresh=False)

    make = partial(
        _row_of, model=model, submitter=submitter, source=source, symmetry=not defer_symmetry
    )
    try:
        for item, row, reason in make_rows(make, items, workers):
            report.seen += 1
            bar.update(1)
            reason = item.error if item.error is not None else reason
            if reason is not None:
                report.rejected.append(Rejection(item.source, item.index, reason))
                continue
            batch.append(row)
            where.append((item.source, item.index))
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        bar.close()
    if update_hull and touched:
        from .hull import update_after_insert, update_hulls

        with write_tx(db.engine) as conn:
            # new records above every hull only need their own values; a re-run (duplicates
            # skipped) may follow a killed import whose records have none, so it recomputes
            if report.duplicates or not update_after_insert(conn, report.added_ids):
                report.hull_diagrams = update_hulls(conn, touched, progress=progress)
    report.seconds = time.perf_counter() - start
    return report
