"""Error measures and detail files of ``lam test`` (``PREFIX.e.out``, ``.f.out``, ...), shared
by the energy (:mod:`.metrics`), spin (:mod:`.spin_eval`) and output (:mod:`.output_metrics`)
tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COMPS = ("xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz")


def mae_rmse(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """MAE and RMSE of ``pred - label`` over all elements."""
    d = pred - label
    return float(np.mean(np.abs(d))), float(np.sqrt(np.mean(d * d)))


def save_rows(path: Path, data: np.ndarray, header: str, append: bool) -> None:
    """``np.savetxt`` to ``path``; ``append`` adds to it, with the header only if it is empty."""
    write_header = not (append and path.exists() and path.stat().st_size > 0)
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        np.savetxt(fh, data, header=header if write_header else "")


def save_virials(p: Path, name: str, label, pred, box, natoms: int, append: bool) -> None:
    """``.v.out`` and ``.v_peratom.out`` as ``dp test`` writes them, for every system (zero
    labels when there are none, predicted virials also without a cell); with virial labels and
    a cell (``box``) also ``.s.out``, the stress ``-virial / volume`` in eV/Å^3."""
    cols = [f"data_v{c}" for c in _COMPS] + [f"pred_v{c}" for c in _COMPS]
    pv = np.concatenate([label.reshape(-1, 9), pred.reshape(-1, 9)], axis=1)
    save_rows(p.with_suffix(".v.out"), pv, f"{name}: " + " ".join(cols), append)
    save_rows(p.with_suffix(".v_peratom.out"), pv / natoms, f"{name}: " + " ".join(cols), append)
    if box is not None:
        volume = np.abs(np.linalg.det(np.reshape(box, (-1, 3, 3)))).reshape(-1, 1)
        cols = [f"data_s{c}" for c in _COMPS] + [f"pred_s{c}" for c in _COMPS]
        stress = -pv / volume
        save_rows(p.with_suffix(".s.out"), stress, f"{name} (eV/Å³): " + " ".join(cols), append)
