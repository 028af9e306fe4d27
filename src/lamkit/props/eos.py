"""Equation of state: energies of isotropically scaled cells (ions relaxed at each volume,
all volumes in one batched relaxation) and a third-order Birch-Murnaghan fit.

The Birch-Murnaghan energy is exactly a cubic polynomial in ``x = V^(-2/3)``, so the fit is a
linear least-squares fit of that polynomial; V0 is its minimum, and B0 = V E''(V),
B0' = dB/dP = -1 - V E'''(V) / E''(V) there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from .common import (
    EV_A3_TO_GPA,
    PropsError,
    check_periodic,
    new_figure,
    relax_many,
    save_figure,
)


@dataclass
class BirchMurnaghan:
    """A fitted equation of state: ``v0`` Å^3/atom, ``e0`` eV/atom, ``b0`` GPa, ``b0_prime``;
    ``coef``: the cubic in x = V^(-2/3), highest power first (eV/atom)."""

    v0: float
    e0: float
    b0: float
    b0_prime: float
    coef: np.ndarray = field(repr=False)

    def energy(self, volume) -> np.ndarray:
        """Fitted energy per atom (eV) at volumes per atom (Å^3)."""
        return np.polyval(self.coef, np.asarray(volume, dtype=np.float64) ** (-2.0 / 3.0))


def fit_birch_murnaghan(volumes, energies) -> BirchMurnaghan:
    """Third-order Birch-Murnaghan fit of energies (eV/atom) at volumes (Å^3/atom)."""
    v = np.asarray(volumes, dtype=np.float64)
    e = np.asarray(energies, dtype=np.float64)
    if len(v) < 5:
        raise PropsError(f"eos: a Birch-Murnaghan fit needs at least 5 volumes, got {len(v)}")
    coef = np.polyfit(v ** (-2.0 / 3.0), e, 3)
    d1 = np.polyder(coef)
    roots = [r.real for r in np.roots(d1) if abs(r.imag) < 1e-12 and r.real > 0]
    x_lo, x_hi = (v.max() * 1.2) ** (-2.0 / 3.0), (v.min() * 0.8) ** (-2.0 / 3.0)
    minima = [r for r in roots if np.polyval(np.polyder(d1), r) > 0 and x_lo <= r <= x_hi]
    if not minima:
        raise PropsError(
            "eos: the energies have no minimum near the scanned volumes "
            f"({v.min():.3f}-{v.max():.3f} Å^3/atom); widen vol_start/vol_end"
        )
    x0 = min(minima, key=lambda r: np.polyval(coef, r))
    v0 = x0**-1.5
    # derivatives of x(V) = V^(-2/3) and the chain rule for E(V) = P(x(V))
    xv = [
        -2.0 / 3.0 * v0 ** (-5.0 / 3.0),
        10.0 / 9.0 * v0 ** (-8.0 / 3.0),
        -80.0 / 27.0 * v0 ** (-11.0 / 3.0),
    ]
    p1, p2, p3 = (np.polyval(np.polyder(coef, k), x0) for k in (1, 2, 3))
    e2 = p2 * xv[0] ** 2 + p1 * xv[1]
    e3 = p3 * xv[0] ** 3 + 3.0 * p2 * xv[0] * xv[1] + p1 * xv[2]
    b0 = v0 * e2
    return BirchMurnaghan(
        v0=float(v0),
        e0=float(np.polyval(coef, x0)),
        b0=float(b0 * EV_A3_TO_GPA),
        b0_prime=float(-1.0 - v0 * e3 / e2),
        coef=coef,
    )


@dataclass
class EosResult:
    """Volumes per atom (Å^3), energies per atom (eV), the Birch-Murnaghan fit and the
    input structure's volume per atom."""

    volumes: np.ndarray
    energies: np.ndarray
    fit: BirchMurnaghan
    reference_volume: float = float("nan")  # Å^3/atom of the input structure

    @property
    def lattice_scale(self) -> float:
        """Linear scale factor of the input cell at the fitted V0."""
        return float((self.fit.v0 / self.reference_volume) ** (1.0 / 3.0))

    def to_result_json(self) -> dict:
        """APEX's EOS ``result.json``: volume per atom (Å^3) -> energy per atom (eV)."""
        return {f"{v:.6f}": float(e) for v, e in zip(self.volumes, self.energies)}

    def summary(self) -> dict:
        f = self.fit
        return {"V0": f.v0, "E0": f.e0, "B0": f.b0, "B0_prime": f.b0_prime}

    def plot(self, path: str | Path) -> Path:
        """E(V) points and the fitted curve."""
        fig, ax = new_figure()
        vv = np.linspace(self.volumes.min(), self.volumes.max(), 200)
        ax.plot(self.volumes, self.energies, "o", label="calculated")
        ax.plot(vv, self.fit.energy(vv), "-", label="Birch-Murnaghan fit")
        f = self.fit
        ax.set_title(f"V0 {f.v0:.3f} Å³, B0 {f.b0:.1f} GPa, B0' {f.b0_prime:.2f}", fontsize=9)
        ax.set_xlabel("volume per atom (Å³)")
        ax.set_ylabel("energy per atom (eV)")
        ax.legend()
        return save_figure(fig, path)


def compute_eos(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    vol_start: float = 0.9,
    vol_end: float = 1.1,
    vol_step: float = 0.025,
    relax_ions: bool = True,
    fmax: float = 0.005,
) -> EosResult:
    """EOS of ``atoms`` (ideally relaxed) from ``vol_start`` to ``vol_end`` times its volume in
    steps of ``vol_step`` (APEX's relative volumes), ions relaxed at fixed cell."""
    check_periodic(atoms, "eos")
    if not 0 < vol_start < vol_end or vol_step <= 0:
        raise PropsError(
            f"eos: expected 0 < vol_start < vol_end and vol_step > 0, got {vol_start}, "
            f"{vol_end}, {vol_step}"
        )
    ratios = np.arange(vol_start, vol_end + 0.5 * vol_step, vol_step)
    cells = []
    for r in ratios:
        a = atoms.copy()
        a.calc = None
        a.set_constraint()
        a.set_cell(atoms.get_cell() * r ** (1.0 / 3.0), scale_atoms=True)
        cells.append(a)
    steps = 1000 if relax_ions else 0
    results = relax_many(
        cells, calc, cell_filter="fixed", fmax=fmax, steps=steps, what="eos volume"
    )
    n = len(atoms)
    volumes = np.array([a.get_volume() / n for a in cells])
    energies = np.array([r.energy / n for r in results])
    fit = fit_birch_murnaghan(volumes, energies)
    return EosResult(volumes, energies, fit, atoms.get_volume() / n)
