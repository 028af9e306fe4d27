"""Errors of the crystal database; messages say what was expected, what was found and where."""

from __future__ import annotations

from ..errors import LamkitError


class DBError(LamkitError):
    """Base class of the crystal database's errors (connection, schema, state)."""


class QueryError(DBError, ValueError):
    """A query filter, sort key, cursor or limit is invalid (the HTTP service answers 400)."""


class RecordError(DBError, ValueError):
    """A structure cannot be stored: non-finite numbers, overlapping atoms, unknown elements..."""


class NotFoundError(DBError, KeyError):
    """A record id or chemical system that is not in the database."""

    def __str__(self) -> str:  # KeyError quotes its message; people want the plain text
        return str(self.args[0]) if self.args else ""
