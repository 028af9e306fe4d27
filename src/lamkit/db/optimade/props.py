"""How each OPTIMADE structure property filters: SQLAlchemy conditions on ``records`` for
comparisons, ``CONTAINS``/``STARTS``/``ENDS``, ``HAS ...``, ``LENGTH`` and ``IS KNOWN``.

Comparisons on a column that may be NULL are guarded (``col IS NOT NULL AND ...``), so each
condition is strictly true or false and ``NOT`` follows OPTIMADE's two-valued logic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    and_,
    any_,
    bindparam,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from ..errors import RecordError
from ..records import ELEMENTS, element_mask, utc_naive
from ..schema import chemsystems, records
from .formulas import FormulaIndex, stored_formula_of_reduced

_MASK63 = (1 << 63) - 1
#: Longer formula lists go to the database as one parameter (a JSON text or an array).
_LONG_LIST = 500
_ELEMENT_SET = frozenset(ELEMENTS)


class FilterError(Exception):
    """A filter that cannot be run: ``status`` 400 (malformed or wrong) or 501 (valid OPTIMADE
    that lamkit does not implement)."""

    def __init__(self, detail: str, status: int = 400):
        super().__init__(detail)
        self.status = status


def _unsupported(what: str) -> FilterError:
    return FilterError(f"not implemented: {what}", 501)


_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _sql_op(op: str, left, right):
    return {
        "=": lambda: left == right,
        "!=": lambda: left != right,
        "<": lambda: left < right,
        "<=": lambda: left <= right,
        ">": lambda: left > right,
        ">=": lambda: left >= right,
    }[op]()


def _bool(x: bool) -> ColumnElement:
    return true() if x else false()


class Prop:
    """How a property filters; every operation not overridden is 501."""

    name = ""

    def compare(self, op: str, value: Any) -> ColumnElement:
        raise _unsupported(f"'{op}' on {self.name}")

    def fuzzy(self, kind: str, value: Any) -> ColumnElement:
        raise _unsupported(f"{kind} on {self.name}")

    def has(self, mode: str, values: list[Any]) -> ColumnElement:
        raise _unsupported(f"HAS on {self.name}")

    def length(self, op: str, n: int) -> ColumnElement:
        raise _unsupported(f"LENGTH on {self.name}")

    def known(self) -> ColumnElement:
        return true()


def _expect(name: str, value: Any, kind: str) -> Any:
    if kind == "string" or kind == "timestamp":
        if not isinstance(value, str):
            raise FilterError(f"{name} is a {kind}; compare it with a quoted string, not {value}")
        if kind == "timestamp":
            try:
                return utc_naive(datetime.fromisoformat(value))
            except (ValueError, OverflowError, RecordError):
                raise FilterError(
                    f"{name}: {value[:40]!r} is not an ISO 8601 time such as '2024-01-31T12:00:00Z'"
                ) from None
        return value
    if isinstance(value, str):
        raise FilterError(f"{name} is a number; compare it with a number, not {value[:40]!r}")
    return value


class ColumnProp(Prop):
    """A property stored in (or computed by SQL from) one column."""

    def __init__(self, name: str, expr, kind: str, nullable: bool, dialect: str):
        self.name, self.expr, self.kind, self.nullable = name, expr, kind, nullable
        self.dialect = dialect

    def _guard(self, cond) -> ColumnElement:
        return and_(self.expr.is_not(None), cond) if self.nullable else cond

    def _text_expr(self):
        # byte (code point) order on both databases, whatever PostgreSQL's locale
        return self.expr.collate("C") if self.dialect == "postgresql" else self.expr

    def compare(self, op, value):
        value = _expect(self.name, value, self.kind)
        expr = self._text_expr() if self.kind == "string" else self.expr
        return self._guard(_sql_op(op, expr, value))

    def fuzzy(self, kind, value):
        if self.kind != "string":
            raise FilterError(f"{kind} needs a string property; {self.name} is a {self.kind}")
        value = _expect(self.name, value, "string")
        n = len(value)
        e = self.expr
        if kind == "CONTAINS":
            pos = func.strpos(e, value) if self.dialect == "postgresql" else func.instr(e, value)
            cond = pos > 0
        elif kind == "STARTS":
            cond = func.substr(e, 1, n) == value
        else:
            cond = and_(func.length(e) >= n, func.substr(e, func.length(e) - n + 1) == value)
        return self._guard(cond)

    def known(self):
        return self.expr.is_not(None) if self.nullable else true()


class NelementsProp(ColumnProp):
    """``nelements``: comparisons go through the small ``chemsystems`` table and reach
    ``records`` by the indexed ``chemsys`` column (``records.nelements`` has no index)."""

    def __init__(self, dialect: str):
        super().__init__("nelements", records.c.nelements, "integer", False, dialect)

    def compare(self, op, value):
        value = _expect("nelements", value, "integer")
        systems = select(chemsystems.c.chemsys).where(_sql_op(op, chemsystems.c.nelements, value))
        return records.c.chemsys.in_(systems)


class IdProp(ColumnProp):
    """``id`` ('lam-<n>'): equality goes to the integer key, other operators to the text."""

    def __init__(self, dialect: str):
        text = literal("lam-", String).concat(records.c.id.cast(String))
        super().__init__("id", text, "string", False, dialect)

    def compare(self, op, value):
        value = _expect("id", value, "string")
        if op in ("=", "!="):
            m = re.fullmatch(r"lam-([1-9][0-9]{0,17})", value)
            if m is None:
                return _bool(op == "!=")
            n = int(m.group(1))
            return records.c.id == n if op == "=" else records.c.id != n
        return super().compare(op, value)


class ConstProp(Prop):
    """A property with the same value on every record."""

    def __init__(self, name: str, value: Any):
        self.name, self.value = name, value

    def compare(self, op, value):
        if isinstance(self.value, list):
            raise _unsupported(f"'{op}' on the list {self.name}")
        if isinstance(value, str) != isinstance(self.value, str):
            raise FilterError(f"{self.name}: cannot compare {self.value!r} with {value!r}")
        return _bool(_PY_OPS[op](self.value, value))

    def fuzzy(self, kind, value):
        if not isinstance(self.value, str) or not isinstance(value, str):
            raise FilterError(f"{kind} needs a string property and value")
        test = {"CONTAINS": str.__contains__, "STARTS": str.startswith, "ENDS": str.endswith}
        return _bool(test[kind](self.value, value))

    def has(self, mode, values):
        if not isinstance(self.value, list):
            raise FilterError(f"HAS needs a list property; {self.name} is not one")
        have = set(self.value)
        if mode == "ALL":
            return _bool(all(v in have for v in values))
        if mode == "ONLY":
            return _bool(have <= set(values))
        return _bool(any(v in have for v in values))  # HAS, HAS ANY

    def length(self, op, n):
        if not isinstance(self.value, list):
            raise FilterError(f"LENGTH needs a list property; {self.name} is not one")
        return _bool(_PY_OPS[op](len(self.value), n))


class ElementsProp(Prop):
    """``elements`` and ``species_at_sites``: HAS / HAS ALL / HAS ANY / HAS ONLY on the
    element masks; LENGTH on ``length_col``."""

    def __init__(self, name: str, length_col):
        self.name, self.length_col = name, length_col

    def _symbols(self, values: list[Any]) -> list[str]:
        for v in values:
            if not isinstance(v, str):
                raise FilterError(f"{self.name} holds element symbols; found {v!r}")
        return [v for v in values if v in _ELEMENT_SET]

    def has(self, mode, values):
        known = self._symbols(values)
        m = chemsystems.c
        if mode in ("HAS", "ALL"):
            if len(known) < len(values):
                return false()  # an unknown symbol is on no record
            lo, hi = element_mask(known)
            conds = [m.mask_lo.op("&")(lo) == lo, m.mask_hi.op("&")(hi) == hi]
        elif mode == "ANY":
            if not known:
                return false()
            lo, hi = element_mask(known)
            conds = [or_(m.mask_lo.op("&")(lo) != 0, m.mask_hi.op("&")(hi) != 0)]
        else:  # ONLY
            if not known:
                return false()
            lo, hi = element_mask(known)
            conds = [m.mask_lo.op("&")(_MASK63 & ~lo) == 0, m.mask_hi.op("&")(_MASK63 & ~hi) == 0]
        return records.c.chemsys.in_(select(m.chemsys).where(*conds))

    def length(self, op, n):
        if self.length_col is None:  # elements: the number of elements, via chemsystems
            return NelementsProp("").compare(op, n)
        return _sql_op(op, self.length_col, n)


class ListLengthProp(Prop):
    """A list property lamkit serves but filters only by LENGTH (and IS KNOWN)."""

    def __init__(self, name: str, length):
        self.name, self.length_expr = name, length

    def length(self, op, n):
        if self.length_expr is None:  # one entry per element
            return NelementsProp("").compare(op, n)
        return _sql_op(op, self.length_expr, n)


class FormulaProp(Prop):
    """OPTIMADE reduced (``which`` 0) or anonymous (1) formula: each predicate is evaluated
    on the distinct stored formulas and becomes ``formula IN (...)``."""

    def __init__(self, name: str, which: int, conn, index: FormulaIndex):
        self.name, self.which, self.conn, self.index = name, which, conn, index

    def _where(self, predicate: Callable[[str], bool]) -> ColumnElement:
        matches = self.index.matching(self.conn, self.which, predicate)
        if not matches:
            return false()
        if len(matches) <= _LONG_LIST:
            return records.c.formula.in_(matches)
        # one bound parameter for the whole list: PostgreSQL takes at most 65,535 parameters
        # per statement, SQLite 32,766 (or 250,000, as built)
        if self.conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            return records.c.formula == any_(bindparam(None, matches, type_=ARRAY(String)))
        values = select(literal_column("value")).select_from(func.json_each(json.dumps(matches)))
        return records.c.formula.in_(values)

    def compare(self, op, value):
        value = _expect(self.name, value, "string")
        if self.which == 0 and op in ("=", "!="):
            # straight to the indexed column: one stored formula per reduced formula
            stored = stored_formula_of_reduced(value)
            if stored is None:
                return _bool(op == "!=")
            return records.c.formula == stored if op == "=" else records.c.formula != stored
        fn = _PY_OPS[op]
        return self._where(lambda f: fn(f, value))

    def fuzzy(self, kind, value):
        value = _expect(self.name, value, "string")
        test = {"CONTAINS": str.__contains__, "STARTS": str.startswith, "ENDS": str.endswith}
        return self._where(lambda f: test[kind](f, value))


class UnknownProp(Prop):
    """A property of unknown value on every record (another provider's, or a standard one
    lamkit does not serve): every comparison is false, IS UNKNOWN true."""

    def __init__(self, name: str):
        self.name = name

    def compare(self, op, value):
        return false()

    def fuzzy(self, kind, value):
        return false()

    def has(self, mode, values):
        return false()

    def length(self, op, n):
        return false()

    def known(self):
        return false()
