"""The target properties of ``lam learn``: structures, values with any ASE calculator
(:mod:`lamkit.props`), and the defected, strained and faulted cells exploration starts from.

Values are in each quantity's canonical unit (:data:`lamkit.learn.config.PROPERTIES`):
lattice ``a`` Å (the input cell's first vector, scaled to the relaxed volume), EOS ``V0``
Å^3/atom and ``B0`` GPa, ``C11/C12/C44`` GPa, vacancy ``Ef`` eV, intrinsic stacking-fault and
(111) surface energies J/m^2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import BaseCalculator

from ..errors import ConfigError
from .config import PropertySpec


def build_structure(name: str, spec: Any, base_dir: Path) -> Atoms:
    """A structure from a file path or ``{"bulk": symbol, ...ase.build.bulk options}``."""
    if isinstance(spec, str):
        from ase.io import read

        path = Path(spec) if Path(spec).is_absolute() else base_dir / spec
        try:
            atoms = read(path)
        except FileNotFoundError:
            raise ConfigError(f"structures.{name}: no such file {str(path)!r}") from None
        except Exception as exc:  # noqa: BLE001 - ASE raises many kinds
            raise ConfigError(f"structures.{name}: cannot read {str(path)!r}: {exc}") from None
        return atoms if isinstance(atoms, Atoms) else atoms[0]
    if isinstance(spec, dict) and "bulk" in spec:
        options = {k: v for k, v in spec.items() if k != "bulk"}
        try:
            return bulk(spec["bulk"], **options)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"structures.{name}: ase.build.bulk failed: {exc}") from None
    raise ConfigError(
        f"structures.{name}: expected a file path or {{\"bulk\": \"Cu\", ...}}, got {spec!r}"
    )


def _relaxed(calc: BaseCalculator, atoms: Atoms) -> Atoms:
    from ..props import relax_crystal

    return relax_crystal(calc, atoms, fmax=1e-3).atoms


def compute_property(spec: PropertySpec, calc: BaseCalculator, atoms: Atoms) -> dict[str, float]:
    """The quantities of one property of ``atoms`` with ``calc`` (relaxed first)."""
    from ..props import (
        compute_elastic,
        compute_eos,
        compute_gamma,
        compute_surface,
        compute_vacancy,
    )

    relaxed = _relaxed(calc, atoms)
    opts = spec.options
    if spec.name == "lattice":
        scale = (relaxed.get_volume() / atoms.get_volume()) ** (1.0 / 3.0)
        return {"a": float(np.linalg.norm(atoms.cell[0]) * scale)}
    if spec.name == "eos":
        fit = compute_eos(calc, relaxed, **opts).fit
        return {"V0": float(fit.v0), "B0": float(fit.b0)}
    if spec.name == "elastic":
        c = compute_elastic(calc, relaxed, **opts).cij
        return {"C11": float(c[0, 0]), "C12": float(c[0, 1]), "C44": float(c[3, 3])}
    if spec.name == "vacancy":
        res = compute_vacancy(calc, relaxed, **{"supercell": (2, 2, 2), **opts})
        return {"Ef": float(res.formation[0])}
    if spec.name == "sfe":
        res = compute_gamma(calc, relaxed, **{"n_steps": 3, "min_height": 10.0, **opts})
        if res.intrinsic is None:
            raise ConfigError(f"properties {spec.key}: an intrinsic SFE needs an fcc crystal")
        return {"intrinsic": float(res.intrinsic)}
    if spec.name == "surface":
        res = compute_surface(calc, relaxed, **{"millers": [(1, 1, 1)], **opts})
        return {"gamma": float(res.gamma[0])}
    raise ConfigError(f"unknown property {spec.name!r}")


def _copy(atoms: Atoms) -> Atoms:
    a = atoms.copy()
    a.calc = None
    a.set_constraint()
    return a


def _supercell(atoms: Atoms, min_atoms: int = 24) -> Atoms:
    n = 1
    while len(atoms) * n**3 < min_atoms:
        n += 1
    return _copy(atoms).repeat((n, n, n))


def exploration_cells(name: str, atoms: Atoms) -> list[tuple[Atoms, bool]]:
    """Cells MD starts from for property ``name`` around ``atoms``: (cell, is_bulk). Bulk
    cells may run under pressure; slabs and faulted cells run at fixed cell."""
    from ..props.elastic import strain_matrix

    base = _supercell(atoms)
    if name in ("lattice", "eos"):
        out = []
        for r in (0.94, 1.0, 1.06):
            a = _copy(base)
            a.set_cell(base.cell * r ** (1.0 / 3.0), scale_atoms=True)
            out.append((a, True))
        return out
    if name == "elastic":
        out = []
        for voigt in ([0.02, 0, 0, 0, 0, 0], [0, 0, 0, 0.03, 0, 0], [0, 0, 0, 0, 0, 0.03]):
            a = _copy(base)
            a.set_cell(base.cell.array @ (np.eye(3) + strain_matrix(np.array(voigt))).T,
                       scale_atoms=True)
            out.append((a, False))
        return out
    if name == "vacancy":
        a = _copy(base)
        del a[0]
        return [(a, True)]
    if name == "sfe":
        from ..props.gamma import ATOMS_PER_CELL, SYSTEMS, detect_lattice, oriented_cell

        lattice = detect_lattice(atoms)
        if lattice not in SYSTEMS or len(set(atoms.get_chemical_symbols())) != 1:
            return [(base, True)]
        lat = (ATOMS_PER_CELL[lattice] * atoms.get_volume() / len(atoms)) ** (1.0 / 3.0)
        out = []
        for u in (1.0 / 3.0, 1.0 / 6.0):
            cell = oriented_cell(atoms.get_chemical_symbols()[0], lattice, lat, 10.0)
            tilted = cell.get_cell().array.copy()
            tilted[2, 0] += u * SYSTEMS[lattice][1] * lat
            cell.set_cell(tilted, scale_atoms=False)
            out.append((cell, False))
        return out
    if name == "surface":
        from ..props.surface import make_slab

        return [(make_slab(atoms, (1, 1, 1), 8.0, 8.0), False)]
    raise ConfigError(f"unknown property {name!r}")


def _strained(base: Atoms, voigt: list[float]) -> Atoms:
    from ..props.elastic import strain_matrix

    a = _copy(base)
    a.set_cell(base.cell.array @ (np.eye(3) + strain_matrix(np.array(voigt))).T, scale_atoms=True)
    return a


def deformation_pool(name: str, atoms: Atoms) -> list[Atoms]:
    """The cells the property calculation itself evaluates, unrelaxed, around ``atoms``: a
    candidate pool scored by deviation next to the MD frames (``explore.pool``). EOS/lattice:
    volumes 0.90..1.10 (0.97..1.03); elastic: each Voigt strain at +-0.5, +-1 and +-2 %;
    vacancy: the vacancy cell; sfe: the tilted cells along the (111)[11-2] line; surface: the
    slab. Bulk cells are supercells of at least 24 atoms."""
    base = _supercell(atoms)
    if name in ("lattice", "eos"):
        ratios = np.arange(0.90, 1.1001, 0.025) if name == "eos" else (0.97, 0.985, 1.015, 1.03)
        out = []
        for r in ratios:
            a = _copy(base)
            a.set_cell(base.cell * float(r) ** (1.0 / 3.0), scale_atoms=True)
            out.append(a)
        return out
    if name == "elastic":
        out = []
        for j in range(6):
            for amp in (-0.02, -0.01, -0.005, 0.005, 0.01, 0.02):
                voigt = [0.0] * 6
                voigt[j] = amp
                out.append(_strained(base, voigt))
        return out
    if name == "sfe":
        from ..props.gamma import ATOMS_PER_CELL, SYSTEMS, detect_lattice, oriented_cell

        lattice = detect_lattice(atoms)
        if lattice not in SYSTEMS or len(set(atoms.get_chemical_symbols())) != 1:
            return []
        lat = (ATOMS_PER_CELL[lattice] * atoms.get_volume() / len(atoms)) ** (1.0 / 3.0)
        out = []
        for k in range(1, 6):
            cell = oriented_cell(atoms.get_chemical_symbols()[0], lattice, lat, 10.0)
            tilted = cell.get_cell().array.copy()
            tilted[2, 0] += k / 6.0 * SYSTEMS[lattice][1] * lat
            cell.set_cell(tilted, scale_atoms=False)
            out.append(cell)
        return out
    return [a for a, _ in exploration_cells(name, atoms)]


def property_error(
    spec: PropertySpec, values: dict[str, float], targets: dict[str, float]
) -> dict[str, dict[str, float | bool]]:
    """Per quantity: value, target, error (value - target), allowed, relative error and
    whether it is within the tolerance."""
    out: dict[str, dict[str, float | bool]] = {}
    for q, tol in spec.tolerances.items():
        v, t = values[q], targets[q]
        allowed = tol.allowed(t)
        out[q] = {
            "value": v,
            "target": t,
            "error": v - t,
            "relative": (v - t) / t if t else float("nan"),
            "allowed": allowed,
            "ok": bool(abs(v - t) <= allowed),
        }
    return out
