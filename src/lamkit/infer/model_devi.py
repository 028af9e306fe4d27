"""``lam model-devi``: how much an ensemble of models disagrees, frame by frame (``dp model-devi``).

Given the predictions of ``nm`` models (``Ensemble.eval``), per frame:

* force deviation of atom i: ``|sigma(F_i)|``, the norm of the population standard deviation
  (over models) of its force vector; ``max_devi_f``, ``min_devi_f``, ``avg_devi_f`` are the max,
  min and mean over atoms (eV/Å);
* virial deviation: the population std of each of the 9 components of ``W / natoms``;
  ``max_devi_v``, ``min_devi_v`` over components and ``avg_devi_v = |sigma| / 3`` (their root
  mean square), eV;
* ``devi_e``: the population std of ``E / natoms`` (eV).

``--relative L`` divides every atom's force deviation by ``|mean F_i| + L`` (``--relative_v L``:
the virial deviations by ``|mean W / natoms| + L``), DeePMD-kit v2 paper eqs. 71-72.
``--real_error`` replaces the std by the root mean square error of the models against the
system's labels (``energy``, ``force``, ``virial``; missing labels count as zeros, as in the
reference), and the relative magnitudes then come from the labels.

The output file holds one block per system, as the reference writes it::

    # path/to/system
    # step      max_devi_v         min_devi_v  ...  devi_e             [atm_devi_f(N)]
               0       1.234567e-03 ...

``step`` is the frame index (counted over all sets of the system) times ``-f FREQ``; with
``--atomic`` every atom's force deviation follows as extra columns. Systems are found as
``lam test`` finds them (sorted; the reference uses the file system's order) and the output
file is rewritten, not appended to. The deviations themselves are computed by
:mod:`lamkit.infer.deviation` (shared with the ensemble's ASE calculator).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from .. import keys
from ..data import DataRequirement, load_systems
from ..data.system import System
from .deviation import energy_deviation, force_deviation, virial_deviation
from .ensemble import Ensemble, EnsembleOutput

log = logging.getLogger("lamkit.model_devi")

COLUMNS = (
    "max_devi_v",
    "min_devi_v",
    "avg_devi_v",
    "max_devi_f",
    "min_devi_f",
    "avg_devi_f",
    "devi_e",
)


def deviation_table(
    pred: EnsembleOutput,
    natoms: int,
    *,
    real: dict[str, np.ndarray] | None = None,
    frequency: int = 1,
    atomic: bool = False,
    relative: float | None = None,
    relative_v: float | None = None,
) -> np.ndarray:
    """Rows of the deviation file: [nf, 8] (step, :data:`COLUMNS`), plus ``natoms`` columns
    of per-atom force deviations with ``atomic``.

    real: labels for the RMS real error: ``energy`` [nf, 1] and ``virial`` [nf, 9] per atom,
    ``force`` [nf, natoms, 3].
    """
    real = real or {}
    nf = pred.energy.shape[1]
    virial = pred.virial / natoms
    energy = pred.energy / natoms
    vmax, vmin, vavg = virial_deviation(virial, real.get("virial"), relative_v)
    per_atom = force_deviation(pred.force, real.get("force"), relative)
    if natoms:
        fmax, fmin, favg = per_atom.max(axis=-1), per_atom.min(axis=-1), per_atom.mean(axis=-1)
    else:
        fmax = fmin = favg = np.zeros(nf)
    devi_e = energy_deviation(energy, real.get("energy"))
    step = np.arange(nf, dtype=np.float64) * frequency
    table = np.stack([step, vmax, vmin, vavg, fmax, fmin, favg, devi_e], axis=1)
    if atomic:
        table = np.concatenate([table, per_atom], axis=1)
    return table


def header(system: str, atomic: bool = False) -> str:
    """The two comment lines above a system's rows (without the ``# `` prefixes)."""
    names = f"{'step':10s}" + "".join(f"{c:19s}" for c in COLUMNS)
    if atomic:
        names += f"{'atm_devi_f(N)':19s}"
    return f"{system}\n{names}"


def write_table(fh: IO[bytes], table: np.ndarray, head: str) -> None:
    """One system's block: ``# ``-prefixed header, then the step as ``%12d`` and every other
    column as ``%19.6e`` (no separators)."""
    fmt = ["%12d"] + ["%19.6e"] * (table.shape[1] - 1)
    np.savetxt(fh, table, fmt=fmt, delimiter="", header=head)


def _requirements(ens: Ensemble, real_error: bool) -> list[DataRequirement]:
    req = []
    if ens.get_dim_fparam():
        req.append(DataRequirement("fparam", ens.get_dim_fparam(), must=True, origin="model"))
    if ens.get_dim_aparam():
        req.append(
            DataRequirement("aparam", ens.get_dim_aparam(), atomic=True, must=True, origin="model")
        )
    if real_error:
        req += [
            DataRequirement(keys.ENERGY, 1),
            DataRequirement(keys.FORCE, 3, atomic=True),
            DataRequirement(keys.VIRIAL, 9),
        ]
    return req


def system_deviation(
    ens: Ensemble,
    system: System,
    *,
    frequency: int = 1,
    real_error: bool = False,
    atomic: bool = False,
    relative: float | None = None,
    relative_v: float | None = None,
) -> np.ndarray:
    """The deviation rows of one loaded system (atoms in file order)."""
    mixed = system.mixed_type
    atype = system.atype if mixed else system.atype[0]
    pred = ens.eval(
        system.coords,
        system.box,
        atype,
        fparam=system.labels.get("fparam"),
        aparam=system.labels.get("aparam"),
        mixed_type=mixed,
    )
    natoms = system.natoms
    real = None
    if real_error:
        lab = system.labels
        real = {
            "energy": lab[keys.ENERGY].reshape(-1, 1) / natoms,
            "force": lab[keys.FORCE].reshape(-1, natoms, 3),
            "virial": lab[keys.VIRIAL].reshape(-1, 9) / natoms,
        }
    return deviation_table(
        pred,
        natoms,
        real=real,
        frequency=frequency,
        atomic=atomic,
        relative=relative,
        relative_v=relative_v,
    )


def make_model_devi(
    models: Ensemble | Sequence,
    systems: str | Path | Sequence[str | Path],
    output: str | Path | None = "model_devi.out",
    *,
    frequency: int = 1,
    real_error: bool = False,
    atomic: bool = False,
    relative: float | None = None,
    relative_v: float | None = None,
    head: str | None = None,
    device: str | None = None,
) -> list[np.ndarray]:
    """``dp model-devi``: the deviation table of every system found under ``systems``,
    written to ``output`` (None: not written). Returns the tables, one per system."""
    ens = models if isinstance(models, Ensemble) else Ensemble(models, head=head, device=device)
    loaded = load_systems(
        systems, ens.get_type_map(), _requirements(ens, real_error), sort_atoms=False
    )
    tables = []
    for system in loaded:
        table = system_deviation(
            ens,
            system,
            frequency=frequency,
            real_error=real_error,
            atomic=atomic,
            relative=relative,
            relative_v=relative_v,
        )
        tables.append(table)
        if len(table):
            log.info(
                "%s: %d frames, max_devi_f %.3e .. %.3e eV/Å",
                system.path,
                len(table),
                table[:, 4].min(),
                table[:, 4].max(),
            )
    if output is not None:
        with Path(output).open("wb") as fh:
            for system, table in zip(loaded, tables):
                write_table(fh, table, header(system.path, atomic))
        log.info("model deviations of %d system(s) written to %s", len(loaded), output)
    return tables
