"""Query filters as SQLAlchemy expressions (always parameterised) and keyset pagination.

Element filters go through the small ``chemsystems`` table: ``only_elements`` (elements are a
subset of a set) and ``elements`` (contain all of a set) are bit tests on its 128-bit element
masks; the matching chemical systems then select records through the indexed ``chemsys``
column.  Pages are keyset pages: the opaque cursor holds the last row's sort key and id, so a
page costs the same at any depth and inserts between pages neither repeat nor skip a record.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, true, tuple_

from ..registry import did_you_mean
from .errors import QueryError, RecordError
from .records import ELEMENTS, Record, chemsys_of, element_mask, utc_naive
from .schema import chemsystems, records

#: Numeric columns filtered by a ``(lo, hi)`` range of the same name and sortable: formation
#: energy (eV/atom), density (g/cm^3), volume (Å^3), lattice lengths (Å) and angles (degrees).
RANGE_FIELDS = (
    "formation_energy_per_atom",
    "density",
    "volume",
    "a",
    "b",
    "c",
    "alpha",
    "beta",
    "gamma",
)
#: Sort keys accepted by ``order_by`` (prefix "-" for descending).
ORDER_FIELDS = (
    "id",
    "energy_per_atom",
    "e_above_hull",
    "nsites",
    "submitted",
    "formula",
    *RANGE_FIELDS,
)
#: Largest page.
MAX_LIMIT = 1000
#: Filters accepted by :func:`conditions` (and so by CrystalDB.query / count / iter_query).
FILTERS = (
    "elements",
    "only_elements",
    "chemsys",
    "formula",
    "spacegroup",
    "nsites",
    "energy_per_atom",
    "e_above_hull_max",
    "submitter",
    "submitted",
    "tags",
    "model",
    *RANGE_FIELDS,
)
_MASK63 = (1 << 63) - 1
_ELEMENT_SET = frozenset(ELEMENTS)


@dataclass
class Page:
    """One page of results: ``records`` (Records, Structures or Atoms, as asked), the cursor of
    the next page (None on the last page) and, when asked for, the total number of matches."""

    records: list[Any]
    next_cursor: str | None
    total: int | None = None
    order_by: str = "id"
    extra: dict = field(default_factory=dict)


def parse_elements(value, name: str) -> list[str]:
    """Element symbols from a list or a string ("Li-Fe-O", "Li,Fe,O", "Li Fe O")."""
    if isinstance(value, str):
        parts = value.replace(",", " ").replace("-", " ").split()
    elif isinstance(value, Iterable):
        parts = [str(v).strip() for v in value]
    else:
        raise QueryError(f"{name}: expected element symbols; found {value!r}")
    if not parts:
        raise QueryError(f"{name}: expected at least one element symbol; found none")
    for el in parts:
        if el not in _ELEMENT_SET:
            cased = el.capitalize()
            hint = (
                f" Did you mean '{cased}'? Symbols are case-sensitive."
                if cased in _ELEMENT_SET
                else did_you_mean(el, ELEMENTS)
            )
            raise QueryError(f"{name}: unknown element symbol {el[:20]!r}.{hint}")
    return sorted(set(parts))


def _number(value, name: str) -> float:
    if isinstance(value, bool):
        raise QueryError(f"{name}: expected a number; found {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise QueryError(f"{name}: expected a number; found {value!r:.60}") from None
    if math.isnan(x):
        raise QueryError(f"{name}: expected a number; found NaN")
    return x


def parse_range(value, name: str, kind=float):
    """(lo, hi) with None for an open end; a single number means exactly that value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise QueryError(f"{name}: expected (lo, hi) with None for an open end; found {value!r}")
    lo, hi = value
    if kind is datetime:
        try:
            lo = None if lo is None else utc_naive(lo)
            hi = None if hi is None else utc_naive(hi)
        except (RecordError, TypeError, AttributeError):
            raise QueryError(f"{name}: expected ISO 8601 date/times; found {value!r}") from None
    else:
        lo = None if lo is None else _number(lo, name)
        hi = None if hi is None else _number(hi, name)
        if kind is int:
            lo, hi = _int_bounds(lo, hi, name)
    if lo is not None and hi is not None and lo > hi:
        raise QueryError(f"{name}: lower bound {lo} is above upper bound {hi}")
    return lo, hi


#: Integer bounds beyond this are clamped to it (nsites is a 32-bit INTEGER column).
_INT_LIMIT = 2**31 - 1


def _int_bounds(lo: float | None, hi: float | None, name: str) -> tuple[int | None, int | None]:
    """Integer (lo, hi) of float bounds: an infinite end is open (None) and huge ones are
    clamped, so ``(0, inf)`` means "at least 0"."""
    if lo == math.inf or hi == -math.inf:
        raise QueryError(f"{name}: the range ({lo}, {hi}) is empty; expected finite bounds")
    lo = None if lo is None or lo == -math.inf else math.ceil(max(lo, -_INT_LIMIT))
    hi = None if hi is None or hi == math.inf else math.floor(min(hi, _INT_LIMIT))
    return lo, hi


