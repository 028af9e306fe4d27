"""Pydantic models of the service's responses (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Error(BaseModel):
    detail: str = Field(description="What was wrong with the request, naming the field.")


class StructureSummary(BaseModel):
    id: int
    formula: str = Field(description="Reduced formula, e.g. 'NaCl'.")
    elements: list[str]
    chemsys: str = Field(description="Elements joined by '-' in alphabetical order, e.g. 'Cl-Na'.")
    nsites: int = Field(description="Sites in the stored cell.")
    volume: float = Field(description="Cell volume, Å^3.")
    density: float | None = Field(None, description="g/cm^3.")
    spacegroup_number: int | None = None
    spacegroup_symbol: str | None = None
    energy: float | None = Field(None, description="Total energy of the cell, eV.")
    energy_per_atom: float | None = Field(None, description="eV/atom.")
    model: str | None = Field(None, description="Model or method that computed the energy.")
    formation_energy_per_atom: float | None = Field(None, description="eV/atom.")
    e_above_hull: float | None = Field(None, description="eV/atom above the convex hull.")
    submitter: str | None = None
    source: str | None = None
    submitted: str | None = Field(None, description="ISO 8601, UTC.")
    tags: list[str] = []


class StructurePage(BaseModel):
    records: list[StructureSummary]
    next_cursor: str | None = Field(
        None, description="Pass as 'cursor' to get the next page; null on the last page."
    )
    limit: int = Field(description="Page size used (the request's limit, capped).")
    count: int | None = Field(None, description="All matches, when asked with count=true.")


class Lattice(BaseModel):
    matrix: list[list[float]] = Field(description="Rows are the cell vectors a, b, c in Å.")
    a: float
    b: float
    c: float
    alpha: float = Field(description="Degrees.")
    beta: float
    gamma: float
    volume: float


class Site(BaseModel):
    index: int
    species: str
    frac_coords: list[float]
    cart_coords: list[float] = Field(description="Å.")
    wyckoff: str | None = None


class Symmetry(BaseModel, extra="allow"):
    number: int | None = None
    symbol: str | None = None
    crystal_system: str | None = None
    point_group: str | None = None
    hall: str | None = None
    wyckoffs: list[str] = []


class Cell(BaseModel):
    lattice: Lattice
    sites: list[Site]
    nsites: int


class DecompositionPart(BaseModel):
    id: int | None = None
    formula: str | None = None
    fraction: float | None = Field(None, description="Fraction of the atoms.")


class Labels(BaseModel):
    forces: list[list[float]] | None = Field(None, description="[nsites][3], eV/Å.")
    stress: list[list[float]] | None = Field(
        None, description="3x3, eV/Å^3, ASE sign (deepmd virial = -stress * volume)."
    )
    magmoms: list[float] | None = Field(None, description="[nsites], Bohr magnetons.")


class StructureDetail(StructureSummary):
    lattice: Lattice
    sites: list[Site]
    labels: Labels = Field(
        default_factory=Labels, description="Training labels stored with the energy, if any."
    )
    symmetry: Symmetry
    conventional: Cell | None = Field(
        None,
        description="The conventional standard cell (pymatgen SpacegroupAnalyzer, symprec 0.1); "
        "null when the cell cannot be analysed.",
    )
    decomposition: list[DecompositionPart] = Field(
        [], description="Stable phases the structure would decompose into (empty on the hull)."
    )
    downloads: dict[str, str] = Field(description="Format -> URL of the file download.")
    styles: dict[str, dict[str, Any]] = Field(
        {}, description="Element -> {color (Jmol, hex), radius (covalent, Å)} for pictures."
    )


class HullEntry(BaseModel):
    id: int | None = None
    formula: str
    composition: dict[str, float] = Field(description="Element -> atomic fraction.")
    energy_per_atom: float | None = None
    formation_energy_per_atom: float | None = None
    e_above_hull: float | None = None
    stable: bool


class HullResponse(BaseModel):
    chemsys: str
    elements: list[str]
    model: str | None = None
    stable: list[HullEntry] = Field(description="Entries on the hull.")
    entries: list[HullEntry] = Field(description="Every record of the system and its subsystems.")
    plot: dict[str, Any] = Field(
        description="Plot-ready data: for a binary system 'x' is the atomic fraction of the "
        "second element and 'y' the formation energy per atom; 'hull' lists the "
        "points of the lower hull in order. Ternary: 'x', 'y' in the triangle, 'z' the "
        "formation energy, 'lines' the tie lines [[x1, y1], [x2, y2]] between stable points."
    )
    hull: dict[str, Any] | None = Field(None, description="The core's own hull dict.")


class ImportResult(BaseModel):
    added: list[int] = Field(description="Ids of the new records.")
    duplicates: int = Field(description="Inputs already in the database (not added again).")
    rejected: list[dict[str, str]] = Field(description="[{where, reason}] of refused inputs.")
    submitter: str


class Deleted(BaseModel):
    deleted: int


class Health(BaseModel):
    status: str
    records: int | None = None
    database: str | None = None
    version: str | None = None


_VECTORS = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
}
#: JSON schema of one posted record (POST /structures); the endpoint checks it in full.
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "{'lattice', 'species', 'frac_coords' (or 'cart_coords')} or {'structure'}, "
    "plus optional 'energy', 'model', 'source', 'tags'.",
    "properties": {
        "lattice": {**_VECTORS, "minItems": 3, "maxItems": 3, "description": "Rows a, b, c; Å."},
        "species": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "frac_coords": {**_VECTORS, "minItems": 1, "description": "Fractional coordinates."},
        "cart_coords": {**_VECTORS, "minItems": 1, "description": "Cartesian coordinates; Å."},
        "structure": {
            "type": ["object", "string"],
            "description": "A pymatgen Structure dict, or the record JSON of a download.",
        },
        "energy": {"type": ["number", "null"], "description": "Total energy of the cell; eV."},
        "model": {"type": ["string", "null"], "maxLength": 255},
        "source": {"type": ["string", "null"], "maxLength": 1024},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}},
    },
}
#: JSON schema of the body of POST /structures: one record, a list, or {"records": [...]}.
POST_BODY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        RECORD_SCHEMA,
        {"type": "array", "items": RECORD_SCHEMA, "minItems": 1},
        {
            "type": "object",
            "required": ["records"],
            "properties": {"records": {"type": "array", "items": RECORD_SCHEMA, "minItems": 1}},
        },
    ]
}
