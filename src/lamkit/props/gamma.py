"""Generalized stacking-fault energy lines: fcc (111)[11-2] and bcc (110)[111].

A crystal of an element is oriented with the slip direction along x and the slip-plane normal
along z, periodic in all three directions; the displacement ``u`` is applied by tilting the
cell vector c by ``u`` along x, which leaves one fault at the periodic boundary per cell
(no free surfaces). ``gamma(u) = (E(u) - E(0)) / A`` in J/m^2. With ``relax`` the atoms move
along z only (ASE's FIRE with FixCartesian: the batched relaxer takes no constraints).

``u`` is a fraction of the slip period (fcc: the lattice vector a/2 [11-2], three partial
Burgers vectors; bcc: a/2 [111]). Intrinsic SFE: fcc gamma at u = 1/3; unstable SFE: the
largest gamma before it (fcc) or over the line (bcc, at u = 1/2 by symmetry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.constraints import FixCartesian
from ase.lattice.cubic import BodyCenteredCubic, FaceCenteredCubic
from ase.neighborlist import neighbor_list
from ase.optimize import FIRE

from .common import (
    EV_A2_TO_J_M2,
    PropsError,
    check_periodic,
    new_figure,
    save_figure,
    single_points,
)

#: x (slip direction), y, z (slip-plane normal) and the slip period in units of a
SYSTEMS = {
    "fcc": ([[1, 1, -2], [-1, 1, 0], [1, 1, 1]], np.sqrt(6.0) / 2.0),
    "bcc": ([[1, -1, 1], [1, -1, -2], [1, 1, 0]], np.sqrt(3.0) / 2.0),
}
ATOMS_PER_CELL = {"fcc": 4, "bcc": 2}


@dataclass
class GammaResult:
    """The gamma line: ``fractions`` of the slip period, ``gamma`` J/m^2, ``energies`` eV of
    the faulted cells, ``period`` Å; intrinsic (fcc) and unstable SFE in J/m^2."""

    lattice: str
    fractions: np.ndarray
    gamma: np.ndarray
    energies: np.ndarray
    period: float
    intrinsic: float | None
    unstable: float

    def to_result_json(self) -> dict:
        """APEX's gamma ``result.json``: displacement fraction -> [gamma J/m^2, E eV,
        E(0) eV]."""
        e0 = float(self.energies[0])
        return {
            f"{u:.6f}": [float(g), float(e), e0]
            for u, g, e in zip(self.fractions, self.gamma, self.energies)
        }

    def summary(self) -> dict:
        return {"intrinsic_sfe": self.intrinsic, "unstable_sfe": self.unstable}

    def plot(self, path: str | Path) -> Path:
        """gamma(u) with the intrinsic and unstable SFE marked."""
        fig, ax = new_figure()
        ax.plot(self.fractions, self.gamma, "o-")
        title = f"{self.lattice}: unstable SFE {self.unstable:.3f} J/m²"
        if self.intrinsic is not None:
            title += f", intrinsic {self.intrinsic:.3f} J/m²"
            ax.axvline(1.0 / 3.0, color="gray", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"displacement / slip period ({self.period:.3f} Å)")
        ax.set_ylabel("γ (J/m²)")
        return save_figure(fig, path)


def detect_lattice(atoms: Atoms) -> str:
    """ "fcc" or "bcc" from the number of nearest neighbours (12 or 8)."""
    i, d = neighbor_list("id", atoms, 6.0)
    if len(d) == 0:
        raise PropsError("gamma: no neighbours within 6 Å; is this a crystal?")
    counts = np.bincount(i[d < d.min() * 1.05], minlength=len(atoms))
    if np.all(counts == 12):
        return "fcc"
    if np.all(counts == 8):
        return "bcc"
    raise PropsError(
        f"gamma: expected an fcc or bcc crystal of one element (12 or 8 nearest neighbours), "
        f"found {sorted(set(counts.tolist()))}"
    )


def oriented_cell(symbol: str, lattice: str, a: float, min_height: float) -> Atoms:
    """The ``lattice`` crystal of ``symbol`` (lattice constant ``a`` Å), slip direction along
    x and slip-plane normal along z, at least ``min_height`` Å tall."""
    directions, _ = SYSTEMS[lattice]
    build = FaceCenteredCubic if lattice == "fcc" else BodyCenteredCubic
    one = build(directions=directions, symbol=symbol, latticeconstant=a, size=(1, 1, 1))
    nz = max(1, int(np.ceil(min_height / one.cell[2, 2])))
    out = build(directions=directions, symbol=symbol, latticeconstant=a, size=(1, 1, nz))
    out.pbc = True
    return out


def _relax_z(atoms: Atoms, calc: BaseCalculator, fmax: float, steps: int) -> float:
    atoms.set_constraint(FixCartesian(range(len(atoms)), mask=(True, True, False)))
    atoms.calc = calc
    FIRE(atoms, logfile=None).run(fmax=fmax, steps=steps)
    energy = float(atoms.get_potential_energy())
    atoms.calc = None
    atoms.set_constraint()
    return energy


def compute_gamma(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    lattice: str | None = None,
    n_steps: int = 12,
    min_height: float = 12.0,
    relax: bool = True,
    fmax: float = 0.005,
) -> GammaResult:
    """Gamma line of the element crystal ``atoms`` (its volume per atom sets the lattice
    constant) over one slip period in ``n_steps`` steps (fcc: a multiple of 3)."""
    check_periodic(atoms, "gamma")
    symbols = set(atoms.get_chemical_symbols())
    if len(symbols) != 1:
        raise PropsError(f"gamma: needs a crystal of one element, got {sorted(symbols)}")
    lattice = lattice or detect_lattice(atoms)
    if lattice not in SYSTEMS:
        raise PropsError(f"gamma: lattice must be one of {sorted(SYSTEMS)}, got {lattice!r}")
    if n_steps < 2 or (lattice == "fcc" and n_steps % 3):
        raise PropsError(f"gamma: n_steps must be >= 2 (fcc: a multiple of 3), got {n_steps}")
    a = (ATOMS_PER_CELL[lattice] * atoms.get_volume() / len(atoms)) ** (1.0 / 3.0)
    base = oriented_cell(symbols.pop(), lattice, a, min_height)
    period = SYSTEMS[lattice][1] * a
    area = float(np.linalg.norm(np.cross(base.cell[0], base.cell[1])))
    fractions = np.arange(n_steps + 1) / n_steps
    cells = []
    for u in fractions:
        cell = base.copy()
        tilted = cell.get_cell().array.copy()
        tilted[2, 0] += u * period
        cell.set_cell(tilted, scale_atoms=False)
        cells.append(cell)
    if relax:
        energies = [_relax_z(cell, calc, fmax, 1000) for cell in cells]
    else:  # all cells in one batched evaluation
        energies = single_points(cells, calc)
    energies = np.array(energies)
    gamma = (energies - energies[0]) / area * EV_A2_TO_J_M2
    if lattice == "fcc":
        k = n_steps // 3
        intrinsic, unstable = float(gamma[k]), float(gamma[: k + 1].max())
    else:
        intrinsic, unstable = None, float(gamma.max())
    return GammaResult(lattice, fractions, gamma, energies, period, intrinsic, unstable)
