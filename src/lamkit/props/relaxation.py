"""Relaxation of a crystal: positions, cell shape and volume (ASE's FrechetCellFilter, FIRE),
the starting point of every other property."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from .common import EV_A3_TO_GPA, check_periodic, relax_many


@dataclass
class RelaxationResult:
    """A relaxed crystal: ``atoms`` (with the final energy, forces and stress attached),
    ``energy`` eV, ``stress`` [6] eV/Å^3 (Voigt xx yy zz yz xz xy), ``converged``, ``steps``."""

    atoms: Atoms
    energy: float
    stress: np.ndarray
    converged: bool
    steps: int

    @property
    def energy_per_atom(self) -> float:
        return self.energy / len(self.atoms)

    @property
    def volume_per_atom(self) -> float:
        return self.atoms.get_volume() / len(self.atoms)

    def to_result_json(self) -> dict:
        """APEX's relaxation ``result.json``: one frame in dpdata's system layout (atom names
        and counts, types, cell, coordinates Å, energy eV, forces eV/Å, virial eV, stress
        kbar with compression positive, as VASP prints it)."""
        a = self.atoms
        names = sorted(set(a.get_chemical_symbols()), key=a.get_chemical_symbols().index)
        types = [names.index(s) for s in a.get_chemical_symbols()]
        virial = -a.get_volume() * _full(self.stress)
        return {
            "@module": "dpdata.system",
            "@class": "LabeledSystem",
            "data": {
                "atom_names": names,
                "atom_numbs": [types.count(k) for k in range(len(names))],
                "atom_types": types,
                "orig": [0.0, 0.0, 0.0],
                "cells": [a.get_cell().array.tolist()],
                "coords": [a.get_positions().tolist()],
                "energies": [self.energy],
                "forces": [a.get_forces().tolist()],
                "virials": [virial.tolist()],
                "stress": [(-_full(self.stress) * EV_A3_TO_GPA * 10.0).tolist()],
            },
            "converged": self.converged,
            "steps": self.steps,
        }


def _full(voigt: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = np.asarray(voigt, dtype=np.float64)
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def relax_crystal(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    fmax: float = 0.005,
    steps: int = 2000,
    cell_filter: str = "frechet",
) -> RelaxationResult:
    """Relax ``atoms`` (positions and cell with ``cell_filter`` "frechet"; "hydrostatic" keeps
    the cell shape, "fixed" the cell) with ``calc``; ``fmax`` eV/Å on atoms and cell rows."""
    check_periodic(atoms, "relaxation")
    (res,) = relax_many([atoms], calc, cell_filter=cell_filter, fmax=fmax, steps=steps)
    return RelaxationResult(res.atoms, res.energy, np.asarray(res.stress), res.converged, res.steps)
