"""OPTIMADE 1.2 filters as SQLAlchemy conditions on lamkit's ``records`` table (SQLite and
PostgreSQL alike).

The filter text is parsed with the ``optimade`` package's lark grammar; this module walks the
tree.  Logic is two-valued as OPTIMADE asks: a comparison with a property of unknown value
(NULL) is false, so ``NOT`` of it is true.  Element filters (``elements HAS ...``) are bit
tests on the element masks of the small ``chemsystems`` table; OPTIMADE's reduced and anonymous
formulas are evaluated once per distinct stored formula (:mod:`.formulas`); each property's
conditions are in :mod:`.props`.  A filter lamkit
cannot evaluate raises :class:`FilterError` with the OPTIMADE status: 400 for a wrong filter,
501 for a valid one that is not implemented.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from lark import Token, Tree
from sqlalchemy import and_, literal, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement

from ..errors import QueryError
from ..query import check_text
from ..schema import records
from .fields import PREFIX
from .formulas import FormulaIndex
from .props import (
    _PY_OPS,
    ColumnProp,
    ConstProp,
    ElementsProp,
    FilterError,
    FormulaProp,
    IdProp,
    ListLengthProp,
    NelementsProp,
    Prop,
    UnknownProp,
    _bool,
    _unsupported,
)

__all__ = ["FilterError", "Translator", "condition", "parse"]

#: Longest filter accepted (parsing is superlinear: 14,000 characters take about 2 s).
MAX_FILTER_CHARS = 10_000
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
