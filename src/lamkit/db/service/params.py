"""Search parameters of ``GET /api/v1/structures`` -> keyword filters of ``CrystalDB.query``.

Every value is checked here so that a bad one gets a 422 naming the parameter (unknown element,
reversed range, malformed date...). What this layer cannot judge (a cursor, a space-group
symbol) is left to the core, whose ``QueryError`` becomes a 400.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException, Query

from ..query import ORDER_FIELDS
from ..records import ELEMENTS
from .formats import bad_character

_ELEMENTS = frozenset(ELEMENTS)
_FORMULA = re.compile(r"^(?:[A-Z][a-z]?\d*(?:\.\d+)?|\(|\)\d*)+$")


class BadParam(HTTPException):
    """422 naming the query parameter and what is wrong with it."""

    def __init__(self, name: str, message: str):
        super().__init__(422, f"{name}: {message}")


def text_param(name: str, value: str | None) -> str | None:
    """A free-text filter: any characters but control characters (NUL cannot be stored)."""
    if value is None or value == "":
        return None
    bad = bad_character(value)
    if bad is not None:
        raise BadParam(name, bad)
    return value


def split_list(values: list[str] | None) -> list[str]:
    """``a,b`` and repeated parameters alike, stripped, empties dropped."""
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(","))
    return [v for v in out if v]


def elements_param(name: str, values: list[str] | None) -> list[str] | None:
    symbols = split_list(values)
    if not symbols:
        return None
    unknown = [s for s in symbols if s not in _ELEMENTS]
    if unknown:
        hint = [s.capitalize() for s in unknown if s.capitalize() in _ELEMENTS]
        extra = f" (did you mean {', '.join(hint)}? symbols are case-sensitive)" if hint else ""
        raise BadParam(name, f"unknown element symbol(s) {', '.join(map(repr, unknown))}{extra}")
    return sorted(set(symbols))


def chemsys_param(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    parts = [p for p in re.split(r"[-,\s]+", value.strip()) if p]
    if not parts:  # only separators, e.g. ',' or '-'
        return None
    elements_param("chemsys", parts)
    return "-".join(sorted(set(parts)))


def range_param(lo_name: str, lo: float | None, hi_name: str, hi: float | None):
    for name, value in ((lo_name, lo), (hi_name, hi)):
        if value is not None and isinstance(value, float) and not math.isfinite(value):
            raise BadParam(name, f"must be a finite number, got {value}")
    if lo is not None and hi is not None and lo > hi:
        raise BadParam(
            f"{lo_name}/{hi_name}", f"empty range: {lo_name}={lo} is greater than {hi_name}={hi}"
        )
    if lo is None and hi is None:
        return None
    return (lo, hi)


def time_param(name: str, value: str | None) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadParam(
            name,
            f"{value!r} is not an ISO 8601 date or date-time "
            f"(e.g. 2024-05-01 or 2024-05-01T12:00:00Z)",
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t


def spacegroup_param(value: str | None) -> int | str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.lstrip("-").isdigit():
        number = int(value)
        if not 1 <= number <= 230:
            raise BadParam("spacegroup", f"space-group number {number} is not in 1..230")
        return number
    if len(value) > 32:
        raise BadParam("spacegroup", "a space-group symbol is at most 32 characters")
    return value


def formula_param(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip().replace(" ", "")
    if len(value) > 100 or not _FORMULA.match(value):
        raise BadParam("formula", f"{value[:40]!r} is not a chemical formula (e.g. NaCl, Fe2O3)")
    elements_param("formula", re.findall(r"[A-Z][a-z]?", value))
    return value


#: Values of ``order_by`` (the OpenAPI enum): a sort key, "-" prefix for descending, or empty.
ORDER_CHOICES = ["", *ORDER_FIELDS, *(f"-{f}" for f in ORDER_FIELDS)]


def order_param(value: str | None) -> str | None:
    if not value:
        return None
    if value not in ORDER_CHOICES:
        raise BadParam(
            "order_by",
            f"cannot sort by {value!r}; expected one of "
            f"{', '.join(ORDER_FIELDS)} (prefix '-' for descending)",
        )
    return value


@dataclass
class SearchParams:
    """The query string of ``GET /structures`` as FastAPI parameters."""

    elements: list[str] | None = Query(
        None, description="Records containing all of these elements: 'Li,O' or repeated."
    )
    only_elements: list[str] | None = Query(
        None, description="Records made only of these elements (any subset of them)."
    )
    chemsys: str | None = Query(None, description="Exact chemical system, e.g. 'Cl-Na'.")
    formula: str | None = Query(None, description="Reduced formula, e.g. 'NaCl'.")
    spacegroup: str | None = Query(None, description="Space-group number (1-230) or symbol.")
    nsites_min: int | None = Query(
        None, ge=1, le=1_000_000, description="Fewest sites in the cell."
    )
    nsites_max: int | None = Query(None, ge=1, le=1_000_000, description="Most sites in the cell.")
    e_min: float | None = Query(None, description="Lowest energy per atom, eV/atom.")
    e_max: float | None = Query(None, description="Highest energy per atom, eV/atom.")
    e_above_hull_max: float | None = Query(None, ge=0, description="eV/atom above the hull.")
    submitter: str | None = Query(None, max_length=255)
    submitted_from: str | None = Query(None, description="ISO 8601, inclusive.")
    submitted_to: str | None = Query(None, description="ISO 8601, inclusive.")
    tags: list[str] | None = Query(None, description="Records carrying all of these tags.")
    model: str | None = Query(None, max_length=255, description="Model that computed energies.")
    formation_energy_min: float | None = Query(
        None, description="Lowest formation energy, eV/atom."
    )
    formation_energy_max: float | None = Query(
        None, description="Highest formation energy, eV/atom."
    )
    density_min: float | None = Query(None, description="Lowest density, g/cm^3.")
    density_max: float | None = Query(None, description="Highest density, g/cm^3.")
    volume_min: float | None = Query(None, description="Smallest cell volume, Å^3.")
    volume_max: float | None = Query(None, description="Largest cell volume, Å^3.")

    def filters(self) -> dict[str, Any]:
        """Keyword filters for ``CrystalDB.query`` / ``count`` (unset ones left out)."""
        f: dict[str, Any] = {
            "elements": elements_param("elements", self.elements),
            "only_elements": elements_param("only_elements", self.only_elements),
            "chemsys": chemsys_param(self.chemsys),
            "formula": formula_param(self.formula),
            "spacegroup": spacegroup_param(self.spacegroup),
            "nsites": range_param("nsites_min", self.nsites_min, "nsites_max", self.nsites_max),
            "energy_per_atom": range_param("e_min", self.e_min, "e_max", self.e_max),
            "e_above_hull_max": self.e_above_hull_max,
            "submitter": text_param("submitter", self.submitter),
            "tags": [text_param("tags", t) for t in split_list(self.tags)] or None,
            "model": text_param("model", self.model),
            "formation_energy_per_atom": range_param(
                "formation_energy_min",
                self.formation_energy_min,
                "formation_energy_max",
                self.formation_energy_max,
            ),
            "density": range_param(
                "density_min", self.density_min, "density_max", self.density_max
            ),
            "volume": range_param("volume_min", self.volume_min, "volume_max", self.volume_max),
        }
        t0 = time_param("submitted_from", self.submitted_from)
        t1 = time_param("submitted_to", self.submitted_to)
        if t0 and t1 and t0 > t1:
            raise BadParam("submitted_from/submitted_to", "empty range: from is after to")
        if t0 or t1:
            f["submitted"] = (t0, t1)
        return {k: v for k, v in f.items() if v is not None}
