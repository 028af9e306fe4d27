"""Crystal-structure database: store, query, convex hulls, matching, export.

>>> from lamkit.db import CrystalDB
>>> db = CrystalDB()                    # SQLite file lamkit.db; or a URL / path
>>> db.init()

See docs/db.md.  Modules: ``schema`` (tables), ``records`` (structure <-> row), ``readers`` and
``ingest`` (import), ``query`` (filters, keyset pages), ``hull``, ``match``, ``export``,
``compat`` (the public client's API shape), ``cli`` (``lam db``), ``api`` (:class:`CrystalDB`).
"""

import importlib

# Names are imported on first use, so that ``lam`` (which only needs lamkit.db.cli to build its
# parser) does not pay for SQLAlchemy, pymatgen and ASE at start-up.
_EXPORTS = {
    "CrystalDB": "api",
    "parse_id": "api",
    "DBError": "errors",
    "NotFoundError": "errors",
    "QueryError": "errors",
    "RecordError": "errors",
    "ImportReport": "ingest",
    "Rejection": "ingest",
    "ORDER_FIELDS": "query",
    "Page": "query",
    "SYMPREC": "records",
    "Record": "records",
    "public_id": "records",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
