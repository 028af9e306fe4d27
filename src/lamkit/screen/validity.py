"""Validity rules of a screening: each failing rule gives its own reason.

Rules, cheapest first (the first that fails is the reason):

=================  ==========================================================================
``sites``          at least one site and at most ``max_sites``
``elements``       atomic numbers are real elements (1..118)
``periodic``       periodic in all three directions (a crystal)
``finite``         cell and positions are finite numbers
``volume``         a non-degenerate cell: ``|det| > 1e-6`` Å^3 (left-handed cells are valid)
``volume/atom``    ``lo <= |det| / nsites <= hi`` Å^3/atom (default 1..200)
``type map``       every element in the potential's type map (skipped when it has none)
``database``       every element has an elemental reference in the database (for the hull)
``charge``         SMACT charge neutrality (optional, off by default)
``distance``       shortest interatomic distance >= ``min_distance`` Å (default 0.5), periodic
                   images included (an atom near its own image counts)
=================  ==========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from ase.data import chemical_symbols

from .config import ScreenConfig, ScreenError

if TYPE_CHECKING:
    from ase import Atoms


class Validator:
    """Checks structures against the rules of ``config``.

    Args:
        config: the screening settings (thresholds and which optional rules are on).
        type_map: element symbols the potential knows, or None (rule skipped, noted).
        db_elements: elements with an elemental reference in the database, or None (rule
            skipped, noted).
    """

    def __init__(
        self,
        config: ScreenConfig,
        type_map: Sequence[str] | None = None,
        db_elements: Sequence[str] | None = None,
    ):
        self.config = config
        self.notes: list[str] = []  # rules that are skipped, and why
        self.type_map = None
        if config.check_type_map:
            if type_map is None:
                self.notes.append(
                    "type-map rule skipped: the potential does not declare its elements"
                )
            else:
                self.type_map = frozenset(type_map)
        self.db_elements = None
        if config.check_db_elements and db_elements is not None:
            self.db_elements = frozenset(db_elements)
        if config.charge_neutrality:
            try:
                import smact.screening  # noqa: F401
            except ImportError as exc:
                raise ScreenError(
                    f"charge_neutrality needs the smact package (pip install smact): {exc}"
                ) from None

    def reason(self, atoms: Atoms) -> str | None:
        """Why ``atoms`` is not a valid candidate, or None if every rule passes."""
        failed = self.check(atoms)
        return None if failed is None else failed[1]

    def check(self, atoms: Atoms) -> tuple[str, str] | None:
        """(rule, reason) of the first rule ``atoms`` fails (rules: see the module docstring),
        or None if it passes them all."""
        c = self.config
        n = len(atoms)
        if n == 0:
            return "sites", "structure has no sites"
        if n > c.max_sites:
            return "sites", f"structure has {n} sites; at most {c.max_sites} are screened"
        numbers = np.asarray(atoms.numbers)
        bad = sorted({int(z) for z in numbers if not 1 <= z <= 118})
        if bad:
            return "elements", f"unknown element(s): atomic numbers {bad}; expected 1 (H)..118 (Og)"
        if not np.all(atoms.pbc):
            return "periodic", (
                f"not periodic in all three directions (pbc={[bool(p) for p in atoms.pbc]}); "
                "a crystal needs a cell"
            )
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        pos = np.asarray(atoms.positions, dtype=np.float64)
        if not np.isfinite(cell).all():
            return "finite", "cell contains NaN or infinite values"
        if not np.isfinite(pos).all():
            return "finite", "coordinates contain NaN or infinite values"
        volume = abs(float(np.linalg.det(cell)))
        if not volume > 1e-6:
            return "volume", f"degenerate cell: volume {volume:.3g} Å^3 (coplanar cell vectors)"
        lo, hi = c.volume_per_atom
        vpa = volume / n
        if not lo <= vpa <= hi:
            return "volume/atom", (
                f"volume per atom {vpa:.4g} Å^3 outside the accepted {lo:g}..{hi:g} Å^3/atom"
            )
        symbols = sorted({chemical_symbols[z] for z in numbers})
        if self.type_map is not None:
            missing = [el for el in symbols if el not in self.type_map]
            if missing:
                return "type map", (
                    f"element(s) {', '.join(missing)} not in the model's type map "
                    f"({', '.join(sorted(self.type_map))})"
                )
        if self.db_elements is not None:
            missing = [el for el in symbols if el not in self.db_elements]
            if missing:
                return "database", (
                    f"element(s) {', '.join(missing)} have no elemental reference in the "
                    "database: energy above hull cannot be judged"
                )
        if c.charge_neutrality and not _charge_neutral(formula := _formula(atoms)):
            return "charge", f"not charge-neutral (SMACT): no oxidation states of {formula} give 0"
        why = _distance_reason(cell, pos, c.min_distance)
        return None if why is None else ("distance", why)


def _formula(atoms: Atoms) -> str:
    from ..db.records import reduced_formula

    return reduced_formula(atoms.get_chemical_symbols())


@lru_cache(maxsize=4096)
def _charge_neutral(formula: str) -> bool:
    import warnings

    from smact.screening import smact_validity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # smact warns about elements without data
        return bool(smact_validity(formula))


def cell_heights(cell: np.ndarray) -> np.ndarray:
    """Distances [3] Å between opposite faces of the cell (|det| / area of each face)."""
    volume = abs(float(np.linalg.det(cell)))
    areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    return volume / areas


def _distance_reason(cell: np.ndarray, pos: np.ndarray, dmin: float) -> str | None:
    from ase.geometry import minkowski_reduce

    try:  # the same lattice in its shortest basis: images within dmin are then few and near
        rcell, _ = minkowski_reduce(cell)
    except Exception as exc:  # noqa: BLE001 - ASE gives up on pathological cells
        return f"degenerate cell: it cannot be reduced ({type(exc).__name__}: {exc})"
    heights = cell_heights(rcell)
    if heights.min() < 1e-3:
        return f"degenerate cell: lattice planes only {heights.min():.3g} Å apart"
    frac = np.linalg.solve(rcell.T, pos.T).T
    pos = (frac - np.floor(frac)) @ rcell
    d, i, j = min_distance_pair(rcell, pos, dmin)
    if d < dmin:
        where = f"site {i} and its own periodic image" if i == j else f"sites {i} and {j}"
        return f"atoms too close: {d:.3f} Å between {where} (minimum {dmin:g} Å)"
    return None


def min_distance_pair(cell: np.ndarray, pos: np.ndarray, cutoff: float) -> tuple[float, int, int]:
    """Shortest distance (Å) below ``cutoff`` between two sites, periodic images included, and
    the two site indices; ``(inf, -1, -1)`` when no pair is that close."""
    from vesin import NeighborList

    nl = NeighborList(cutoff=float(cutoff), full_list=False)
    i, j, d = nl.compute(pos, cell, periodic=True, quantities="ijd")
    if len(d) == 0:
        return math.inf, -1, -1
    k = int(np.argmin(d))
    return float(d[k]), int(i[k]), int(j[k])
