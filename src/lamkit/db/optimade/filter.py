"""OPTIMADE 1.2 filters as SQLAlchemy conditions on lamkit's ``records`` table (SQLite and
PostgreSQL alike).

The filter text is parsed with the ``optimade`` package's lark grammar; this module walks the
tree.  Logic is two-valued as OPTIMADE asks: a comparison with a property of unknown value
(NULL) is false, so ``NOT`` of it is true.  Element filters (``elements HAS ...``) are bit
tests on the element masks of the small ``chemsystems`` table; OPTIMADE's reduced and anonymous
formulas are evaluated once per distinct stored formula (:mod:`.formulas`).  A filter lamkit
cannot evaluate raises :class:`FilterError` with the OPTIMADE status: 400 for a wrong filter,
501 for a valid one that is not implemented.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from lark import Token, Tree
from sqlalchemy import (
    String,
    and_,
    any_,
    bindparam,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from ..errors import QueryError, RecordError
from ..query import check_text
from ..records import ELEMENTS, element_mask, utc_naive
from ..schema import chemsystems, records
from .fields import PREFIX
from .formulas import FormulaIndex, stored_formula_of_reduced

_MASK63 = (1 << 63) - 1
#: Longer formula lists go to the database as one parameter (a JSON text or an array).
_LONG_LIST = 500
#: Longest filter accepted (parsing is superlinear: 14,000 characters take about 2 s).
MAX_FILTER_CHARS = 10_000
_ELEMENT_SET = frozenset(ELEMENTS)
#: Standard structure properties lamkit does not serve: filters treat them as unknown.
_UNSERVED = frozenset(
    {
        "chemical_formula_hill",
        "space_group_symmetry_operations_xyz",
        "space_group_symbol_hall",
        "space_group_symbol_hermann_mauguin",
        "space_group_symbol_hermann_mauguin_extended",
        "space_group_it_number",
        "assemblies",
    }
)


class FilterError(Exception):
    """A filter that cannot be run: ``status`` 400 (malformed or wrong) or 501 (valid OPTIMADE
    that lamkit does not implement)."""

    def __init__(self, detail: str, status: int = 400):
        super().__init__(detail)
        self.status = status


def _unsupported(what: str) -> FilterError:
    return FilterError(f"not implemented: {what}", 501)


_parser_lock = threading.Lock()
_parser: Any = None


def parse(text: str) -> Tree:
    """The lark tree of an OPTIMADE filter (grammar 1.2.0); FilterError (400) if malformed."""
    global _parser
    from optimade.filterparser import LarkParser

    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(
            f"filter: {len(text)} characters; at most {MAX_FILTER_CHARS} are accepted"
        )
    try:
        check_text(text, "filter")
    except QueryError as exc:
        raise FilterError(str(exc)) from None
    with _parser_lock:
        if _parser is None:
            _parser = LarkParser(version=(1, 2, 0))
        try:
            return _parser.lark.parse(text)
        except Exception as exc:  # noqa: BLE001 - lark raises several kinds
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FilterError(f"filter: cannot parse {text[:80]!r}: {first}") from None


# ------------------------------------------------------------------------- values
def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.S)


def _value(tree: Tree) -> Any:
    """A Python value of a ``value``/``constant``/``non_string_value`` tree; a property (as a
    value) or a boolean raise 501."""
    node = tree.children[0] if tree.data in ("value", "constant", "non_string_value") else tree
    if node.data == "string":
        return check_str(_unquote(str(node.children[0])))
    if node.data == "number":
        tok = node.children[0]
        if tok.type == "SIGNED_INT":
            n = int(tok)
            return n if abs(n) < 2**62 else float(n)  # beyond BIGINT: compare as a float
        return float(tok)
    if node.data == "not_implemented_string":
        return _value(node.children[0])
    if node.data == "property":
        raise _unsupported("comparisons between two properties")
    raise _unsupported("boolean values (lamkit has no boolean properties)")


def check_str(s: str) -> str:
    try:
        return check_text(s, "filter string")
    except QueryError as exc:
        raise FilterError(str(exc)) from None


_REVERSED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}
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


# ------------------------------------------------------------------------- properties
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


# ------------------------------------------------------------------------- translation
class Translator:
    """Turns a parsed filter into one SQLAlchemy condition on ``records``.

    ``conn``: a connection (the formula properties read the distinct stored formulas);
    ``dialect``: "sqlite" or "postgresql"; ``warnings`` collects what the client should know
    (e.g. properties of other providers, treated as unknown)."""

    def __init__(self, conn, dialect: str, formulas: FormulaIndex | None = None):
        self.conn, self.dialect = conn, dialect
        self.formulas = formulas or FormulaIndex()
        self.warnings: list[str] = []
        c = records.c
        p = f"_{PREFIX}_"

        def col(name, column, kind, nullable=False):
            return ColumnProp(name, column, kind, nullable, dialect)

        self.props: dict[str, Prop] = {
            "id": IdProp(dialect),
            "type": ConstProp("type", "structures"),
            "immutable_id": col("immutable_id", c.content_hash, "string"),
            "last_modified": col("last_modified", c.submitted, "timestamp"),
            "elements": ElementsProp("elements", None),
            "species_at_sites": ElementsProp("species_at_sites", c.nsites),
            "nelements": NelementsProp(dialect),
            "nsites": col("nsites", c.nsites, "integer"),
            "chemical_formula_descriptive": col(
                "chemical_formula_descriptive", c.formula, "string"
            ),
            "chemical_formula_reduced": FormulaProp(
                "chemical_formula_reduced", 0, conn, self.formulas
            ),
            "chemical_formula_anonymous": FormulaProp(
                "chemical_formula_anonymous", 1, conn, self.formulas
            ),
            "nperiodic_dimensions": ConstProp("nperiodic_dimensions", 3),
            "dimension_types": ConstProp("dimension_types", [1, 1, 1]),
            "structure_features": ConstProp("structure_features", []),
            "elements_ratios": ListLengthProp("elements_ratios", None),
            "species": ListLengthProp("species", None),
            "lattice_vectors": ListLengthProp("lattice_vectors", literal(3)),
            "cartesian_site_positions": ListLengthProp("cartesian_site_positions", c.nsites),
            p + "energy": col(p + "energy", c.energy, "float", True),
            p + "energy_per_atom": col(p + "energy_per_atom", c.energy_per_atom, "float", True),
            p + "formation_energy_per_atom": col(
                p + "formation_energy_per_atom", c.formation_energy_per_atom, "float", True
            ),
            p + "e_above_hull": col(p + "e_above_hull", c.e_above_hull, "float", True),
            p + "spacegroup_number": col(
                p + "spacegroup_number", c.spacegroup_number, "integer", True
            ),
            p + "spacegroup_symbol": col(
                p + "spacegroup_symbol", c.spacegroup_symbol, "string", True
            ),
            p + "model": col(p + "model", c.model, "string", True),
            p + "volume": col(p + "volume", c.volume, "float"),
            p + "density": col(p + "density", c.density, "float"),
        }

    def translate(self, text: str | None) -> ColumnElement:
        """The condition of filter ``text`` (None or blank: every record)."""
        if text is None or not text.strip():
            return true()
        tree = parse(text)
        if not tree.children:
            return true()
        try:
            return self._node(tree.children[0])
        except RecursionError:
            raise FilterError("filter: nested too deeply") from None

    # -- the tree
    def _node(self, t: Tree) -> ColumnElement:
        kind = t.data
        if kind == "expression":
            parts = [self._node(c) for c in t.children]
            return parts[0] if len(parts) == 1 else or_(*parts)
        if kind == "expression_clause":
            parts = [self._node(c) for c in t.children]
            return parts[0] if len(parts) == 1 else and_(*parts)
        if kind == "expression_phrase":
            negate = isinstance(t.children[0], Token) and t.children[0].type == "NOT"
            inner = self._node(t.children[-1])
            return not_(inner) if negate else inner
        if kind == "comparison":
            return self._node(t.children[0])
        if kind == "property_first_comparison":
            return self._property_first(t)
        if kind == "constant_first_comparison":
            return self._constant_first(t)
        raise FilterError(f"filter: unexpected element {kind!r}")  # pragma: no cover

    def prop(self, t: Tree) -> Prop:
        name = ".".join(str(tok) for tok in t.children)
        found = self.props.get(name)
        if found is not None:
            return found
        if name.startswith(f"_{PREFIX}_"):
            raise FilterError(
                f"unknown property {name!r}; lamkit's own are "
                + ", ".join(k for k in self.props if k.startswith("_"))
            )
        if name.startswith("_") or name in _UNSERVED:
            self.warnings.append(f"property {name!r} is not served here; treated as unknown")
            return UnknownProp(name)
        raise FilterError(
            f"unknown property {name!r} for structures; known: "
            + ", ".join(k for k in self.props if not k.startswith("_"))
        )

    def _constant_first(self, t: Tree) -> ColumnElement:
        const, op, rhs = t.children
        left = _value(const)
        inner = rhs.children[0] if rhs.data == "non_string_value" else rhs
        if inner.data == "property":
            return self.prop(inner).compare(_REVERSED[str(op)], left)
        right = _value(rhs)
        if isinstance(left, str) or isinstance(right, str):
            raise _unsupported("comparisons between two string constants")
        return _bool(_PY_OPS[str(op)](left, right))

    def _property_first(self, t: Tree) -> ColumnElement:
        prop = self.prop(t.children[0])
        rhs = t.children[1]
        toks = [c for c in rhs.children if isinstance(c, Token)]
        trees = [c for c in rhs.children if isinstance(c, Tree)]
        if rhs.data == "value_op_rhs":
            return prop.compare(str(toks[0]), _value(trees[0]))
        if rhs.data == "known_op_rhs":
            known = prop.known()
            return known if toks[-1].type == "KNOWN" else not_(known)
        if rhs.data == "fuzzy_string_op_rhs":
            return prop.fuzzy(toks[0].type, _value(trees[0]))
        if rhs.data == "set_op_rhs":
            mode = toks[1].type if len(toks) > 1 else "HAS"
            if mode == "OPERATOR":
                if str(toks[1]) != "=":
                    raise _unsupported(f"HAS {toks[1]} (an operator inside HAS)")
                mode = "HAS"
            if trees[0].data == "value_list":
                if any(isinstance(c, Token) for c in trees[0].children):
                    raise _unsupported("operators inside a HAS value list")
                values = [_value(v) for v in trees[0].children]
            else:
                values = [_value(trees[0])]
            return prop.has(mode, values)
        if rhs.data == "length_op_rhs":
            op = str(toks[1]) if len(toks) > 1 else "="
            n = int(trees[0].children[0])
            return prop.length(op, n if abs(n) < 2**62 else float(n))
        if rhs.data == "set_zip_op_rhs":
            raise _unsupported("HAS on zipped properties (prop1:prop2 HAS ...)")
        raise FilterError(f"filter: unexpected element {rhs.data!r}")  # pragma: no cover


def condition(conn, text: str | None, formulas: FormulaIndex | None = None):
    """(condition, warnings) of OPTIMADE filter ``text`` over ``records`` for ``conn``."""
    tr = Translator(conn, conn.dialect.name, formulas)
    return tr.translate(text), tr.warnings
