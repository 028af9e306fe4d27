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
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.schema import CreateIndex, CreateTable

from .engine import write_tx
from .schema import SCHEMA_VERSION, meta, metadata, records

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
        if conn.dialect.name == "sqlite" and not _sqlite_autoincrement(conn):
            _rebuild_sqlite_records(conn)
        have = conn.execute(select(meta.c.key)).scalars().all()
        if "schema_version" not in have:
            conn.execute(meta.insert(), [{"key": "schema_version", "value": SCHEMA_VERSION}])


def _is_ready(conn: Connection) -> bool:
    names = set(inspect(conn).get_table_names())
    if not set(metadata.tables) <= names:
        return False
    if conn.dialect.name == "sqlite" and not _sqlite_autoincrement(conn):
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
