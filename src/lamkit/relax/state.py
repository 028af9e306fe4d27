"""One structure in flight: its generalized coordinates, geometry, optimizer state and the
checks that flag an exploding relaxation.

A job's generalized coordinates ``x`` are [n, 3] positions (fixed cell) or [n + 3, 3]
(relaxed cell: atom rows in the original cell and ``e log F`` cell rows, see
:mod:`lamkit.relax.filters`), in the optimizer's dtype. Positions (Å) and cells (Å, rows are
cell vectors) are derived from ``x`` for a whole batch at once (:func:`set_geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from vesin import NeighborList

from .filters import cell_forces, deformation, filter_virial


@dataclass
class Evaluation:
    """The potential's answer for one structure: energy eV, forces [n, 3] eV/Å, stress [6]
    eV/Å^3 (ASE Voigt order; NaN when not periodic or not available)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray


@dataclass
class Job:
    """A structure being relaxed (see the module docstring)."""

    index: int
    atoms: Atoms
    numbers: np.ndarray
    pbc: np.ndarray
    cell0: np.ndarray  # [3, 3] input cell, Å
    cell_dof: bool  # the cell is relaxed (fully periodic and a cell filter asked for)
    x: np.ndarray  # generalized coordinates [rows, 3]
    state: object  # the optimizer's per-structure state
    nsteps: int = 0
    initial_energy: float = float("nan")
    pos: np.ndarray | None = field(default=None, repr=False)  # [n, 3] Å, from x
    cell: np.ndarray | None = field(default=None, repr=False)  # [3, 3] Å, from x
    log_deform: np.ndarray | None = field(default=None, repr=False)  # X [3, 3]
    deform: np.ndarray | None = field(default=None, repr=False)  # F = exp(X) [3, 3]
    # the last evaluated geometry and its evaluation, with the max generalized force there
    last_pos: np.ndarray | None = field(default=None, repr=False)
    last_cell: np.ndarray | None = field(default=None, repr=False)
    last: Evaluation | None = field(default=None, repr=False)
    fmax: float = float("nan")

    @property
    def natoms(self) -> int:
        return len(self.numbers)

    @property
    def volume0(self) -> float:
        return abs(float(np.linalg.det(self.cell0)))


def new_job(index: int, atoms: Atoms, relax_cell: bool, dtype: np.dtype, state) -> Job:
    """A job at the input geometry (F = I)."""
    pos = np.array(atoms.get_positions(), dtype=np.float64)
    pbc = np.array(atoms.get_pbc(), dtype=bool)
    cell_dof = bool(relax_cell and pbc.all())
    rows = [pos, np.zeros((3, 3))] if cell_dof else [pos]
    job = Job(
        index=index,
        atoms=atoms,
        numbers=np.array(atoms.get_atomic_numbers(), dtype=np.int64),
        pbc=pbc,
        cell0=np.array(atoms.get_cell().array, dtype=np.float64),
        cell_dof=cell_dof,
        x=np.concatenate(rows).astype(dtype),
        state=state,
    )
    set_geometry([job])
    return job


def check_input(atoms: Atoms) -> str | None:
    """Why a structure cannot be relaxed at all, or None."""
    if len(atoms) == 0:
        return "no atoms"
    if atoms.constraints:  # not silently dropped: the relaxer moves every atom and the cell
        names = sorted({type(c).__name__ for c in atoms.constraints})
        return f"ASE constraints ({', '.join(names)}) are not supported; remove them to relax"
    if not np.all(np.isfinite(atoms.get_positions())):
        return "positions contain NaN or infinite values"
    if np.any(atoms.get_pbc()):
        cell = atoms.get_cell().array
        if not np.all(np.isfinite(cell)):
            return "the cell contains NaN or infinite values"
        if abs(np.linalg.det(cell)) < 1e-10:
            return f"periodic structure with a zero-volume cell {cell.tolist()}"
    return None


def set_geometry(jobs: list[Job]) -> None:
    """Positions and cells of ``jobs`` from their generalized coordinates (one batched matrix
    exponential for all relaxed cells)."""
    cell_jobs = [j for j in jobs if j.cell_dof]
    if cell_jobs:
        log_deform = np.stack([j.x[j.natoms :].astype(np.float64) / j.natoms for j in cell_jobs])
        deform = deformation(log_deform)
        for j, xk, fk in zip(cell_jobs, log_deform, deform):
            j.log_deform, j.deform = xk, fk
            j.pos = j.x[: j.natoms].astype(np.float64) @ fk.T
            j.cell = j.cell0 @ fk.T
    for j in jobs:
        if not j.cell_dof:
            j.pos = j.x.astype(np.float64)
            j.cell = j.cell0


def generalized_forces(
    jobs: list[Job], evals: list[Evaluation], pressure: float, hydrostatic: bool
) -> list[np.ndarray]:
    """The forces the optimizer follows, one [rows, 3] array per job: atomic forces (times F
    for a relaxed cell) and the filter's cell forces (:mod:`lamkit.relax.filters`)."""
    out = [e.forces for e in evals]
    cell_k = [k for k, j in enumerate(jobs) if j.cell_dof]
    if cell_k:
        stress = np.stack([evals[k].stress for k in cell_k])
        volume = np.array([abs(np.linalg.det(jobs[k].cell)) for k in cell_k])
        virial = filter_virial(stress, volume, pressure, hydrostatic)
        log_deform = np.stack([jobs[k].log_deform for k in cell_k])
        deform = np.stack([jobs[k].deform for k in cell_k])
        factor = np.array([jobs[k].natoms for k in cell_k], dtype=np.float64)
        cellf = cell_forces(log_deform, deform, virial, factor)
        for k, fc, fk in zip(cell_k, cellf, deform):
            out[k] = np.concatenate([evals[k].forces @ fk, fc])
    return out


def stress_residual(stress: np.ndarray, pressure: float, hydrostatic: bool) -> float:
    """Largest ``|sigma + p I|`` component (eV/Å^3) of a Voigt stress [6]; with
    ``hydrostatic`` only the mean stress counts."""
    s = np.asarray(stress, dtype=np.float64)
    if hydrostatic:
        return abs(s[:3].mean() + pressure)
    return float(max(np.abs(s[:3] + pressure).max(), np.abs(s[3:]).max()))


def explosion(
    job: Job, max_volume_ratio: float, min_distance: float, nl: NeighborList
) -> str | None:
    """Why the geometry after a step is unphysical, or None: non-finite coordinates, a volume
    beyond ``max_volume_ratio`` times (or below its inverse) the input's, or two atoms closer
    than ``min_distance`` Å (``nl``: a vesin list with a cutoff of at least that)."""
    if not (np.all(np.isfinite(job.pos)) and np.all(np.isfinite(job.cell))):
        return f"non-finite positions or cell after step {job.nsteps}"
    if job.cell_dof:
        ratio = abs(np.linalg.det(job.cell)) / job.volume0
        if not (1.0 / max_volume_ratio <= ratio <= max_volume_ratio):
            return f"volume changed by a factor {ratio:.3g} after step {job.nsteps}"
    if job.natoms < 2:
        return None
    periodic = bool(np.any(job.pbc))
    box = job.cell if periodic else np.zeros((3, 3))
    i, j, d = nl.compute(job.pos, box, periodic, "ijd")
    close = d < min_distance
    i, j, d = i[close], j[close], d[close]
    if len(d):
        k = int(np.argmin(d))
        return (
            f"atoms {int(i[k])} and {int(j[k])} are {float(d[k]):.3f} Å apart after step "
            f"{job.nsteps} (minimum {min_distance} Å)"
        )
    return None
