"""Creating the tables, safely under concurrency, and bringing older database files up to date.

``ensure_schema(engine)`` is what ``CrystalDB.init()`` runs.  It first looks, without any lock,
whether everything is in place (the common case: nothing to do, no write lock taken).  Otherwise
it creates what is missing inside one write transaction: ``BEGIN IMMEDIATE`` on SQLite (a second
process waits for the first instead of failing with "database is locked" in CREATE TABLE) and a
transaction-scoped advisory lock on PostgreSQL (DDL is transactional there).  Inside the lock it
looks again, so the loser of a race finds the tables made and does nothing.

Record ids are never reused.  PostgreSQL's sequences never hand out a number twice.  SQLite
reuses the largest id after that record is deleted unless the table is declared AUTOINCREMENT,
which new files are.  A file made before (schema version 1) is rebuilt once, in one write
transaction: rows are copied with their ids into an AUTOINCREMENT table, the old table is
dropped and the indexes are made again (about a minute per million records; an interrupted
rebuild leaves the file as it was).  Ids deleted before the rebuild may still be handed out once
more, as they were; from then on none is.

Schema version 2 added the label columns (``forces``, ``stress``, ``magmoms``) and the lattice
parameters (``a`` .. ``gamma``).  An older file gets them with ``ALTER TABLE ... ADD COLUMN``
(labels NULL) and the lattice parameters are computed from each stored lattice, in the same
write transaction.
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, inspect, select, update
from sqlalchemy.schema import CreateIndex, CreateTable

from .engine import write_tx
from .labels import LATTICE_PARAMS, lattice_parameters
from .schema import ADDED_COLUMNS, SCHEMA_VERSION, meta, metadata, records

log = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock taken while tables are created.
_INIT_LOCK = 0x1A3C_DB00


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and indexes and upgrade an old SQLite ``records`` table (see the
    module doc); idempotent and safe when several processes run it at once."""
    with engine.connect() as conn:
        ready = _is_ready(conn)
    if ready:
        return
    with write_tx(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_INIT_LOCK})")
        metadata.create_all(conn, checkfirst=True)
        _add_columns(conn)
        if conn.dialect.name == "sqlite" and not _sqlite_autoincrement(conn):
            _rebuild_sqlite_records(conn)
        _create_missing_indexes(conn)
        have = conn.execute(select(meta.c.key)).scalars().all()
        if "schema_version" not in have:
            conn.execute(meta.insert(), [{"key": "schema_version", "value": SCHEMA_VERSION}])
        else:
            conn.execute(
                update(meta).where(meta.c.key == "schema_version").values(value=SCHEMA_VERSION)
            )


def _is_ready(conn: Connection) -> bool:
    names = set(inspect(conn).get_table_names())
    if not set(metadata.tables) <= names:
        return False
    if conn.dialect.name == "sqlite" and not _sqlite_autoincrement(conn):
        return False
    if not set(ADDED_COLUMNS) <= {c["name"] for c in inspect(conn).get_columns("records")}:
        return False
    index_names = {ix["name"] for ix in inspect(conn).get_indexes("records")}
    if not {ix.name for ix in records.indexes} <= index_names:
        return False
    return (
        conn.execute(
            select(meta.c.value).where(meta.c.key == "schema_version")
        ).scalar_one_or_none()
        is not None
    )


def _sqlite_autoincrement(conn: Connection) -> bool:
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).scalar_one_or_none()
    return sql is None or "AUTOINCREMENT" in sql.upper()


def _rebuild_sqlite_records(conn: Connection) -> None:
    """Copy ``records`` into an AUTOINCREMENT table of the same name, ids kept."""
    n = conn.exec_driver_sql("SELECT count(*) FROM records").scalar_one()
    log.warning("upgrading the SQLite records table (%d rows) so ids are never reused", n)
    ddl = str(CreateTable(records).compile(dialect=conn.dialect)).strip()
    head = "CREATE TABLE records ("
    assert ddl.startswith(head), ddl[:80]
    conn.exec_driver_sql("DROP TABLE IF EXISTS records_upgrade")
    conn.exec_driver_sql("CREATE TABLE records_upgrade (" + ddl[len(head) :])
    names = ", ".join(c.name for c in records.columns)
    conn.exec_driver_sql(
        f"INSERT INTO records_upgrade ({names}) SELECT {names} FROM records ORDER BY id"
    )
    conn.exec_driver_sql("DROP TABLE records")  # its indexes go with it
    conn.exec_driver_sql("ALTER TABLE records_upgrade RENAME TO records")
    for index in records.indexes:
        conn.execute(CreateIndex(index))


def _add_columns(conn: Connection) -> None:
    """Add the columns of schema version 2 to an older ``records`` table and fill in the
    lattice parameters of the stored records."""
    have = {c["name"] for c in inspect(conn).get_columns("records")}
    missing = [name for name in ADDED_COLUMNS if name not in have]
    if not missing:
        return
    log.warning("adding columns %s to the records table", ", ".join(missing))
    for name in missing:
        kind = records.c[name].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE records ADD COLUMN {name} {kind}")
    if not set(LATTICE_PARAMS) & set(missing):
        return
    stmt = (
        update(records)
        .where(records.c.id == bindparam("rid"))
        .values({p: bindparam("p_" + p) for p in LATTICE_PARAMS})
    )
    last = -1
    while True:  # keyset batches keep memory flat on large files
        rows = conn.execute(
            select(records.c.id, records.c.lattice)
            .where(records.c.id > last)
            .order_by(records.c.id)
            .limit(5000)
        ).all()
        if not rows:
            return
        params = []
        for rid, blob in rows:
            lat = np.frombuffer(blob, dtype="<f8").reshape(3, 3)
            values = lattice_parameters(lat)
            params.append({"rid": rid, **{"p_" + k: v for k, v in values.items()}})
        conn.execute(stmt, params)
        last = rows[-1][0]


def _create_missing_indexes(conn: Connection) -> None:
    have = {ix["name"] for ix in inspect(conn).get_indexes("records")}
    for index in records.indexes:
        if index.name not in have:
            conn.execute(CreateIndex(index))
