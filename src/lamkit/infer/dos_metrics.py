"""``lam test`` for DOS models (``dp test``'s DOS tester, DeePMD-kit 3.2
``deepmd/infer/model_test/dos.py``).

Per system: MAE and RMSE of the frame DOS over all frames and grid points (``dos.npy``), the
same divided by the atom count, and with ``-a`` of the atomic DOS (``atom_dos.npy``; per system
only). Across systems MAE and RMSE are averaged weighted by the number of label elements.
Detail files as the reference's: one per frame, ``PREFIX.dos.out.F`` (``PREFIX.dos.out.S.F``
for system ``S`` > 0), header ``SYSTEM - F: data_dos pred_dos``, one row per grid point
(label, prediction); with ``-a`` also ``PREFIX.ados.out...``, one row per atom and grid point.
"""

from __future__ import annotations

import numpy as np

from ..data import DataRequirement

PER_SYSTEM_ONLY = ("mae_ados", "rmse_ados")
REPORT = (
    ("mae_dos", "DOS MAE            : {:e} Occupation/eV"),
    ("rmse_dos", "DOS RMSE           : {:e} Occupation/eV"),
    ("mae_dosa", "DOS MAE/Natoms     : {:e} Occupation/eV"),
    ("rmse_dosa", "DOS RMSE/Natoms    : {:e} Occupation/eV"),
    ("mae_ados", "Atomic DOS MAE     : {:e} Occupation/eV"),
    ("rmse_ados", "Atomic DOS RMSE    : {:e} Occupation/eV"),
)


def dos_requirements(numb_dos: int, atomic: bool) -> list[DataRequirement]:
    reqs = [DataRequirement("dos", numb_dos, must=True)]
    if atomic:
        reqs.append(DataRequirement("atom_dos", numb_dos, atomic=True, must=True))
    return reqs


def _mae_rmse(d: np.ndarray) -> tuple[float, float]:
    return float(np.mean(np.abs(d))), float(np.sqrt(np.mean(d * d)))


def test_dos_system(dp, system, n: int, inputs, details, atomic=False, group: int = 0) -> dict:
    """Errors of a DOS model on the first ``n`` frames of one loaded system; ``inputs`` and
    ``details`` are :mod:`.output_metrics`' input and per-frame detail writers."""
    coords, box, atype, mixed = inputs(system, n)
    out = dp.eval(coords, box, atype, atomic=atomic, mixed_type=mixed)
    pred = out[0].reshape(n, -1)
    label = system.labels["dos"][:n].reshape(n, -1)
    natoms = system.natoms
    mae, rmse = _mae_rmse(pred - label)
    res: dict = {"system": system.path, "nframes": n, "natoms": natoms}
    res.update(mae_dos=mae, rmse_dos=rmse, mae_dosa=mae / natoms, rmse_dosa=rmse / natoms)
    res["n_dos"] = res["n_dosa"] = pred.size
    if atomic:
        apred = out[1].reshape(n, -1)
        alabel = system.labels["atom_dos"][:n].reshape(n, -1)
        res["mae_ados"], res["rmse_ados"] = _mae_rmse(apred - alabel)
        res["n_ados"] = apred.size
    if details is not None:
        details(system.path, group, "dos", label, pred)
        if atomic:
            details(system.path, group, "ados", alabel, apred)
    return res


def dos_lines(res: dict) -> list[str]:
    return [fmt.format(res[key]) for key, fmt in REPORT if key in res]