def check_text(value: str, name: str) -> str:
    """``value`` if both databases can store and compare it: no NUL character (PostgreSQL
    refuses it) and no lone UTF-16 surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        raise QueryError(f"{name}: contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(
            f"{name}: {value[:40]!r} contains a lone UTF-16 surrogate; expected valid Unicode text"
        ) from None
    return value


def between(col, lo, hi) -> list:
    out = []
    if lo is not None:
        out.append(col >= lo)
    if hi is not None:
        out.append(col <= hi)
    return out


def _strings(value, name: str) -> list[str]:
    out = [value] if isinstance(value, str) else None
    if out is None and isinstance(value, Iterable):
        out = [str(v) for v in value]
    if not out:
        raise QueryError(f"{name}: expected a string or a list of strings; found {value!r:.60}")
    return [check_text(v, name) for v in out]


def normalise_formula(formula: str) -> str:
    """pymatgen's reduced formula of a formula string ("Cl2Na2" -> "NaCl")."""
    from pymatgen.core import Composition

    if not isinstance(formula, str) or not formula.strip() or len(formula) > 200:
        raise QueryError(
            f"formula: expected a chemical formula such as 'Fe2O3'; found {formula!r:.60}"
        )
    check_text(formula, "formula")
    try:
        comp = Composition(formula.strip())
        if comp.num_atoms <= 0 or any(not el.symbol or el.Z > 118 for el in comp.elements):
            raise ValueError("empty")
        return comp.reduced_formula
    except Exception:  # noqa: BLE001 - pymatgen raises many kinds on bad input
        raise QueryError(
            f"formula: {formula[:50]!r} is not a chemical formula (expected e.g. 'Fe2O3')"
        ) from None


def _spacegroups(value) -> tuple[list[int], list[str]]:
    values = value if isinstance(value, (list, tuple, set)) else [value]
    numbers, symbols = [], []
    for v in values:
        if isinstance(v, bool):
            raise QueryError(f"spacegroup: expected a number 1..230 or a symbol; found {v!r}")
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v.strip())
        if isinstance(v, (int, float)):
            if not 1 <= v <= 230 or v != int(v):  # NaN fails the first test
                raise QueryError(f"spacegroup: expected a number 1..230; found {v!r}")
            numbers.append(int(v))
        elif isinstance(v, str) and v.strip():
            numbers += _numbers_of_symbol(check_text(v, "spacegroup").strip())
        else:
            raise QueryError(f"spacegroup: expected a number 1..230 or a symbol; found {v!r}")
    return numbers, symbols


def _numbers_of_symbol(symbol: str) -> list[int]:
    from .spacegroups import numbers_of, short_symbols

    found = numbers_of(symbol)
    if not found:
        raise QueryError(
            f"spacegroup: unknown Hermann-Mauguin symbol {symbol[:40]!r}; expected a number "
            "1..230 or a symbol such as 'Fm-3m', 'Fm3m', 'F m -3 m' or 'P6_3/mmc'."
            + did_you_mean(symbol, short_symbols())
        )
    return found


def element_conditions(elements=None, only_elements=None) -> list:
    """Conditions on ``chemsystems`` for must-contain-all and subset-of element filters."""
    conds = []
    if elements is not None:
        lo, hi = element_mask(parse_elements(elements, "elements"))
        conds += [chemsystems.c.mask_lo.op("&")(lo) == lo, chemsystems.c.mask_hi.op("&")(hi) == hi]
    if only_elements is not None:
        lo, hi = element_mask(parse_elements(only_elements, "only_elements"))
        conds += [
            chemsystems.c.mask_lo.op("&")(_MASK63 & ~lo) == 0,
            chemsystems.c.mask_hi.op("&")(_MASK63 & ~hi) == 0,
        ]
    return conds


