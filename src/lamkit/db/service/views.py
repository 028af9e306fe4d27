"""JSON views of records for the service: the summary row of a search and the full record.

The full record adds what a person reading one structure wants: lattice parameters, the sites
with their Wyckoff letters, the symmetry, the energy above the hull with its decomposition, and
links to the downloads.
"""

from __future__ import annotations

import logging
import math
import warnings
from datetime import datetime
from typing import Any

from .formats import DOWNLOADS

log = logging.getLogger(__name__)

SUMMARY_FIELDS = (
    "id",
    "formula",
    "elements",
    "chemsys",
    "nsites",
    "volume",
    "density",
    "spacegroup_number",
    "spacegroup_symbol",
    "energy",
    "energy_per_atom",
    "model",
    "formation_energy_per_atom",
    "e_above_hull",
    "submitter",
    "source",
    "submitted",
    "tags",
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def plain_tree(value: Any) -> Any:
    """Nested dicts/lists with datetimes, numpy scalars and tuples made JSON-ready."""
    if isinstance(value, dict):
        return {str(k): plain_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain_tree(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return _plain(value)


#: per-value counts of the core's stats -> the count of records without a value
_UNSET_COUNTS = {"by_model": "without_model", "by_submitter": "without_submitter"}


def stats_view(stats: dict[str, Any]) -> dict[str, Any]:
    """The core's ``CrystalDB.stats()`` made JSON-ready. Its per-model and per-submitter counts
    key records without one by None, which JSON would turn into the string "None" (and clash
    with a model of that name): those counts move to ``without_model`` and
    ``without_submitter`` (0 when every record has one)."""
    out = dict(stats)
    for key, unset in _UNSET_COUNTS.items():
        counts = dict(out.get(key) or {})
        out[unset] = int(counts.pop(None, 0) or 0)
        out[key] = counts
    return plain_tree(out)


def summary(record: Any) -> dict[str, Any]:
    """The search-result row of a record."""
    out = {name: _plain(getattr(record, name, None)) for name in SUMMARY_FIELDS}
    if isinstance(out["elements"], str):
        out["elements"] = out["elements"].split()
    out["tags"] = list(out["tags"] or [])
    return out


def lattice_view(structure: Any) -> dict[str, Any]:
    lat = structure.lattice
    return {
        "matrix": [[float(x) for x in row] for row in lat.matrix],
        "a": float(lat.a),
        "b": float(lat.b),
        "c": float(lat.c),
        "alpha": float(lat.alpha),
        "beta": float(lat.beta),
        "gamma": float(lat.gamma),
        "volume": float(lat.volume),
    }


def symmetry_of(db: Any, record: Any) -> dict[str, Any]:
    """Space group, crystal system and per-site Wyckoff letters (spglib, via the core's
    ``db.symmetry`` when it has one, completed by pymatgen's analyser)."""
    sym: dict[str, Any] = {}
    if hasattr(db, "symmetry"):
        try:
            sym = dict(db.symmetry(record.id) or {})
        except Exception as exc:  # noqa: BLE001 - the page still shows pymatgen's analysis
            log.warning("CrystalDB.symmetry(%s) failed: %s: %s", record.id, type(exc).__name__, exc)
    need = {"number", "symbol", "crystal_system", "wyckoffs", "point_group"} - set(sym)
    if need:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sga = SpacegroupAnalyzer(record.structure, symprec=0.1)
                data = sga.get_symmetry_dataset()
                found = {
                    "number": int(sga.get_space_group_number()),
                    "symbol": sga.get_space_group_symbol(),
                    "crystal_system": sga.get_crystal_system(),
                    "point_group": sga.get_point_group_symbol(),
                    "hall": getattr(data, "hall", None),
                    "wyckoffs": list(getattr(data, "wyckoffs", []) or []),
                }
        except Exception:  # noqa: BLE001 - spglib fails on degenerate cells; say so, no 500
            found = {
                "number": None,
                "symbol": None,
                "crystal_system": None,
                "point_group": None,
                "hall": None,
                "wyckoffs": [],
            }
        for key in need | {"hall"}:
            sym.setdefault(key, found.get(key))
    return {k: _plain(v) for k, v in sym.items() if isinstance(k, str)}


def conventional_view(structure: Any) -> dict[str, Any] | None:
    """The conventional standard cell (pymatgen's ``SpacegroupAnalyzer``, symprec 0.1) with its
    lattice and sites, or None when spglib cannot analyse the cell."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(structure, symprec=0.1)
            cell = sga.get_conventional_standard_structure()
            data = SpacegroupAnalyzer(cell, symprec=0.1).get_symmetry_dataset()
            wyckoffs = list(getattr(data, "wyckoffs", []) or [])
    except Exception as exc:  # noqa: BLE001 - degenerate cells: the stored cell still shows
        log.info("no conventional cell: %s: %s", type(exc).__name__, exc)
        return None
    return {
        "lattice": lattice_view(cell),
        "sites": sites_view(cell, wyckoffs),
        "nsites": len(cell),
    }


def sites_view(structure: Any, wyckoffs: list[str] | None) -> list[dict[str, Any]]:
    out = []
    for i, site in enumerate(structure):
        out.append(
            {
                "index": i,
                "species": site.specie.symbol
                if hasattr(site.specie, "symbol")
                else str(site.specie),
                "frac_coords": [float(x) for x in site.frac_coords],
                "cart_coords": [float(x) for x in site.coords],
                "wyckoff": wyckoffs[i] if wyckoffs and i < len(wyckoffs) else None,
            }
        )
    return out


def decomposition_view(decomposition: Any) -> list[dict[str, Any]]:
    """Decomposition products as ``[{id, formula, fraction}]`` whatever shape the core gives
    (a mapping of record or id to fraction, or a list of dicts)."""
    if not decomposition:
        return []
    items = decomposition.items() if isinstance(decomposition, dict) else decomposition
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(
                {
                    "id": _plain(item.get("id")),
                    "formula": item.get("formula"),
                    "fraction": _plain(item.get("fraction", item.get("amount"))),
                }
            )
            continue
        key, fraction = item
        if isinstance(key, int):
            out.append({"id": key, "formula": None, "fraction": float(fraction)})
        else:
            out.append(
                {
                    "id": _plain(getattr(key, "id", None)),
                    "formula": getattr(key, "formula", str(key)),
                    "fraction": float(fraction),
                }
            )
    return out


def element_styles(species: list[str]) -> dict[str, dict[str, Any]]:
    """Jmol colour (hex) and covalent radius (Å) of each element, for the structure picture."""
    from ase.data import atomic_numbers, covalent_radii
    from ase.data.colors import jmol_colors

    out = {}
    for sym in sorted(set(species)):
        z = atomic_numbers.get(sym, 0)
        rgb = jmol_colors[z] if z < len(jmol_colors) else (0.6, 0.6, 0.6)
        out[sym] = {
            "color": "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgb),
            "radius": float(covalent_radii[z]) if z < len(covalent_radii) else 1.0,
        }
    return out


def detail(db: Any, record: Any, base_url: str) -> dict[str, Any]:
    """The full record: summary fields, lattice, sites, symmetry, hull, downloads."""
    out = summary(record)
    structure = record.structure
    out["lattice"] = lattice_view(structure)
    out["symmetry"] = symmetry_of(db, record)
    out["sites"] = sites_view(structure, out["symmetry"].get("wyckoffs"))
    out["conventional"] = conventional_view(structure)
    out["styles"] = element_styles([site["species"] for site in out["sites"]])
    out["labels"] = {
        k: None if getattr(record, k, None) is None else getattr(record, k).tolist()
        for k in ("forces", "stress", "magmoms")
    }
    out["decomposition"] = []
    if record.energy is not None and hasattr(db, "e_above_hull"):
        from ..errors import QueryError

        try:
            ehull, decomposition = db.e_above_hull(structure, record.energy, model=record.model)
        except QueryError:  # no hull for this system (an element lacks a reference)
            ehull, decomposition = None, []
        if out["e_above_hull"] is None:
            out["e_above_hull"] = _plain(ehull)
        out["decomposition"] = decomposition_view(decomposition)
    out["downloads"] = {
        fmt: f"{base_url}/structures/{record.id}/file?format={fmt}" for fmt in DOWNLOADS
    }
    return out
