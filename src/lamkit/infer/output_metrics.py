"""``lam test`` for property, dipole, polarizability and DOS models (``dp test``'s property
and tensor testers; the DOS tester is :mod:`.dos_metrics`).

Property models, per system: MAE and RMSE over all frames and columns (``PROPERTY MAE``,
as the reference prints), the same for each column (``task_dim`` of them: lamkit's addition),
and with ``-a`` the atomic property errors when ``atom_<name>.npy`` exists. Across systems the
averages are weighted by the number of label elements (``RMSE = sqrt(sum rmse_s^2 n_s / sum
n_s)``). Detail files as the reference 3.2's: one per frame, ``PREFIX.property.out.F`` (frame
``F`` of the first system; ``PREFIX.property.out.S.F`` for system ``S`` > 0), header
``SYSTEM - F: data_property pred_property``, one row per property component: label then
prediction; with ``-a`` the same ``PREFIX.aproperty.out...`` files of the atomic property.

Dipole and polar models: RMSE of the global tensor (``dipole.npy``/``polarizability.npy``),
also divided by sqrt(N) and N (N = atoms of the selected types), or with ``-a`` of the atomic
tensors (``atomic_dipole.npy``...). Detail file ``PREFIX.out``: ``data_x ... pred_x ...``.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np

from ..data import DataRequirement, expand_systems, load_systems
from ..errors import DataError
from .detail_files import save_rows
from .dos_metrics import PER_SYSTEM_ONLY as PER_DOS
from .dos_metrics import dos_lines, dos_requirements, test_dos_system

log = logging.getLogger("lamkit.test")

_TENSOR = {
    "dipole": ("Dipole", ("x", "y", "z")),
    "polar": ("Polarizability", ("xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz")),
}


def _mae_rmse(d: np.ndarray) -> tuple[float, float]:
    return float(np.mean(np.abs(d))), float(np.sqrt(np.mean(d * d)))


def requirements(dp, atomic: bool) -> list[DataRequirement]:
    """The label files a test of ``dp``'s model reads."""
    od = dp.model.output_def
    kind = dp.output_kind()
    if kind == "dos":
        return dos_requirements(od.size, atomic)
    if kind == "property":
        where = f"the model's property '{od.name}' with task_dim {od.size}"
        reqs = [DataRequirement(od.label, od.size, must=True, origin=where)]
        if atomic:
            reqs.append(DataRequirement(od.atom_label, od.size, atomic=True))
        return reqs
    if atomic:
        return [DataRequirement(od.atom_label, od.size, atomic=True, must=True)]
    return [DataRequirement(od.label, od.size, must=True)]


def _inputs(system, n: int):
    mixed = system.mixed_type
    atype = system.atype[:n] if mixed else system.atype[0]
    box = system.box[:n] if system.box is not None else None
    return system.coords[:n], box, atype, mixed


def _per_frame_details(detail, system: str, group: int, suffix: str, label, pred) -> None:
    """One two-column file per frame (``dp test``'s ``_write_per_frame_details``)."""
    tag = f".{group}" if group else ""
    for f in range(label.shape[0]):
        rows = np.stack([label[f].reshape(-1), pred[f].reshape(-1)], axis=1)
        path = Path(detail).with_suffix(f".{suffix}.out{tag}.{f}")
        save_rows(path, rows, f"{system} - {f}: data_{suffix} pred_{suffix}", False)


def test_property_system(
    dp, system, n: int, detail=None, append=False, atomic=False, group: int = 0
) -> dict:
    """Errors of a property model on the first ``n`` frames of one loaded system (the
    ``group``-th tested: it numbers the detail files)."""
    od = dp.model.output_def
    coords, box, atype, mixed = _inputs(system, n)
    out = dp.eval(coords, box, atype, atomic=atomic, mixed_type=mixed)
    pred = out[0].reshape(n, -1)
    label = system.labels[od.label][:n].reshape(n, -1)
    d = pred - label
    res: dict = {"system": system.path, "nframes": n, "natoms": system.natoms}
    res["mae_property"], res["rmse_property"] = _mae_rmse(d)
    res["n_property"] = d.size
    for k in range(d.shape[1]):
        res[f"mae_property_{k}"], res[f"rmse_property_{k}"] = _mae_rmse(d[:, k])
        res[f"n_property_{k}"] = n
    atomic = atomic and bool(system.find.get(od.atom_label))
    if atomic:
        alabel = system.labels[od.atom_label][:n].reshape(n, -1)
        da = out[1].reshape(n, -1) - alabel
        res["mae_aproperty"], res["rmse_aproperty"] = _mae_rmse(da)
        res["n_aproperty"] = da.size
    if detail:
        _per_frame_details(detail, system.path, group, "property", label, pred)
        if atomic:
            apred = out[1].reshape(n, -1)
            _per_frame_details(detail, system.path, group, "aproperty", alabel, apred)
    return res