def conditions(conn, **filters) -> list:
    """SQLAlchemy conditions on ``records`` for the filters (see :data:`FILTERS`).

    ``conn`` resolves element filters to the list of matching chemical systems first (a query
    on the small ``chemsystems`` table).  Raises QueryError naming the bad filter."""
    unknown = [k for k in filters if k not in FILTERS]
    if unknown:
        raise QueryError(
            f"unknown filter '{unknown[0]}'; known: {', '.join(FILTERS)}."
            + did_you_mean(unknown[0], FILTERS)
        )
    f = {k: v for k, v in filters.items() if v is not None}
    c = records.c
    conds: list = []
    econds = element_conditions(f.get("elements"), f.get("only_elements"))
    if econds:
        systems = conn.execute(select(chemsystems.c.chemsys).where(*econds)).scalars().all()
        conds.append(c.chemsys.in_(systems) if systems else ~true())
    if "chemsys" in f:
        conds.append(c.chemsys == chemsys_of(parse_elements(f["chemsys"], "chemsys")))
    if "formula" in f:
        formulas = [normalise_formula(x) for x in _strings(f["formula"], "formula")]
        conds.append(c.formula.in_(formulas))
    if "spacegroup" in f:
        numbers, _ = _spacegroups(f["spacegroup"])
        conds.append(c.spacegroup_number.in_(sorted(set(numbers))))
    if "nsites" in f:
        conds += between(c.nsites, *parse_range(f["nsites"], "nsites", int))
    if "energy_per_atom" in f:
        conds += between(c.energy_per_atom, *parse_range(f["energy_per_atom"], "energy_per_atom"))
    if "e_above_hull_max" in f:
        conds.append(c.e_above_hull <= _number(f["e_above_hull_max"], "e_above_hull_max"))
    if "submitter" in f:
        conds.append(c.submitter.in_(_strings(f["submitter"], "submitter")))
    if "model" in f:
        conds.append(c.model.in_(_strings(f["model"], "model")))
    if "submitted" in f:
        conds += between(c.submitted, *parse_range(f["submitted"], "submitted", datetime))
    for name in RANGE_FIELDS:
        if name in f:
            conds += between(c[name], *parse_range(f[name], name))
    if "tags" in f:
        for tag in _strings(f["tags"], "tags"):
            pattern = json.dumps(tag).replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
            conds.append(c.tags.like(f"%{pattern}%", escape="\\"))
    return conds


def parse_order(order_by: str) -> tuple[str, bool]:
    """(field, descending) of an ``order_by`` such as "energy_per_atom" or "-submitted"."""
    if not isinstance(order_by, str):
        raise QueryError(f"order_by: expected one of {', '.join(ORDER_FIELDS)}; found {order_by!r}")
    desc = order_by.startswith("-")
    name = order_by[1:] if desc else order_by
    if name not in ORDER_FIELDS:
        raise QueryError(
            f"order_by: unknown sort key {name[:40]!r}; choose from {', '.join(ORDER_FIELDS)} "
            "(prefix '-' for descending)." + did_you_mean(name, ORDER_FIELDS)
        )
    return name, desc


def check_limit(limit) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit: expected an integer 1..{MAX_LIMIT}; found {limit!r}")
    return limit


def encode_cursor(order_by: str, rec: Record) -> str:
    """Opaque cursor after ``rec``: base64url of the sort key value and the id."""
    name, _ = parse_order(order_by)
    value = rec.id if name == "id" else getattr(rec, name)
    if isinstance(value, datetime):
        value = value.replace(tzinfo=None).isoformat()
    raw = json.dumps({"o": order_by, "v": value, "i": rec.id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order_by: str) -> tuple[Any, int]:
    """(last sort value, last id) of a cursor made by :func:`encode_cursor` for ``order_by``."""
    try:
        if not isinstance(cursor, str) or len(cursor) > 2000:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        d = json.loads(raw)
        value, last_id, order = d["v"], int(d["i"]), d["o"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise QueryError("cursor: not a cursor returned by a previous page") from None
    if order != order_by:
        raise QueryError(
            f"cursor: it was made for order_by='{order}' but this query has order_by='{order_by}'"
        )
    name, _ = parse_order(order_by)
    if not _cursor_value_ok(name, value) or not -(2**63) <= last_id < 2**63:
        raise QueryError("cursor: not a cursor returned by a previous page")
    if name == "submitted" and value is not None:
        value = datetime.fromisoformat(value)
    return value, last_id


def _cursor_value_ok(name: str, value) -> bool:
    """Whether a decoded cursor value has the type of its sort key (a forged cursor must give
    a 400, not a database error)."""
    if value is None:
        return name != "id"
    if name in ("id", "nsites"):
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63
    if name in ("energy_per_atom", "e_above_hull", *RANGE_FIELDS):
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if not isinstance(value, str) or "\x00" in value or len(value) > 255:
        return False
    if name == "submitted":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
    return True


def keyset(order_by: str, cursor: str | None) -> tuple[list, list]:
    """(conditions after the cursor, ORDER BY clauses) for a keyset page.  NULL sort values come
    last in either direction."""
    name, desc = parse_order(order_by)
    idc = records.c.id
    col = records.c[name]
    if name == "id":
        order = [idc.desc() if desc else idc.asc()]
    else:
        order = [
            (col.desc() if desc else col.asc()).nulls_last(),
            idc.desc() if desc else idc.asc(),
        ]
    if cursor is None:
        return [], order
    value, last_id = decode_cursor(cursor, order_by)
    if name == "id":
        return [idc < last_id if desc else idc > last_id], order
    if value is None:
        return [and_(col.is_(None), idc < last_id if desc else idc > last_id)], order
    key, last = tuple_(col, idc), tuple_(value, last_id)
    return [or_(key < last if desc else key > last, col.is_(None))], order
