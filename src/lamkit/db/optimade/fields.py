"""The OPTIMADE ``structures`` properties lamkit serves: their types, descriptions, units,
sortability, and how each is computed from a ``records`` row.

Standard properties follow OPTIMADE 1.2; lamkit's own carry the provider prefix ``_lamkit_``.
Every structure is an ordered, fully periodic crystal: one species per element, no partial
occupancy, ``structure_features`` empty, ``dimension_types`` [1, 1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone
from typing import Any

import numpy as np

from ..records import public_id
from .formulas import anonymous_of_species, reduced_of_species

#: Provider prefix of lamkit's own properties (``_lamkit_...``).
PREFIX = "lamkit"
API_VERSION = "1.2.0"


@dataclass(frozen=True)
class Prop:
    """One served property. ``column``: the ``records`` column it sorts on (None: not
    sortable); ``type``: OPTIMADE data type."""

    type: str
    description: str
    unit: str | None = None
    column: str | None = None


PROPERTIES: dict[str, Prop] = {
    "id": Prop("string", "The record's id, 'lam-<n>' (never reused).", column="id"),
    "type": Prop("string", "Always 'structures'."),
    "immutable_id": Prop(
        "string",
        "SHA-256 of the structure, energy, model and source (the stored content hash).",
        column="content_hash",
    ),
    "last_modified": Prop("timestamp", "When the record was submitted (UTC).", column="submitted"),
    "elements": Prop("list", "Element symbols, sorted alphabetically."),
    "nelements": Prop("integer", "Number of distinct elements.", column="nelements"),
    "elements_ratios": Prop("list", "Fraction of the sites of each element in 'elements'."),
    "chemical_formula_descriptive": Prop(
        "string", "pymatgen's reduced formula, e.g. 'Fe2O3'.", column="formula"
    ),
    "chemical_formula_reduced": Prop(
        "string", "Reduced formula, symbols in alphabetical order, e.g. 'Fe2O3', 'ClNa'."
    ),
    "chemical_formula_anonymous": Prop(
        "string", "Reduced formula with A, B, ... by decreasing count, e.g. 'A3B2'."
    ),
    "dimension_types": Prop("list", "Periodicity along each lattice vector: always [1, 1, 1]."),
    "nperiodic_dimensions": Prop("integer", "Number of periodic dimensions: always 3."),
    "lattice_vectors": Prop("list", "Lattice vectors a, b, c (rows).", unit="Ao"),
    "cartesian_site_positions": Prop("list", "Cartesian site positions.", unit="Ao"),
    "nsites": Prop("integer", "Number of sites in the cell.", column="nsites"),
    "species": Prop("list", "One species per element: name and chemical symbol equal."),
    "species_at_sites": Prop("list", "Species name of each site."),
    "structure_features": Prop("list", "Always empty: ordered, periodic structures."),
    f"_{PREFIX}_energy": Prop("float", "Total energy.", unit="eV", column="energy"),
    f"_{PREFIX}_energy_per_atom": Prop(
        "float", "Total energy per atom (eV/atom).", unit="eV", column="energy_per_atom"
    ),
    f"_{PREFIX}_formation_energy_per_atom": Prop(
        "float",
        "Formation energy per atom (eV/atom) against the model's elemental references.",
        unit="eV",
        column="formation_energy_per_atom",
    ),
    f"_{PREFIX}_e_above_hull": Prop(
        "float",
        "Energy above the convex hull of the record's chemical system and model (eV/atom).",
        unit="eV",
        column="e_above_hull",
    ),
    f"_{PREFIX}_spacegroup_number": Prop(
        "integer",
        "International space group number (spglib, symprec 0.1 Å).",
        column="spacegroup_number",
    ),
    f"_{PREFIX}_spacegroup_symbol": Prop(
        "string", "Hermann-Mauguin space group symbol (spglib).", column="spacegroup_symbol"
    ),
    f"_{PREFIX}_model": Prop(
        "string", "The model (or method) that computed the energy.", column="model"
    ),
    f"_{PREFIX}_volume": Prop("float", "Cell volume.", unit="Ao3", column="volume"),
    f"_{PREFIX}_density": Prop("float", "Density.", unit="g/cm3", column="density"),
}

#: Properties sent when ``response_fields`` is not given (all of them).
ATTRIBUTES = tuple(k for k in PROPERTIES if k not in ("id", "type"))


def sortable(name: str) -> bool:
    return PROPERTIES[name].column is not None


def attributes_of(m: Any) -> dict[str, Any]:
    """Every attribute of the record in row mapping ``m`` (a ``records`` row's ``_mapping``)."""
    species = m["species"].split()
    elements = m["elements"].split()
    n = len(species)
    lattice = np.frombuffer(m["lattice"], dtype="<f8").reshape(3, 3)
    frac = np.frombuffer(m["frac_coords"], dtype="<f8").reshape(-1, 3)
    submitted = m["submitted"]
    if submitted.tzinfo is None:
        submitted = submitted.replace(tzinfo=timezone.utc)
    p = f"_{PREFIX}_"
    return {
        "immutable_id": m["content_hash"],
        "last_modified": submitted.isoformat().replace("+00:00", "Z"),
        "elements": elements,
        "nelements": len(elements),
        "elements_ratios": [species.count(el) / n for el in elements],
        "chemical_formula_descriptive": m["formula"],
        "chemical_formula_reduced": reduced_of_species(species),
        "chemical_formula_anonymous": anonymous_of_species(species),
        "dimension_types": [1, 1, 1],
        "nperiodic_dimensions": 3,
        "lattice_vectors": lattice.tolist(),
        "cartesian_site_positions": (frac @ lattice).tolist(),
        "nsites": n,
        "species": [
            {"name": el, "chemical_symbols": [el], "concentration": [1.0]} for el in elements
        ],
        "species_at_sites": species,
        "structure_features": [],
        p + "energy": m["energy"],
        p + "energy_per_atom": m["energy_per_atom"],
        p + "formation_energy_per_atom": m["formation_energy_per_atom"],
        p + "e_above_hull": m["e_above_hull"],
        p + "spacegroup_number": m["spacegroup_number"],
        p + "spacegroup_symbol": m["spacegroup_symbol"],
        p + "model": m["model"],
        p + "volume": m["volume"],
        p + "density": m["density"],
    }


def resource_of(m: Any, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The OPTIMADE structure resource of a row; ``fields``: the attributes to include (None:
    all; a standard property lamkit lacks comes back as null)."""
    attrs = attributes_of(m)
    if fields is not None:
        attrs = {k: attrs.get(k) for k in fields if k not in ("id", "type")}
    return {"id": public_id(int(m["id"])), "type": "structures", "attributes": attrs}
