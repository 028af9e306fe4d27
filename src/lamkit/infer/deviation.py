"""How much the members of a committee disagree: the force, virial and energy deviations of
``dp model-devi`` (used by ``lam model-devi``, :mod:`.model_devi`, and by the ensemble's ASE
calculator, :mod:`.ensemble`)."""

from __future__ import annotations

import numpy as np


def force_deviation(
    forces: np.ndarray, real_force: np.ndarray | None = None, relative: float | None = None
) -> np.ndarray:
    """Per-atom force deviation [nf, natoms] (eV/Å, or dimensionless with ``relative``).

    forces: [nm, nf, natoms, 3]. real_force: [nf, natoms, 3] labels: RMS error over models
    instead of the std. relative: divide by the mean (or label) force norm plus this level.
    """
    forces = np.asarray(forces, dtype=np.float64)
    if real_force is None:
        spread = np.std(forces, axis=0)
    else:
        spread = np.sqrt(np.mean(np.square(forces - real_force), axis=0))
    devi = np.linalg.norm(spread, axis=-1)
    if relative is not None:
        ref = np.mean(forces, axis=0) if real_force is None else real_force
        devi = devi / (np.linalg.norm(ref, axis=-1) + relative)
    return devi


def virial_deviation(
    virials: np.ndarray, real_virial: np.ndarray | None = None, relative: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """max, min and RMS (``norm / 3``) over the 9 components of the virial deviation, [nf]
    each. virials: [nm, nf, 9] (per atom, as the file reports it); real_virial [nf, 9]."""
    virials = np.asarray(virials, dtype=np.float64)
    if real_virial is None:
        devi = np.std(virials, axis=0)
    else:
        devi = np.sqrt(np.mean(np.square(virials - real_virial), axis=0))
    if relative is not None:
        ref = np.mean(virials, axis=0) if real_virial is None else real_virial
        devi = devi / (np.linalg.norm(ref, axis=-1) + relative)[..., None]
    return devi.max(axis=-1), devi.min(axis=-1), np.linalg.norm(devi, axis=-1) / 3


def energy_deviation(energies: np.ndarray, real_energy: np.ndarray | None = None) -> np.ndarray:
    """Std over models (or RMS error against ``real_energy`` [nf, 1]) of energies
    [nm, nf, 1] (per atom, as the file reports it): [nf]."""
    energies = np.asarray(energies, dtype=np.float64)
    if real_energy is None:
        devi = np.std(energies, axis=0)
    else:
        devi = np.sqrt(np.mean(np.square(energies - real_energy), axis=0))
    return devi.reshape(devi.shape[0])
