"""Elastic constants from stress-strain: each of the six Voigt strains at ``±norm_deform``
and ``±norm_deform/2`` (normal) or ``±shear_deform`` and ``±shear_deform/2`` (shear), ions
relaxed at fixed cell (all strained cells in one batched relaxation), then a least-squares
slope of every stress component against each strain.

Conventions: Voigt order xx yy zz yz xz xy, engineering shear strains (``e4 = 2 eps_yz``), the
deformation ``F = I + eps`` (symmetric), stress positive in tension; C in GPa. The
polycrystalline averages (Voigt, Reuss, Hill) are the standard ones (e.g. Hill 1952).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from .common import EV_A3_TO_GPA, PropsError, check_periodic, new_figure, relax_many, save_figure

_PAIRS = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def strain_matrix(voigt: np.ndarray) -> np.ndarray:
    """Symmetric strain tensor [3, 3] from a Voigt strain [6] (engineering shears)."""
    e = np.zeros((3, 3))
    for k, (i, j) in enumerate(_PAIRS):
        e[i, j] = e[j, i] = voigt[k] if i == j else 0.5 * voigt[k]
    return e


def moduli(c: np.ndarray) -> dict[str, float]:
    """Bulk (B), shear (G), Young's (E) moduli in GPa and Poisson ratio (u) in the Voigt (V),
    Reuss (R) and Hill (H) averages of a 6x6 stiffness matrix (GPa); keys as APEX's BV, GV,
    EV, uV, plus the R and H ones."""
    c = np.asarray(c, dtype=np.float64)
    s = np.linalg.inv(c)
    bv = (c[0, 0] + c[1, 1] + c[2, 2] + 2.0 * (c[0, 1] + c[1, 2] + c[0, 2])) / 9.0
    gv = (
        c[0, 0]
        + c[1, 1]
        + c[2, 2]
        - c[0, 1]
        - c[1, 2]
        - c[0, 2]
        + 3.0 * (c[3, 3] + c[4, 4] + c[5, 5])
    ) / 15.0
    br = 1.0 / (s[0, 0] + s[1, 1] + s[2, 2] + 2.0 * (s[0, 1] + s[1, 2] + s[0, 2]))
    gr = 15.0 / (
        4.0 * (s[0, 0] + s[1, 1] + s[2, 2])
        - 4.0 * (s[0, 1] + s[1, 2] + s[0, 2])
        + 3.0 * (s[3, 3] + s[4, 4] + s[5, 5])
    )
    out: dict[str, float] = {}
    for tag, b, g in (("V", bv, gv), ("R", br, gr), ("H", 0.5 * (bv + br), 0.5 * (gv + gr))):
        out[f"B{tag}"] = float(b)
        out[f"G{tag}"] = float(g)
        out[f"E{tag}"] = float(9.0 * b * g / (3.0 * b + g))
        out[f"u{tag}"] = float((3.0 * b - 2.0 * g) / (2.0 * (3.0 * b + g)))
    return out


@dataclass
class ElasticResult:
    """``cij`` [6, 6] GPa (symmetrized), ``raw`` [6, 6] GPa (column j: the stress slopes of
    strain j, before symmetrization), and the moduli of :func:`moduli`."""

    cij: np.ndarray
    raw: np.ndarray
    moduli: dict[str, float]

    def to_result_json(self) -> dict:
        """APEX's elastic ``result.json``: ``elastic_tensor`` (6x6, GPa) and BV, GV, EV, uV;
        the Reuss and Hill averages next to them."""
        return {"elastic_tensor": self.cij.tolist(), **self.moduli}

    def summary(self) -> dict:
        c = self.cij
        return {"C11": float(c[0, 0]), "C12": float(c[0, 1]), "C44": float(c[3, 3]), **self.moduli}

    def plot(self, path: str | Path) -> Path:
        """The stiffness matrix as a labelled heat map."""
        fig, ax = new_figure(size=(4.6, 4.0))
        im = ax.imshow(self.cij, cmap="viridis")
        for i in range(6):
            for j in range(6):
                ax.text(
                    j, i, f"{self.cij[i, j]:.0f}", ha="center", va="center", fontsize=7, color="w"
                )
        ax.set_xticks(range(6), [str(k + 1) for k in range(6)])
        ax.set_yticks(range(6), [str(k + 1) for k in range(6)])
        ax.set_title(f"C_ij (GPa); B_H {self.moduli['BH']:.1f}, G_H {self.moduli['GH']:.1f}")
        fig.colorbar(im, ax=ax)
        return save_figure(fig, path)


def compute_elastic(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    norm_deform: float = 0.01,
    shear_deform: float = 0.01,
    relax_ions: bool = True,
    fmax: float = 0.001,
) -> ElasticResult:
    """Elastic constants of ``atoms`` (relaxed first: the stress of the unstrained cell is
    subtracted, but the constants belong to the given cell)."""
    check_periodic(atoms, "elastic")
    for name, d in (("norm_deform", norm_deform), ("shear_deform", shear_deform)):
        if not 0 < d <= 0.05:
            raise PropsError(f"elastic: {name} must be in (0, 0.05], got {d}")
    cell0 = atoms.get_cell().array
    amplitudes = [-1.0, -0.5, 0.5, 1.0]
    strained, strains = [], []
    for j in range(6):
        size = norm_deform if j < 3 else shear_deform
        for amp in amplitudes:
            voigt = np.zeros(6)
            voigt[j] = amp * size
            deform = np.eye(3) + strain_matrix(voigt)
            a = atoms.copy()
            a.calc = None
            a.set_constraint()
            a.set_cell(cell0 @ deform.T, scale_atoms=True)
            strained.append(a)
            strains.append(voigt[j])
    steps = 1000 if relax_ions else 0
    results = relax_many(
        strained, calc, cell_filter="fixed", fmax=fmax, steps=steps, what="strained cell"
    )
    stress = np.array([r.stress for r in results]) * EV_A3_TO_GPA  # [24, 6]
    strains = np.array(strains).reshape(6, len(amplitudes))
    stress = stress.reshape(6, len(amplitudes), 6)
    raw = np.zeros((6, 6))
    for j in range(6):
        x = strains[j] - strains[j].mean()
        raw[:, j] = (x[:, None] * (stress[j] - stress[j].mean(0))).sum(0) / (x * x).sum()
    cij = 0.5 * (raw + raw.T)
    try:
        mod = moduli(cij)
    except np.linalg.LinAlgError:
        raise PropsError("elastic: the stiffness matrix is singular") from None
    return ElasticResult(cij=cij, raw=raw, moduli=mod)
