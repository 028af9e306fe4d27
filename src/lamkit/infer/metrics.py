"""``lam test``: errors of a model on labelled systems, as ``dp test`` reports them.

Per system: energy MAE/RMSE (total and per atom), force MAE/RMSE over all components, virial
MAE/RMSE (total and per atom; only when the system has virial labels and is periodic).
Across systems the averages are weighted by the number of label elements (frames for energy,
frames*natoms*3 for forces, frames*9 for virials): ``RMSE = sqrt(sum rmse_s^2 n_s / sum n_s)``.
Detail files ``PREFIX.e.out``, ``.e_peratom.out``, ``.f.out``, ``.v.out``, ``.v_peratom.out``
(every system, periodic or not) and ``.s.out`` (with virial labels and a cell) use the
reference's names and columns so existing analysis scripts keep working. A Hessian model
(trained with ``start_pref_h``) needs ``hessian.npy`` in every system, adds Hessian MAE/RMSE
(eV/Å^2, weighted by frames*(3 natoms)^2) and writes ``.h.out`` (data_h pred_h, one element a
line, each frame's (3 natoms)^2 matrix in row-major order).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import keys
from ..data import DataRequirement, expand_systems, load_systems
from .detail_files import mae_rmse, save_rows, save_virials

log = logging.getLogger("lamkit.test")

_LINES = [
    ("mae_e", "Energy MAE         : {:e} eV"),
    ("rmse_e", "Energy RMSE        : {:e} eV"),
    ("mae_ea", "Energy MAE/Natoms  : {:e} eV"),
    ("rmse_ea", "Energy RMSE/Natoms : {:e} eV"),
    ("mae_f", "Force  MAE         : {:e} eV/Å"),
    ("rmse_f", "Force  RMSE        : {:e} eV/Å"),
    ("mae_fr", "Force atom MAE     : {:e} eV/Å"),
    ("rmse_fr", "Force atom RMSE    : {:e} eV/Å"),
    ("mae_fm", "Force spin MAE     : {:e} eV/uB"),
    ("rmse_fm", "Force spin RMSE    : {:e} eV/uB"),
    ("mae_v", "Virial MAE         : {:e} eV"),
    ("rmse_v", "Virial RMSE        : {:e} eV"),
    ("mae_va", "Virial MAE/Natoms  : {:e} eV"),
    ("rmse_va", "Virial RMSE/Natoms : {:e} eV"),
    ("mae_h", "Hessian MAE        : {:e} eV/Å^2"),
    ("rmse_h", "Hessian RMSE       : {:e} eV/Å^2"),
]
_SIZE_KEY = {"e": "n_e", "f": "n_f", "v": "n_v", "h": "n_h", "fr": "n_fr", "fm": "n_fm"}


def test_system(
    dp,
    system,
    numb_test: int = 0,
    detail: str | None = None,
    append: bool = False,
    atomic: bool = False,
) -> dict:
    """Metrics of one loaded system (atoms in file order)."""
    n = system.nframes if numb_test <= 0 else min(numb_test, system.nframes)
    coords = system.coords[:n]
    box = system.box[:n] if system.box is not None else None
    mixed = system.mixed_type
    atype = system.atype[:n] if mixed else system.atype[0]
    out = dp.eval(coords, box, atype, atomic=atomic, mixed_type=mixed)
    e, f, v = out[0], out[1], out[2]
    natoms = system.natoms
    res: dict = {"system": system.path, "nframes": n, "natoms": natoms, "pairs": {}}
    lab = system.labels
    if system.find.get(keys.ENERGY):
        res["mae_e"], res["rmse_e"] = mae_rmse(e.reshape(-1), lab[keys.ENERGY][:n].reshape(-1))
        res["mae_ea"], res["rmse_ea"] = res["mae_e"] / natoms, res["rmse_e"] / natoms
        res["n_e"] = n
        res["pairs"]["energy/atom"] = (
            lab[keys.ENERGY][:n].reshape(-1) / natoms,
            e.reshape(-1) / natoms,
        )
    if system.find.get(keys.FORCE):
        res["mae_f"], res["rmse_f"] = mae_rmse(f.reshape(-1), lab[keys.FORCE][:n].reshape(-1))
        res["n_f"] = n * natoms * 3
        res["pairs"]["force"] = (lab[keys.FORCE][:n].reshape(-1), f.reshape(-1))
    has_v = bool(system.find.get(keys.VIRIAL)) and system.pbc
    if has_v:
        res["mae_v"], res["rmse_v"] = mae_rmse(v.reshape(-1), lab[keys.VIRIAL][:n].reshape(-1))
        res["mae_va"], res["rmse_va"] = res["mae_v"] / natoms, res["rmse_v"] / natoms
        res["n_v"] = n * 9
        res["pairs"]["virial/atom"] = (
            lab[keys.VIRIAL][:n].reshape(-1) / natoms,
            v.reshape(-1) / natoms,
        )
    hess = out[-1] if getattr(dp, "has_hessian", False) else None
    if hess is not None:
        res["mae_h"], res["rmse_h"] = mae_rmse(hess.reshape(-1), lab[keys.HESSIAN][:n].reshape(-1))
        res["n_h"] = hess.size
    if detail:
        p = Path(detail)
        name = system.path
        pe = np.concatenate([lab[keys.ENERGY][:n].reshape(-1, 1), e.reshape(-1, 1)], axis=1)
        save_rows(p.with_suffix(".e.out"), pe, f"{name}: data_e pred_e", append)
        save_rows(p.with_suffix(".e_peratom.out"), pe / natoms, f"{name}: data_e pred_e", append)
        pf = np.concatenate([lab[keys.FORCE][:n].reshape(-1, 3), f.reshape(-1, 3)], axis=1)
        save_rows(
            p.with_suffix(".f.out"),
            pf,
            f"{name}: data_fx data_fy data_fz pred_fx pred_fy pred_fz",
            append,
        )
        save_virials(p, name, lab[keys.VIRIAL][:n], v, box if has_v else None, natoms, append)
        if hess is not None:
            ph = np.stack([lab[keys.HESSIAN][:n].reshape(-1), hess.reshape(-1)], axis=1)
            header = f"{name}: data_h pred_h (3Na*3Na matrix in row-major order)"
            save_rows(p.with_suffix(".h.out"), ph, header, append)
    return res


def plot_parity(pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]], out: Path) -> Path:
    """Label-vs-prediction scatter plots (one panel per quantity) written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k, v in pairs.items() if v]
    units = {"energy/atom": "eV", "force": "eV/Å", "virial/atom": "eV", "magnetic force": "eV/μB"}
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        lab = np.concatenate([a.ravel() for a, _ in pairs[name]])
        pred = np.concatenate([b.ravel() for _, b in pairs[name]])
        lo, hi = float(min(lab.min(), pred.min())), float(max(lab.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.scatter(lab, pred, s=4, alpha=0.5)
        rmse = float(np.sqrt(np.mean((pred - lab) ** 2)))
        ax.set_title(f"{name}: RMSE {rmse:.3g} {units[name]}")
        ax.set_xlabel(f"label ({units[name]})")
        ax.set_ylabel(f"prediction ({units[name]})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def weighted_average(results: list[dict]) -> dict:
    """Element-count weighted MAE and RMS-averaged RMSE across systems."""
    avg: dict = {}
    for key, _ in _LINES:
        kind = key.split("_")[1]
        nkey = _SIZE_KEY.get(kind) or _SIZE_KEY[kind[0]]
        rows = [(r[key], r[nkey]) for r in results if key in r]
        if not rows:
            continue
        w = np.array([n for _, n in rows], dtype=np.float64)
        x = np.array([m for m, _ in rows])
        avg[key] = float(
            np.sqrt((x * x * w).sum() / w.sum())
            if key.startswith("rmse")
            else (x * w).sum() / w.sum()
        )
    return avg


def _report(title: str, res: dict) -> None:
    for key, fmt in _LINES:
        if key in res:
            log.info(fmt.format(res[key]))


def run_test(
    model,
    system: str | None = None,
    datafile: str | None = None,
    numb_test: int = 0,
    detail_file: str | None = None,
    atomic: bool = False,
    head: str | None = None,
) -> dict:
    """Test ``model`` (path, DeepPot, DeepProperty, DeepDipole or DeepPolar) on every system
    found; returns per-system results and the weighted average under ``"average"``. Property,
    dipole and polar models are tested by :mod:`.output_metrics`."""
    from .deep_pot import DeepEval, DeepPot
    from .deep_property import open_model

    dp = model if isinstance(model, DeepEval) else open_model(model, head=head)
    if datafile:
        spec = [ln.strip() for ln in Path(datafile).read_text().splitlines() if ln.strip()]
    elif system:
        spec = system
    else:
        raise ValueError("give a system (-s) or a file listing systems (-f)")
    if not isinstance(dp, DeepPot):
        from .output_metrics import run_output_test

        return run_output_test(dp, spec, numb_test, detail_file, atomic)
    reqs = [
        DataRequirement(keys.ENERGY, 1),
        DataRequirement(keys.FORCE, 3, atomic=True),
        DataRequirement(keys.VIRIAL, 9),
    ]
    if getattr(dp, "has_hessian", False):  # as dp test: a Hessian model needs the labels
        reqs.append(DataRequirement(keys.HESSIAN, 1, must=True, origin="the Hessian model"))
    tester = test_system
    if getattr(dp, "has_spin", False):  # lamkit.infer.spin_eval
        from .spin_eval import test_spin_system as tester

        reqs.append(DataRequirement(keys.SPIN, 3, atomic=True, must=True, origin="the spin model"))
        reqs.append(DataRequirement(keys.FORCE_MAG, 3, atomic=True))
    systems = load_systems(expand_systems(spec), dp.get_type_map(), reqs, sort_atoms=False)
    results = []
    for k, s in enumerate(systems):
        log.info("# ---------------output of lam test---------------")
        log.info("# testing system : %s", s.path)
        res = tester(dp, s, numb_test, detail_file, append=k > 0, atomic=atomic)
        log.info("# number of test data : %d", res["nframes"])
        _report(s.path, res)
        results.append(res)
    if detail_file and results:
        pairs: dict = {}
        for r in results:
            for k, v in r.pop("pairs").items():
                pairs.setdefault(k, []).append(v)
        png = plot_parity(pairs, Path(detail_file).with_suffix(".parity.png"))
        log.info("parity plot written to %s", png)
    else:
        for r in results:
            r.pop("pairs", None)
    avg = weighted_average(results)
    if len(results) > 1:
        log.info("# ----------weighted average of errors-----------")
        log.info("# number of systems : %d", len(results))
        _report("average", avg)
    log.info("# -----------------------------------------------")
    return {"systems": results, "average": avg}
