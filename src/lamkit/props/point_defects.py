"""Vacancy and interstitial formation energies in a supercell, ions relaxed (cell fixed by
default), all defect cells in one batched relaxation.

``E_f = E_defect - (N_defect / N_bulk) E_bulk`` with ``E_bulk`` the energy of the perfect
supercell (the input structure is taken as relaxed). One vacancy per element (its first atom);
interstitials at given fractional sites of the supercell, or at the point of the cell farthest
from every atom (octahedral in fcc, tetrahedral in bcc).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.data import atomic_numbers

from .common import PropsError, check_periodic, relax_many, single_points


@dataclass
class DefectResult:
    """Formation energies (eV) by defect label, with the defect cell's energy and the matching
    perfect-cell reference (eV), and the relaxed defect cells."""

    kind: str  # "vacancy" | "interstitial"
    labels: list[str]
    formation: list[float]
    energies: list[float]
    references: list[float]
    structures: list[Atoms]

    def to_result_json(self) -> dict:
        """APEX's vacancy/interstitial ``result.json``: label -> [E_f, E_defect, E_reference]
        (eV)."""
        return {
            lab: [f, e, r]
            for lab, f, e, r in zip(self.labels, self.formation, self.energies, self.references)
        }

    def summary(self) -> dict:
        return dict(zip(self.labels, self.formation))


def _supercell(atoms: Atoms, supercell: Sequence[int], what: str) -> Atoms:
    check_periodic(atoms, what)
    reps = tuple(int(n) for n in supercell)
    if len(reps) != 3 or min(reps) < 1:
        raise PropsError(f"{what}: supercell must be three positive integers, got {supercell}")
    out = atoms.copy() * reps
    out.calc = None
    out.set_constraint()
    return out


def farthest_point(atoms: Atoms, grid: int = 24) -> np.ndarray:
    """Fractional coordinates of the point of the periodic cell farthest from every atom
    (a grid search, refined on a finer grid around the best point)."""
    cell = atoms.get_cell().array
    frac_atoms = atoms.get_scaled_positions(wrap=True)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])

    def distance(frac: np.ndarray) -> np.ndarray:
        d = frac[:, None, None, :] - frac_atoms[None, :, None, :] + shifts[None, None]
        d -= np.round(d - shifts[None, None])  # nearest image, then the 27 neighbours
        return np.linalg.norm(d @ cell, axis=-1).min(axis=(1, 2))

    axis = (np.arange(grid) + 0.0) / grid
    pts = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    chunk = max(1, 200_000 // (27 * len(atoms)))  # bounded memory for large cells
    dist = np.concatenate([distance(pts[k : k + chunk]) for k in range(0, len(pts), chunk)])
    best = pts[np.argmax(dist)]
    for step in (0.5 / grid, 0.1 / grid):
        local = best + np.stack(np.meshgrid(*[np.linspace(-step, step, 5)] * 3), -1).reshape(-1, 3)
        best = local[np.argmax(distance(local))]
    return best % 1.0


def _formation(
    kind: str,
    calc: BaseCalculator,
    bulk_cell: Atoms,
    cells: list[Atoms],
    labels: list[str],
    relax: bool,
    cell_filter: str,
    fmax: float,
) -> DefectResult:
    e_bulk = single_points([bulk_cell], calc)[0]
    results = relax_many(
        cells, calc, cell_filter=cell_filter, fmax=fmax, steps=2000 if relax else 0, what=kind
    )
    n = len(bulk_cell)
    energies = [r.energy for r in results]
    refs = [e_bulk * len(c) / n for c in cells]
    return DefectResult(
        kind=kind,
        labels=labels,
        formation=[e - r for e, r in zip(energies, refs)],
        energies=energies,
        references=refs,
        structures=[r.atoms for r in results],
    )


def compute_vacancy(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    supercell: Sequence[int] = (2, 2, 2),
    relax: bool = True,
    cell_filter: str = "fixed",
    fmax: float = 0.005,
) -> DefectResult:
    """Vacancy formation energy of each element of ``atoms`` (eV) in a ``supercell``."""
    bulk_cell = _supercell(atoms, supercell, "vacancy")
    symbols = bulk_cell.get_chemical_symbols()
    cells, labels = [], []
    for sym in dict.fromkeys(symbols):
        index = symbols.index(sym)
        cell = bulk_cell.copy()
        del cell[index]
        cells.append(cell)
        labels.append(f"vac_{sym}_{index}")
    return _formation("vacancy", calc, bulk_cell, cells, labels, relax, cell_filter, fmax)


def compute_interstitial(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    supercell: Sequence[int] = (2, 2, 2),
    element: str | None = None,
    sites: Sequence[Sequence[float]] | None = None,
    relax: bool = True,
    cell_filter: str = "fixed",
    fmax: float = 0.005,
) -> DefectResult:
    """Formation energy (eV) of a self-interstitial (``element``, default: the first element of
    ``atoms``) at each of ``sites`` (fractional coordinates of the supercell; default: the
    largest void)."""
    bulk_cell = _supercell(atoms, supercell, "interstitial")
    element = element or bulk_cell.get_chemical_symbols()[0]
    if element not in atomic_numbers:
        raise PropsError(f"interstitial: unknown element {element!r}")
    if sites is None:  # the largest void of the input cell, in the supercell's coordinates
        sites = [farthest_point(atoms) / np.asarray(supercell, dtype=np.float64)]
    cells, labels = [], []
    for k, site in enumerate(sites):
        frac = np.asarray(site, dtype=np.float64)
        if frac.shape != (3,):
            raise PropsError(f"interstitial: site {k} must be 3 fractional coordinates, got {site}")
        cell = bulk_cell.copy()
        cell.append(element)
        cell.positions[-1] = frac @ cell.get_cell().array
        cells.append(cell)
        labels.append(f"int_{element}_{'_'.join(f'{x:.3f}' for x in frac)}")
    return _formation("interstitial", calc, bulk_cell, cells, labels, relax, cell_filter, fmax)
