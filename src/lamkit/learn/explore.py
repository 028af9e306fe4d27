"""The explore stage: molecular dynamics with the ensemble's mean forces (ASE), recording the
maximum force deviation of every ``traj_freq``-th frame.

Each property contributes its cells (:func:`lamkit.learn.properties.exploration_cells`:
strained, sheared, vacancy, slab and stacking-fault cells). Every cell runs once per
temperature; bulk cells run once per pressure too (Berendsen NPT, pressures in GPa), the
others at fixed cell (Langevin NVT). Velocities and the Langevin noise are seeded by the
iteration, the cell and the condition, so a resumed run explores the same trajectories.
``explore.engine: "lammps"`` runs the trajectories in LAMMPS instead
(:mod:`lamkit.learn.explore_lammps`).
"""

from __future__ import annotations

import logging

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from .config import ExploreSpec

log = logging.getLogger("lamkit")

#: a trajectory whose force deviation passes this many times the upper trust level stops
RUNAWAY = 20.0


def run_md(
    atoms: Atoms,
    calc,
    temperature: float,
    pressure: float | None,
    spec: ExploreSpec,
    seed: int,
    stop_devi: float,
) -> tuple[list[Atoms], list[float]]:
    """Frames (copies without calculator) and their max_devi_f (eV/Å) of one trajectory."""
    a = atoms.copy()
    a.calc = calc
    rng = np.random.RandomState(seed)
    MaxwellBoltzmannDistribution(a, temperature_K=temperature, rng=rng)
    dt = spec.timestep * units.fs
    if pressure is None:
        dyn = Langevin(a, dt, temperature_K=temperature, friction=spec.friction / units.fs, rng=rng)
    else:
        dyn = NPTBerendsen(
            a,
            dt,
            temperature_K=temperature,
            pressure_au=pressure * units.GPa,
            taut=100 * units.fs,
            taup=500 * units.fs,
            compressibility_au=1.0 / (100.0 * units.GPa),
        )
    frames: list[Atoms] = []
    devis: list[float] = []

    def record() -> None:
        f = a.copy()
        f.calc = None
        devi = float(calc.results["max_devi_f"])
        f.info["max_devi_f"] = devi
        f.info["max_devi_v"] = float(calc.results["max_devi_v"])
        frames.append(f)
        devis.append(devi)

    a.get_forces()
    for _ in range(spec.steps // spec.traj_freq):
        dyn.run(spec.traj_freq)
        a.get_forces()
        record()
        if devis[-1] > stop_devi:
            break
    return frames, devis


def explore(
    cells: list[tuple[str, Atoms, bool]], calc, spec: ExploreSpec, iteration: int, hi: float
) -> tuple[list[Atoms], list[float]]:
    """All trajectories of one iteration over ``cells`` (source, atoms, is_bulk)."""
    md = run_md
    if spec.engine == "lammps":
        from .explore_lammps import run_md_lammps as md
    frames: list[Atoms] = []
    devis: list[float] = []
    for c, (source, atoms, is_bulk) in enumerate(cells):
        pressures: list[float | None] = list(spec.pressures) if is_bulk else [None]
        for t, temp in enumerate(spec.temperatures):
            for p, press in enumerate(pressures):
                seq = np.random.SeedSequence([spec.seed, iteration, c, t, p])
                seed = int(seq.generate_state(1)[0])
                fr, dv = md(atoms, calc, float(temp), press, spec, seed, RUNAWAY * hi)
                for f in fr:
                    f.info.update(source=source, temperature=float(temp),
                                  pressure=float("nan") if press is None else float(press))
                frames += fr
                devis += dv
        log.info("learn: explored %s: %d frames so far", source, len(frames))
    return frames, devis


def score_pool(
    pool: list[tuple[str, Atoms]], calc, spec: ExploreSpec, iteration: int
) -> tuple[list[Atoms], list[float]]:
    """Static candidates (``explore.pool``): the properties' own deformed cells, rattled by
    ``pool_rattle`` Å (seeded by the iteration), with the ensemble's max_devi_f."""
    rng = np.random.default_rng([spec.seed, iteration, 99])
    frames: list[Atoms] = []
    devis: list[float] = []
    for source, atoms in pool:
        f = atoms.copy()
        f.calc = None
        if spec.pool_rattle > 0:
            f.positions += rng.normal(0.0, spec.pool_rattle, f.positions.shape)
        devi = float(calc.get_property("max_devi_f", f))
        f.info.update(max_devi_f=devi, max_devi_v=float(calc.results["max_devi_v"]),
                      source=source, temperature=float("nan"), pressure=float("nan"))
        frames.append(f)
        devis.append(devi)
    log.info("learn: scored %d pool cells", len(frames))
    return frames, devis
