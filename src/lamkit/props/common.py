"""Shared pieces of the property calculators: errors, units, the batched relaxation of many
structures with any ASE calculator, and result files.

Units: energies eV, lengths Å, stresses eV/Å^3 inside; moduli are reported in GPa and surface
or fault energies in J/m^2 (APEX's units).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import BaseCalculator

from ..errors import LamkitError

EV_A3_TO_GPA = 1.0 / units.GPa  # eV/Å^3 -> GPa (160.2176...)
EV_A2_TO_J_M2 = units._e * 1e20  # eV/Å^2 -> J/m^2 (16.0217...)


class PropsError(LamkitError, ValueError):
    """Bad input to a property calculation (structure, option or calculator)."""


def potential_of(calc: BaseCalculator):
    """The batched-relaxer potential behind an ASE calculator: a lamkit
    :class:`~lamkit.infer.LamCalculator` evaluates all structures of a step in one model call
    (:class:`~lamkit.relax.LamkitPotential`); any other calculator one structure at a time."""
    from ..infer.calculator import LamCalculator
    from ..relax import AsePotential, LamkitPotential

    if isinstance(calc, LamCalculator):
        return LamkitPotential(calc.dp)
    if not isinstance(calc, BaseCalculator):
        raise PropsError(f"calculator: expected an ASE calculator, got {type(calc).__name__}")
    return AsePotential(calc)


def relax_many(
    structures: Sequence[Atoms],
    calc: BaseCalculator,
    *,
    cell_filter: str = "fixed",
    fmax: float = 0.01,
    steps: int = 1000,
    what: str = "structure",
) -> list:
    """Relax ``structures`` together with :func:`lamkit.relax.relax` (FIRE; ``cell_filter``
    "fixed", "frechet" or "hydrostatic"); returns the RelaxResults. A structure that explodes
    is an error naming ``what`` and its index; one that does not converge in ``steps`` is
    kept (its ``converged`` flag says so)."""
    from ..relax import relax

    results = relax(
        list(structures),
        potential_of(calc),
        optimizer="fire",
        cell_filter=cell_filter,
        fmax=fmax,
        steps=steps,
    )
    for k, res in enumerate(results):
        if res.status == "exploded":
            raise PropsError(f"{what} {k}: relaxation failed: {res.reason}")
    return results


def single_points(structures: Sequence[Atoms], calc: BaseCalculator) -> list[float]:
    """Energies (eV) of ``structures`` as they are (no relaxation), batched like
    :func:`relax_many`."""
    out = potential_of(calc).evaluate(
        [
            (a.get_positions(), a.get_cell().array, a.get_pbc(), a.get_atomic_numbers())
            for a in structures
        ]
    )
    return [float(e) for e in out.energy]


def check_periodic(atoms: Atoms, what: str) -> None:
    """A clear error unless ``atoms`` is a fully periodic crystal."""
    if not isinstance(atoms, Atoms):
        raise PropsError(f"{what}: expected an ASE Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise PropsError(f"{what}: the structure has no atoms")
    if not np.all(atoms.get_pbc()) or atoms.cell.rank < 3:
        raise PropsError(f"{what}: needs a periodic crystal in all three directions")


def write_json(path: str | Path, data: dict) -> Path:
    """``data`` as indented JSON at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def new_figure(*shape: int, size: tuple[float, float] = (5.0, 3.8), **kwargs):
    """A matplotlib figure on the Agg backend (no display needed) and its axes
    (``kwargs``: those of ``plt.subplots``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*(shape or (1, 1)), figsize=size, **kwargs)


def save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