def test_tensor_system(dp, system, n: int, detail=None, append=False, atomic=False) -> dict:
    """Errors of a dipole/polar model (global, or with ``atomic`` per selected atom)."""
    od = dp.model.output_def
    coords, box, atype, mixed = _inputs(system, n)
    pred = dp.eval(coords, box, atype, atomic=atomic, mixed_type=mixed)
    types = system.atype[:n]
    sel = np.isin(types, dp.get_sel_type())  # [n, natoms]
    if atomic:
        label = system.labels[od.atom_label][:n].reshape(n, system.natoms, -1)
        pred, label = pred[sel], label[sel]  # [n_selected_atoms, size]
    else:
        label = system.labels[od.label][:n].reshape(n, -1)
    res: dict = {"system": system.path, "nframes": n, "natoms": system.natoms}
    d = pred - label
    _, res["rmse"] = _mae_rmse(d) if d.size else (0.0, float("nan"))
    res["n"] = d.size
    nsel = int(sel[0].sum())
    if not atomic and nsel:
        res["rmse_sqrtn"], res["rmse_n"] = res["rmse"] / np.sqrt(nsel), res["rmse"] / nsel
    if detail:
        comps = _TENSOR[dp.output_kind()][1]
        head = " ".join([f"data_{c}" for c in comps] + [f"pred_{c}" for c in comps])
        rows = np.concatenate([label.reshape(-1, len(comps)), pred.reshape(-1, len(comps))], 1)
        save_rows(Path(detail).with_suffix(".out"), rows, f"{system.path}: {head}", append)
    return res


def _lines(dp, res: dict) -> list[str]:
    kind = dp.output_kind()
    if kind == "dos":
        return dos_lines(res)
    if kind == "property":
        name = dp.model.output_def.name
        out = [
            f"PROPERTY MAE            : {res['mae_property']:e} units",
            f"PROPERTY RMSE           : {res['rmse_property']:e} units",
        ]
        k = 0
        while f"mae_property_{k}" in res:
            out.append(
                f"{name}[{k}] MAE / RMSE : {res[f'mae_property_{k}']:e} / "
                f"{res[f'rmse_property_{k}']:e} units"
            )
            k += 1
        if "mae_aproperty" in res:
            out.append(f"Atomic PROPERTY MAE     : {res['mae_aproperty']:e} units")
            out.append(f"Atomic PROPERTY RMSE    : {res['rmse_aproperty']:e} units")
        return out
    title = _TENSOR[kind][0]
    out = [f"{title}  RMSE       : {res['rmse']:e}"]
    if "rmse_sqrtn" in res:
        out.append(f"{title}  RMSE/sqrtN : {res['rmse_sqrtn']:e}")
        out.append(f"{title}  RMSE/N     : {res['rmse_n']:e}")
    return out


def weighted_average(results: list[dict]) -> dict:
    """Element-count weighted MAE and RMS-averaged RMSE of every metric the systems share."""
    avg: dict = {}
    for key in results[0] if results else ():
        if not key.startswith(("mae", "rmse")) or key in ("rmse_sqrtn", "rmse_n", *PER_DOS):
            continue  # the per-atom normalised tensor errors are per system only
        size = "n" + key.removeprefix("mae").removeprefix("rmse")  # rmse_property -> n_property
        rows = [(r[key], r[size]) for r in results if key in r and size in r]
        w = np.array([s for _, s in rows], dtype=np.float64)
        x = np.array([m for m, _ in rows], dtype=np.float64)
        if not len(rows) or w.sum() == 0:
            continue
        rms = key.startswith("rmse")
        avg[key] = float(np.sqrt((x * x * w).sum() / w.sum()) if rms else (x * w).sum() / w.sum())
        avg[size] = float(w.sum())
    return avg


def run_output_test(
    dp, spec, numb_test: int = 0, detail_file: str | None = None, atomic: bool = False
) -> dict:
    """``lam test`` of a DeepProperty/DeepDipole/DeepPolar on the systems of ``spec``."""
    systems = load_systems(
        expand_systems(spec), dp.get_type_map(), requirements(dp, atomic), sort_atoms=False
    )
    tester = test_property_system if dp.output_kind() == "property" else test_tensor_system
    results = []
    for k, s in enumerate(systems):
        n = s.nframes if numb_test <= 0 else min(numb_test, s.nframes)
        log.info("# ---------------output of lam test---------------")
        log.info("# testing system : %s", s.path)
        try:
            if dp.output_kind() == "dos":
                details = partial(_per_frame_details, detail_file) if detail_file else None
                res = test_dos_system(dp, s, n, _inputs, details, atomic=atomic, group=k)
            else:
                more = {"group": k} if tester is test_property_system else {}
                res = tester(dp, s, n, detail_file, append=k > 0, atomic=atomic, **more)
        except KeyError as exc:
            raise DataError(f"{s.path}: no label {exc} for this model") from None
        log.info("# number of test data : %d", n)
        for line in _lines(dp, res):
            log.info(line)
        results.append(res)
    avg = weighted_average(results)
    if len(results) > 1:
        log.info("# ----------weighted average of errors-----------")
        log.info("# number of systems : %d", len(results))
        for line in _lines(dp, avg):
            log.info(line)
    log.info("# -----------------------------------------------")
    return {"systems": results, "average": avg}
