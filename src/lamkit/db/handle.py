"""What the helper modules of :class:`~lamkit.db.api.CrystalDB` need of it.

``CrystalDB`` hands imports (:mod:`.ingest`), symmetry indexing (:mod:`.symindex`), structure
matching (:mod:`.match`) and exports (:mod:`.export`) to helper modules that take the database
as their first argument. They annotate it with :class:`Database`, the little of ``CrystalDB``
they use, so that they need not import :mod:`.api`, which imports them: the dependency runs one
way, api -> helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: importing this module stays free of sqlalchemy
    from sqlalchemy import Connection, Engine


class Database(Protocol):
    """A crystal database as its helper modules see it (``CrystalDB`` is one)."""

    engine: Engine

    def iter_query(
        self, *, order_by: str = "id", page_size: int = 500, as_: str = "record", **filters: Any
    ) -> Iterator[Any]:
        """Every match of ``filters``, page by page."""
        ...

    def _read(self) -> AbstractContextManager[Connection]:
        """A read connection (a missing schema becomes a DBError)."""
        ...
