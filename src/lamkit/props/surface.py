"""Surface energies of low-index facets: slabs cut from the bulk crystal with
:func:`ase.build.surface`, vacuum along the normal, ions relaxed at fixed cell (all slabs in
one batched relaxation).

``gamma = (E_slab - N_slab e_bulk) / (2 A)`` in J/m^2, ``e_bulk`` the energy per atom of the
input crystal (taken as relaxed) and ``A`` the slab's in-plane area (two surfaces).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import surface
from ase.calculators.calculator import BaseCalculator

from .common import EV_A2_TO_J_M2, PropsError, check_periodic, relax_many, single_points

LOW_INDEX = ((1, 0, 0), (1, 1, 0), (1, 1, 1))


@dataclass
class SurfaceResult:
    """Surface energies (J/m^2) by Miller index, with slab energies (eV), the matching bulk
    references (eV) and the relaxed slabs."""

    millers: list[tuple[int, int, int]]
    gamma: list[float]
    energies: list[float]
    references: list[float]
    slabs: list[Atoms]

    @staticmethod
    def label(miller: Sequence[int]) -> str:
        return "".join(str(int(m)) for m in miller)

    def to_result_json(self) -> dict:
        """APEX's surface ``result.json``: facet -> [gamma J/m^2, E_slab/atom eV,
        e_bulk eV/atom]."""
        return {
            self.label(m): [g, e / len(s), r / len(s)]
            for m, g, e, r, s in zip(
                self.millers, self.gamma, self.energies, self.references, self.slabs
            )
        }

    def summary(self) -> dict:
        return {self.label(m): g for m, g in zip(self.millers, self.gamma)}


def make_slab(atoms: Atoms, miller: Sequence[int], min_thickness: float, vacuum: float) -> Atoms:
    """A slab of ``atoms`` with the ``miller`` facet on both sides, at least ``min_thickness``
    Å thick, with ``vacuum`` Å of vacuum on each side (periodic in all three directions)."""
    hkl = tuple(int(m) for m in miller)
    if len(hkl) != 3 or not any(hkl):
        raise PropsError(f"surface: a Miller index is three integers, not all 0; got {miller}")
    atoms = _clean(atoms, hkl)
    one = surface(atoms, hkl, 1, vacuum=None, periodic=True)
    normal = np.cross(one.cell[0], one.cell[1])
    normal /= np.linalg.norm(normal)
    period = abs(float(np.dot(one.cell[2], normal)))
    layers = max(1, int(np.ceil(min_thickness / period)))
    slab = surface(atoms, hkl, layers, vacuum=vacuum, periodic=True)
    slab.calc = None
    slab.set_constraint()
    z = slab.get_positions() @ normal
    if z.max() - z.min() > layers * period - 1e-3:  # an atom wrapped onto the far side
        raise PropsError(f"surface {hkl}: the slab was not cut in one piece; check the cell")
    return slab


def _clean(atoms: Atoms, hkl: tuple[int, int, int], shift: float = 1e-3) -> Atoms:
    """A copy moved by ``shift`` Å along the facet normal: ``ase.build.surface`` wraps atoms
    lying on a layer boundary up to round-off onto the far side of the slab, and the shift
    takes every atom off the boundaries (it is far below a layer spacing)."""
    out = atoms.copy()
    out.calc = None
    out.set_constraint()
    normal = np.asarray(hkl, dtype=np.float64) @ out.cell.reciprocal()
    out.positions += shift * normal / np.linalg.norm(normal)
    out.wrap()
    return out


def compute_surface(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    millers: Sequence[Sequence[int]] = LOW_INDEX,
    min_thickness: float = 10.0,
    vacuum: float = 10.0,
    relax: bool = True,
    fmax: float = 0.005,
) -> SurfaceResult:
    """Surface energies of the ``millers`` facets of ``atoms`` (a conventional cell, so that
    Miller indices refer to it)."""
    check_periodic(atoms, "surface")
    if min_thickness <= 0 or vacuum <= 0:
        raise PropsError(
            f"surface: min_thickness and vacuum must be positive, got {min_thickness}, {vacuum}"
        )
    e_bulk = single_points([atoms], calc)[0] / len(atoms)
    hkls = [tuple(int(m) for m in miller) for miller in millers]
    slabs = [make_slab(atoms, h, min_thickness, vacuum) for h in hkls]
    results = relax_many(
        slabs, calc, cell_filter="fixed", fmax=fmax, steps=2000 if relax else 0, what="surface slab"
    )
    gamma, energies, refs = [], [], []
    for slab, res in zip(slabs, results):
        area = float(np.linalg.norm(np.cross(slab.cell[0], slab.cell[1])))
        ref = e_bulk * len(slab)
        gamma.append((res.energy - ref) / (2.0 * area) * EV_A2_TO_J_M2)
        energies.append(res.energy)
        refs.append(ref)
    return SurfaceResult(hkls, gamma, energies, refs, [r.atoms for r in results])
