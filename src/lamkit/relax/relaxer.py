"""Batched relaxation with in-flight batching.

Every optimizer step is ONE potential evaluation of all structures in flight. Structures are
admitted in input order while their atoms fit in ``max_atoms`` (a structure larger than that
runs alone); one that converges, reaches the step cap or explodes leaves at once and waiting
structures take its place, so the batch stays full. Each structure follows its own optimizer
(its own FIRE velocity and time step, or its own L-BFGS memory), exactly as ASE's optimizer
would on that structure alone, so the result of a structure does not depend on the batch it
ran in.

The loop, per structure, is ASE's ``Optimizer.irun``: evaluate; stop if converged (every
generalized force row shorter than ``fmax``, as ASE tests it, and with ``smax`` the stress
too) or if ``steps`` steps were taken; else take a step and evaluate again.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from vesin import NeighborList

from .filters import MODES
from .fire import Fire
from .lbfgs import Lbfgs
from .potential import as_potential
from .state import (
    Evaluation,
    Job,
    check_input,
    explosion,
    generalized_forces,
    new_job,
    set_geometry,
    stress_residual,
)

log = logging.getLogger("lamkit")

OPTIMIZERS = {"fire": Fire, "lbfgs": Lbfgs}
LOOKAHEAD = 32  # waiting structures looked at for a free place in the batch


@dataclass
class RelaxResult:
    """The relaxation of one input structure.

    atoms: relaxed copy (same species order; positions, cell, pbc; inputs with ASE
    constraints are refused as invalid input) with
    a SinglePointCalculator holding energy/forces/stress; energy eV (nan if never evaluated);
    energy_per_atom eV/atom; forces [n, 3] eV/Å; stress [6] eV/Å^3 (ASE Voigt order) or None
    (not periodic); converged; steps taken; fmax: final largest generalized force (eV/Å);
    status "converged" | "unconverged" (step cap) | "exploded" (non-finite energy or forces,
    volume beyond ``max_volume_ratio``, atoms closer than ``min_distance``, evaluation error
    or invalid input); reason: human-readable for anything but "converged"; initial_energy eV.
    """

    atoms: Atoms
    energy: float
    energy_per_atom: float
    forces: np.ndarray
    stress: np.ndarray | None
    converged: bool
    steps: int
    fmax: float
    status: str
    reason: str | None
    initial_energy: float


class Relaxer:
    """A potential and relaxation settings, reusable for many calls of :meth:`run`.

    Args: see :func:`relax`. Extra: ``max_volume_ratio`` (5), ``min_distance`` (0.3 Å):
    explosion limits; ``optimizer_options``: ASE's optimizer parameters (FIRE: dt, maxstep,
    dtmax, Nmin, finc, fdec, astart, fa, a; LBFGS: maxstep, memory, damping, alpha).
    """

    def __init__(
        self,
        potential,
        *,
        optimizer: str = "fire",
        cell_filter: str = "frechet",
        pressure: float = 0.0,
        fmax: float = 0.05,
        smax: float | None = None,
        steps: int = 500,
        max_atoms: int = 8192,
        dtype: str = "float64",
        device=None,
        head: str | None = None,
        max_volume_ratio: float = 5.0,
        min_distance: float = 0.3,
        optimizer_options: dict | None = None,
    ):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if cell_filter not in MODES:
            raise ValueError(f"cell_filter: expected one of {list(MODES)}, got {cell_filter!r}")
        if fmax <= 0 or steps < 0 or max_atoms < 1:
            raise ValueError(
                f"expected fmax > 0, steps >= 0 and max_atoms >= 1, got fmax={fmax}, "
                f"steps={steps}, max_atoms={max_atoms}"
            )
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        self.potential = as_potential(potential, dtype=dtype, device=device, head=head)
        self.optimizer = OPTIMIZERS[optimizer](**(optimizer_options or {}))
        self.cell_filter = cell_filter
        self.pressure = float(pressure) * units.GPa  # eV/Å^3
        self.fmax = float(fmax)
        self.smax = None if smax is None else float(smax)
        self.steps = int(steps)
        self.max_atoms = int(max_atoms)
        self.dtype = np.dtype(dtype)
        self.max_volume_ratio = float(max_volume_ratio)
        self.min_distance = float(min_distance)
        # vesin's cell lists get slow for tiny cutoffs: search 1.5 Å, keep what is too close
        self._close = NeighborList(cutoff=max(self.min_distance, 1.5), full_list=False)

    # --- the loop -------------------------------------------------------------------------------
    def run(
        self,
        structures: Sequence[Atoms],
        *,
        progress: bool = False,
        on_result: Callable[[int, RelaxResult], None] | None = None,
    ) -> list[RelaxResult]:
        """Relax ``structures``; results in input order. ``on_result(index, result)`` is
        called as each structure finishes; ``progress`` shows a tqdm bar."""
        from tqdm import tqdm

        results: list[RelaxResult | None] = [None] * len(structures)
        waiting = deque(range(len(structures)))
        active: list[Job] = []
        with tqdm(total=len(structures), disable=not progress, unit="structure") as bar:

            def finish(job_or_index, status: str, reason: str | None = None) -> None:
                res = self._result(job_or_index, structures, status, reason)
                index = job_or_index if isinstance(job_or_index, int) else job_or_index.index
                results[index] = res
                bar.update(1)
                if on_result is not None:
                    on_result(index, res)

            while waiting or active:
                self._admit(active, waiting, structures, finish)
                if active:
                    active = self._iterate(active, finish)
        return results  # type: ignore[return-value]

    def _admit(self, active: list[Job], waiting: deque, structures, finish) -> None:
        """Move waiting structures into the batch while they fit (first fit among the next
        ``LOOKAHEAD``; the first structure of an empty batch always enters)."""
        load = sum(j.natoms for j in active)
        i = 0
        while waiting and i < min(len(waiting), LOOKAHEAD) and load < self.max_atoms:
            index = waiting[i]
            atoms = structures[index]
            if active and load + len(atoms) > self.max_atoms:
                i += 1
                continue
            del waiting[i]
            reason = check_input(atoms)
            validate = getattr(self.potential, "validate", None)
            if reason is None and validate is not None:
                reason = validate(atoms.get_atomic_numbers())
            if reason is not None:
                finish(index, "exploded", f"invalid input: {reason}")
                continue
            relax_cell = self.cell_filter != "fixed"
            rows = len(atoms) + 3
            job = new_job(index, atoms, relax_cell, self.dtype, self.optimizer.new_state(rows))
            active.append(job)
            load += job.natoms

    def _iterate(self, active: list[Job], finish) -> list[Job]:
        """One evaluation of the batch, convergence tests, one optimizer step of the rest;
        returns the jobs still in flight."""
        evals = self._evaluate(active)
        ok_jobs, ok_evals = [], []
        for job, ev in zip(active, evals):
            if isinstance(ev, str):
                finish(job, "exploded", f"evaluation error after step {job.nsteps}: {ev}")
                continue
            job.last_pos, job.last_cell, job.last = job.pos, job.cell, ev
            if job.nsteps == 0:
                job.initial_energy = ev.energy
            bad = not (np.isfinite(ev.energy) and np.all(np.isfinite(ev.forces)))
            if job.cell_dof:
                bad = bad or not np.all(np.isfinite(ev.stress))
            if bad:
                finish(job, "exploded", f"non-finite energy, forces or stress at step {job.nsteps}")
                continue
            ok_jobs.append(job)
            ok_evals.append(ev)
        hydro = self.cell_filter == "hydrostatic"
        gforces = generalized_forces(ok_jobs, ok_evals, self.pressure, hydro)
        stepping, step_forces = [], []
        for job, ev, g in zip(ok_jobs, ok_evals, gforces):
            job.fmax = float(np.sqrt((g * g).sum(1)).max())
            converged = job.fmax < self.fmax
            if converged and self.smax is not None and job.cell_dof:
                converged = stress_residual(ev.stress, self.pressure, hydro) <= self.smax
            if converged:
                finish(job, "converged")
            elif job.nsteps >= self.steps:
                finish(job, "unconverged", f"not converged in {self.steps} steps")
            else:
                stepping.append(job)
                step_forces.append(g.astype(self.dtype, copy=False))
        states = [j.state for j in stepping]
        new_x = self.optimizer.step([j.x for j in stepping], step_forces, states)
        for job, x in zip(stepping, new_x):
            job.x = x
            job.nsteps += 1
        set_geometry(stepping)
        remaining = []
        for job in stepping:
            reason = explosion(job, self.max_volume_ratio, self.min_distance, self._close)
            if reason is not None:
                finish(job, "exploded", reason)
            else:
                remaining.append(job)
        return remaining

    def _evaluate(self, jobs: list[Job]) -> list[Evaluation | str]:
        """The potential on all ``jobs`` at once; if that fails, on each alone, so that a
        failing structure (the message, as a string) does not take the others with it."""
        systems = [(j.pos, j.cell, j.pbc, j.numbers) for j in jobs]
        try:
            return _split(self.potential.evaluate(systems))
        except Exception as exc:  # noqa: BLE001 - isolated below, reported per structure
            if len(jobs) == 1:
                return [f"{type(exc).__name__}: {exc}"]
            if _is_oom(exc) and self.max_atoms > 1:
                self.max_atoms = max(1, sum(j.natoms for j in jobs) // 2)
                log.warning("relax: out of memory; atom budget lowered to %d", self.max_atoms)
            log.info("relax: batched evaluation failed (%s); evaluating one by one", exc)
        out: list[Evaluation | str] = []
        for system in systems:
            try:
                out.extend(_split(self.potential.evaluate([system])))
            except Exception as exc:  # noqa: BLE001 - reported as this structure's failure
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    # --- results --------------------------------------------------------------------------------
    def _result(self, job: Job | int, structures, status: str, reason: str | None) -> RelaxResult:
        index = job if isinstance(job, int) else job.index
        atoms = structures[index].copy()
        atoms.set_constraint()
        ev = None if isinstance(job, int) else job.last
        if ev is None:  # never evaluated
            nan = float("nan")
            steps = 0 if isinstance(job, int) else job.nsteps
            forces = np.full((len(atoms), 3), nan)
            return RelaxResult(
                atoms, nan, nan, forces, None, False, steps, nan, status, reason, nan
            )
        atoms.set_cell(job.last_cell, scale_atoms=False)
        atoms.set_positions(job.last_pos)
        stress = None
        if np.any(job.pbc) and np.all(np.isfinite(ev.stress)):
            stress = np.array(ev.stress, dtype=np.float64)
        forces = np.array(ev.forces, dtype=np.float64)
        props = {"energy": float(ev.energy), "forces": forces}
        if stress is not None:
            props["stress"] = stress
        atoms.calc = SinglePointCalculator(atoms, **props)
        return RelaxResult(
            atoms=atoms,
            energy=float(ev.energy),
            energy_per_atom=float(ev.energy) / job.natoms,
            forces=forces,
            stress=stress,
            converged=status == "converged",
            steps=job.nsteps,
            fmax=job.fmax,
            status=status,
            reason=reason,
            initial_energy=float(job.initial_energy),
        )


def _split(out) -> list[Evaluation]:
    return [
        Evaluation(float(out.energy[k]), np.asarray(out.forces[k]), np.asarray(out.stress[k]))
        for k in range(len(out.energy))
    ]


def _is_oom(exc: BaseException) -> bool:
    from ..infer.deep_pot import _is_oom as is_oom

    return is_oom(exc)


def relax(
    structures: Sequence[Atoms],
    potential,
    *,
    optimizer: str = "fire",
    cell_filter: str = "frechet",
    pressure: float = 0.0,
    fmax: float = 0.05,
    smax: float | None = None,
    steps: int = 500,
    max_atoms: int = 8192,
    dtype: str = "float64",
    device=None,
    head: str | None = None,
    progress: bool = False,
    on_result: Callable[[int, RelaxResult], None] | None = None,
    **options,
) -> list[RelaxResult]:
    """Relax many structures of any sizes together (one potential evaluation per step).

    Args:
        structures: ASE Atoms (periodic crystals; non-periodic ones, or ones periodic in some
            directions only, are relaxed at fixed cell whatever ``cell_filter`` says).
        potential: a model file (lamkit or DeePMD-kit v3), a DeepPot, an AtomicModel, a
            LamkitPotential, an AsePotential or any ASE calculator (one structure at a time).
        optimizer: "fire" or "lbfgs" (ASE's algorithms, ASE's default parameters).
        cell_filter: "frechet" (ASE's FrechetCellFilter), "fixed" (positions only) or
            "hydrostatic" (FrechetCellFilter with ``hydrostatic_strain=True``).
        pressure: external hydrostatic pressure, GPa.
        fmax: eV/Å; converged when every generalized force row (atoms and, for a relaxed
            cell, the filter's three cell rows) is shorter than ``fmax`` ...
        smax: ... and, if given and the cell is relaxed, every component of
            ``stress + pressure I`` is at most ``smax`` eV/Å^3 (hydrostatic: the mean only).
        steps: optimizer step cap per structure.
        max_atoms: atom budget of one batch (in-flight batching keeps it full).
        dtype: "float32" or "float64": the optimizer state and the model's precision.
        device: "cpu", "cuda" or None (CUDA when available) for lamkit models.
        head: branch of a multi-task model file.
        progress: tqdm bar with rate and ETA.  on_result: ``callback(index, RelaxResult)``.
        options: ``max_volume_ratio``, ``min_distance``, ``optimizer_options`` (see
            :class:`Relaxer`).
    """
    relaxer = Relaxer(
        potential,
        optimizer=optimizer,
        cell_filter=cell_filter,
        pressure=pressure,
        fmax=fmax,
        smax=smax,
        steps=steps,
        max_atoms=max_atoms,
        dtype=dtype,
        device=device,
        head=head,
        **options,
    )
    return relaxer.run(structures, progress=progress, on_result=on_result)
