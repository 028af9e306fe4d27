"""Output statistics of non-energy models (``out_bias``/``out_std``), computed once before
training from the labels of the statistics batches (DeePMD-kit 3.2
``deepmd/pt/utils/stat.py::compute_output_stats`` and ``deepmd/utils/out_stat.py``).

Global labels ``y`` [nf, size] with per-frame type counts ``N`` [nf, ntypes] (real atoms only;
atom-excluded types count zero):

* per-type statistics (the default; property ``distinguish_types``, dipole, polar): the least
  squares solution ``b`` of ``N b = y`` (``N / sum(N)``, the type fractions, for intensive
  outputs) is the bias of every type; the std of the residual ``y - N b`` (one value per
  component) is every type's std;
* ``distinguish_types: false`` (property): the mean and std of ``y`` (of ``y / natoms`` for
  extensive outputs), the same for every type.

Atomic labels (``atom_<property_name>``, ``atomic_dipole``, ``atomic_polarizability``), when
present, give the per-type mean and std directly; global values fill the types they miss.
``preset_out_bias`` fixes the bias of chosen types before the regression. Energy models use
:func:`lamkit.train.stats.energy_bias`, the same regression without the std.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .. import keys
from ..errors import ConfigError

log = logging.getLogger("lamkit.train")


def regression_stats(
    y: np.ndarray,
    counts: np.ndarray,
    intensive: bool = False,
    rcond: float | None = None,
    preset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-type bias [ntypes, size] of ``counts @ bias ~ y`` and the residual std [size].

    ``preset`` [ntypes, size] holds fixed biases (NaN rows: fit those types).
    """
    counts = np.asarray(counts, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(counts), -1).copy()
    if intensive:
        counts = counts / counts.sum(1, keepdims=True)
    fixed = np.zeros(counts.shape[1], dtype=bool)
    if preset is not None:
        fixed = ~np.isnan(preset).any(1)
        y -= counts[:, fixed] @ preset[fixed]
        counts = counts.copy()
        counts[:, fixed] = 0.0
    bias = np.linalg.lstsq(counts, y, rcond=rcond)[0]
    if preset is not None:
        bias[fixed] = preset[fixed]
    std = (y - counts @ np.where(fixed[:, None], 0.0, bias)).std(0)
    return bias, std


def mean_stats(
    y: np.ndarray, counts: np.ndarray, intensive: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean [size] and std [size] of ``y`` (of ``y / natoms`` for extensive outputs)."""
    y = np.asarray(y, dtype=np.float64).reshape(len(counts), -1)
    if not intensive:
        y = y / np.asarray(counts, dtype=np.float64).sum(1, keepdims=True)
    return y.mean(0), y.std(0)


def atomic_stats(values: np.ndarray, atype: np.ndarray, ntypes: int):
    """Per-type mean and std [ntypes, size] of atomic labels (NaN for absent types)."""
    size = values.shape[-1]
    bias = np.full((ntypes, size), np.nan)
    std = np.full((ntypes, size), np.nan)
    for t in range(ntypes):
        sel = values[atype == t]
        if len(sel):
            bias[t], std[t] = sel.mean(0), sel.std(0)
    return bias, std


def _preset(model, conf: dict | None) -> np.ndarray | None:
    od = model.output_def
    table = (conf or {}).get("preset_out_bias") or {}
    values = table.get(od.name, table.get(od.label))
    if values is None:
        return None
    if len(values) != model.ntypes:
        raise ConfigError(
            f"model/preset_out_bias/{od.name}: expected one entry per type ({model.ntypes}), "
            f"got {len(values)}"
        )
    out = np.full((model.ntypes, od.size), np.nan)
    for t, v in enumerate(values):
        if v is not None:
            out[t] = np.asarray(v, dtype=np.float64).reshape(-1)
    return out


def _collect(batches: list[dict], key: str, model, atomic: bool):
    """Labels of the batches that have ``key``, with type counts (or types, if atomic)."""
    ys, rows = [], []
    excluded = list(model.atom_exclude_types)
    for b in batches:
        if key not in b or not float(b.get(keys.find_key(key), 0.0)):
            continue
        if atomic:
            atype = b[keys.ATYPE].numpy()
            ys.append(b[key].numpy().reshape(*atype.shape, -1)[atype >= 0])
            rows.append(atype[atype >= 0])
        else:
            counts = b[keys.NATOMS][:, 2:].numpy().astype(np.float64)
            counts[:, excluded] = 0.0
            ys.append(b[key].numpy().reshape(len(counts), -1))
            rows.append(counts)
    if not ys:
        return None
    return np.concatenate(ys), np.concatenate(rows)


def compute_output_stats(model, batches: list[dict], conf: dict | None = None):
    """``(out_bias, out_std)`` [ntypes, size] of ``model``'s output from labelled batches, or
    None when no batch has a label for it."""
    od = model.output_def
    ntypes = model.ntypes
    bias = std = None
    if od.atom_label is not None:
        got = _collect(batches, od.atom_label, model, atomic=True)
        if got is not None:
            bias, std = atomic_stats(got[0], got[1], ntypes)
    got = _collect(batches, od.label, model, atomic=False)
    if got is not None:
        y, counts = got
        if getattr(model.fitting, "distinguish_types", True):
            rcond = getattr(model.fitting, "rcond", None)
            gb, gs = regression_stats(y, counts, od.intensive, rcond, _preset(model, conf))
            recon = (counts / counts.sum(1, keepdims=True) if od.intensive else counts) @ gb
            diff = recon - y
            if not od.intensive:
                diff = diff / counts.sum(1, keepdims=True)
            what = "" if od.intensive else " per atom"
            log.info(
                "RMSE of %s%s after linear regression: %.6g",
                od.label,
                what,
                float(np.sqrt(np.mean(diff * diff))),
            )
        else:
            mean, gs = mean_stats(y, counts, od.intensive)
            gb = np.tile(mean, (ntypes, 1))
        gs = np.tile(gs, (ntypes, 1))
        if bias is None:
            bias, std = gb, gs
        else:  # atomic labels first; global values for the types they miss
            bias = np.where(np.isnan(bias), gb, bias)
            std = np.where(np.isnan(std), gs, std)
    if bias is None:
        return None
    return np.nan_to_num(bias), np.nan_to_num(std)


@torch.no_grad()
def set_output_stats(model, batches: list[dict], conf: dict | None = None) -> bool:
    """Set ``model.out_bias``/``out_std`` from the batches; False when they hold no label."""
    stats = compute_output_stats(model, batches, conf)
    if stats is None:
        return False
    bias, std = stats
    model.out_bias.copy_(torch.as_tensor(bias, dtype=model.out_bias.dtype))
    model.out_std.copy_(torch.as_tensor(std, dtype=model.out_std.dtype))
    log.info(
        "%s output statistics per type %s: bias %s, std %s",
        model.output_def.name,
        model.type_map,
        np.array2string(bias, precision=6, threshold=64),  # a 250-point DOS: summarised
        np.array2string(std[0], precision=6, threshold=64),
    )
    return True
