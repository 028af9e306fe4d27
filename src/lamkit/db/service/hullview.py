"""The hull of a chemical system as the service returns it: the core's entries with their
compositions, the stable ones, and points ready to plot (composition axis / triangle and
formation energy)."""

from __future__ import annotations

import math
import sys
from functools import lru_cache
from typing import Any

from fastapi import HTTPException

from ..errors import QueryError
from .views import plain_tree

#: every finite energy per atom: an energy range that only leaves out records without one
_ANY_ENERGY = (-sys.float_info.max, sys.float_info.max)


@lru_cache(maxsize=4096)
def _fractions(formula: str) -> tuple[tuple[str, float], ...]:
    from pymatgen.core import Composition

    comp = Composition(formula).fractional_composition
    return tuple((el.symbol, float(x)) for el, x in comp.items())


def _entry(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": e.get("id"),
        "formula": e["formula"],
        "composition": dict(_fractions(e["formula"])),
        "energy_per_atom": e.get("energy_per_atom"),
        "formation_energy_per_atom": e.get("formation_energy_per_atom"),
        "e_above_hull": e.get("e_above_hull"),
        "stable": bool(e.get("stable")),
    }


def plot_points(elements: list[str], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Plot-ready points. Binary: ``x`` = atomic fraction of ``elements[1]``; ternary: ``x, y``
    in an equilateral triangle with the elements at (0, 0), (1, 0) and (1/2, sqrt(3)/2);
    ``y`` (binary) or ``z`` (ternary) is the formation energy (eV/atom). ``hull`` lists the
    stable points in order along x (binary), ``lines`` the tie lines between stable points
    (ternary)."""
    n = len(elements)
    points = []
    for e in entries:
        comp = e["composition"]
        p: dict[str, Any] = {
            "id": e["id"],
            "formula": e["formula"],
            "stable": e["stable"],
            "e_above_hull": e["e_above_hull"],
        }
        ef = e["formation_energy_per_atom"]
        if n == 2:
            p.update(x=comp.get(elements[1], 0.0), y=ef)
        elif n == 3:
            b, c = comp.get(elements[1], 0.0), comp.get(elements[2], 0.0)
            p.update(x=b + c / 2, y=c * math.sqrt(3) / 2, z=ef)
        else:
            p.update(composition=comp, y=ef)
        points.append(p)
    kind = {2: "binary", 3: "ternary"}.get(n, "other")
    out: dict[str, Any] = {"kind": kind, "axes": elements, "points": points}
    if n == 2:
        stable = sorted((p for p in points if p["stable"]), key=lambda p: (p["x"], p["y"]))
        out["hull"] = [[p["x"], p["y"]] for p in stable]
    elif n == 3:
        out["lines"] = tie_lines([p for p in points if p["stable"]])
    return out


def tie_lines(stable: list[dict[str, Any]]) -> list[list[list[float]]]:
    """Edges of the lower hull's facets over the triangle (ternary): ``[[x1, y1], [x2, y2]]``
    per edge between two stable points, each once. Facets are the lower faces of the 3-D hull
    of the stable points (x, y, formation energy) and one point high above them (so that three
    points, or coplanar ones, still make a solid); joggled so that coplanar points (the three
    elements alone) still make a triangulation."""
    pts = {(round(p["x"], 9), round(p["y"], 9)): p for p in stable if p["z"] is not None}
    if len(pts) < 3:
        return []
    from scipy.spatial import ConvexHull, QhullError

    xyz = [[p["x"], p["y"], p["z"]] for p in pts.values()]
    zs = [z for _, _, z in xyz]
    apex = len(xyz)
    above = max(zs) + 10 * (max(zs) - min(zs) + 1)
    cx, cy = sum(p[0] for p in xyz) / apex, sum(p[1] for p in xyz) / apex
    try:
        hull = ConvexHull([*xyz, [cx, cy, above]], qhull_options="QJ")
    except (QhullError, ValueError):  # all stable points on one line: nothing to draw
        return []
    edges: set[tuple[int, int]] = set()
    for simplex, eq in zip(hull.simplices, hull.equations):
        if apex in simplex or eq[2] >= -1e-6:  # a side of the pyramid, or an upright face
            continue
        a, b, c = (int(i) for i in simplex)
        (xa, ya, _), (xb, yb, _), (xc, yc, _) = xyz[a], xyz[b], xyz[c]
        if abs((xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)) < 1e-9:  # flat over the triangle
            continue
        edges.update(tuple(sorted(e)) for e in ((a, b), (b, c), (a, c)))
    return [[xyz[i][:2], xyz[j][:2]] for i, j in sorted(edges)]


def _stored_energies(db: Any, elements: list[str], model: str | None) -> int:
    """Records with an energy (of ``model`` if given) in the system or its subsystems: the
    records a hull of the system is built from."""
    filters: dict[str, Any] = {"only_elements": elements, "energy_per_atom": _ANY_ENERGY}
    if model is not None:
        filters["model"] = model
    return db.count(**filters)


def no_energies(db: Any, chemsys: str, model: str | None) -> HTTPException | None:
    """The 404 of a hull request whose system (with its subsystems) holds no energies (of
    ``model``, if given), else None: there is no hull to show, whatever the request."""
    elements = chemsys.split("-")
    if _stored_energies(db, elements, model):
        return None
    where = f"{chemsys} or its subsystems"
    if model is None:
        return HTTPException(
            404, f"hull {chemsys}: no energies are stored for {where}; nothing to build a hull of"
        )
    hint = ""
    if _stored_energies(db, elements, None):
        hint = " (energies of other models are stored: leave out model, or choose another)"
    return HTTPException(
        404, f"hull {chemsys}: no energies of model {model!r} are stored for {where}{hint}"
    )


def hull_view(db: Any, chemsys: str, model: str | None) -> dict[str, Any]:
    """The service's answer for the hull of ``chemsys`` (elements joined by '-', sorted).

    404 when the system and its subsystems hold no energies (of ``model``); the core's other
    refusals (no elemental reference, energies of several models and no ``model``) stay
    QueryErrors, answered 400."""
    try:
        hull = db.hull(chemsys, model=model)
    except QueryError:
        # asked only on the error path: a hull that builds costs no extra query
        missing = no_energies(db, chemsys, model)
        if missing is not None:
            raise missing from None
        raise
    data = plain_tree(hull.to_dict())
    elements = list(data.get("elements") or chemsys.split("-"))
    entries = [_entry(e) for e in data.get("entries", [])]
    return {
        "chemsys": data.get("chemsys", chemsys),
        "elements": elements,
        "model": data.get("model"),
        "entries": entries,
        "stable": [e for e in entries if e["stable"]],
        "plot": plot_points(elements, entries),
        "hull": {"references": data.get("references", {})},
    }
