"""Statistics computed once before training: neighbour counts (``sel: "auto"``), descriptor
davg/dstd, the per-type energy bias and fparam/aparam normalisation, with an optional cache
file (``training.stat_file``, HDF5)."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import torch

from .. import keys
from ..data import System, SystemLoader
from ..descriptor.env_stat import EnvStat
from ..geometry.neighbor import NeighborBuilder

log = logging.getLogger("lamkit.train")


def neighbor_stat(systems: list[System], rcut: float, ntypes: int, mixed_types: bool):
    """Maximum neighbour count within ``rcut`` per neighbour type (or in total when
    ``mixed_types``) over every frame, and the minimum pair distance (Å)."""
    from vesin import NeighborList

    nl = NeighborList(cutoff=float(rcut), full_list=True)
    max_count = np.zeros(ntypes, dtype=np.int64)
    max_total = 0
    min_dist = math.inf
    for s in systems:
        for f in range(s.nframes):
            at = s.atype[f]
            n = len(at)
            if s.box is not None:
                i, j, d = nl.compute(s.coords[f], s.box[f].reshape(3, 3), True, "ijd")
            else:
                i, j, d = nl.compute(s.coords[f], np.zeros((3, 3)), False, "ijd")
            i, j = i.astype(np.int64), j.astype(np.int64)
            keep = (at[i] >= 0) & (at[j] >= 0)
            i, j, d = i[keep], j[keep], d[keep]
            if len(d) == 0:
                continue
            counts = np.bincount(i * ntypes + at[j], minlength=n * ntypes).reshape(n, ntypes)
            max_count = np.maximum(max_count, counts.max(0))
            max_total = max(max_total, int(counts.sum(1).max()))
            min_dist = min(min_dist, float(d.min()))
    return (max_total if mixed_types else max_count.tolist()), min_dist


def resolve_sel(sel, counts) -> list[int] | int:
    """``"auto"`` / ``"auto:ratio"`` -> counts * ratio rounded up to a multiple of 4."""
    ratio = 1.1
    if isinstance(sel, str) and ":" in sel:
        ratio = float(sel.split(":", 1)[1])

    def up4(n):
        return int(math.ceil(n * ratio / 4.0) * 4)

    return [up4(c) for c in counts] if isinstance(counts, list) else up4(counts)


def stat_batches(systems: list[System], batch_sizes: list[int], nbatch: int, seed) -> list[dict]:
    """``nbatch`` shuffled batches from every system (fewer if a system has fewer)."""
    out = []
    streams = np.random.SeedSequence(seed).spawn(len(systems))
    for sid, (s, bs) in enumerate(zip(systems, batch_sizes)):
        loader = SystemLoader(s, bs, seed=streams[sid], sid=sid)
        for _ in range(min(nbatch, len(loader))):
            out.append(loader.next_batch())
    return out


def _extended(model, batches: list[dict]):
    builder = NeighborBuilder(model.rcut, model.sel, model.mixed_types)
    for b in batches:
        nbr = builder(b[keys.COORD], b[keys.ATYPE], b.get(keys.BOX))
        ext, ext_atype = model.extend(b[keys.COORD], b[keys.ATYPE], b.get(keys.BOX), nbr)
        yield {keys.EXT_COORD: ext, keys.EXT_ATYPE: ext_atype, keys.NLIST: nbr[keys.NLIST]}


def energy_bias(
    batches: list[dict], ntypes: int, rcond=None, preset=None, residual_model=None
) -> np.ndarray | None:
    """Per-type energy bias [ntypes, 1] by least squares of frame energies on type counts.

    With ``residual_model`` the regression is on ``E_label - E_model`` (change-by-statistic).
    ``preset`` holds fixed values (None = fit) per type.
    """
    rows, ys = [], []
    for b in batches:
        if not b.get(keys.find_key(keys.ENERGY), 0.0):
            continue
        counts = b[keys.NATOMS][:, 2:].numpy().astype(np.float64)
        y = b[keys.ENERGY].numpy().reshape(-1).astype(np.float64)
        if residual_model is not None:
            pred = residual_model.evaluate(
                b[keys.COORD], b[keys.ATYPE], b.get(keys.BOX), do_force=False, do_virial=False
            )
            y = y - pred[keys.ENERGY].detach().numpy().reshape(-1)
        rows.append(counts)
        ys.append(y)
    if not rows:
        return None
    A = np.concatenate(rows)
    y = np.concatenate(ys)
    fixed = np.zeros(ntypes, dtype=bool)
    bias = np.zeros(ntypes)
    if preset is not None:
        for t, v in enumerate(preset):
            if v is not None:
                fixed[t] = True
                bias[t] = float(v)
        y = y - A[:, fixed] @ bias[fixed]
    free = ~fixed & (A.sum(0) > 0)
    if free.any():
        sol = np.linalg.lstsq(A[:, free], y, rcond=rcond)[0]
        bias[free] = sol
    return bias.reshape(ntypes, 1)


def _stat_key(model) -> str:
    d = model.descriptor
    text = f"{type(d).__name__}|{d.rcut}|{d.rcut_smth}|{d.sel}|{d.mixed_types}|{model.type_map}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def compute_descriptor_stat(
    model, batches: list[dict], protection: float, stat_file: str | None = None
) -> EnvStat:
    """davg/dstd of the model's descriptor, from the cache file when it has them."""
    key = _stat_key(model)
    if stat_file and Path(stat_file).exists():
        import h5py

        with h5py.File(stat_file, "r") as h5:
            if key in h5:
                st = EnvStat.from_arrays({"r": h5[key]["r"][()], "a": h5[key]["a"][()]})
                log.info("descriptor statistics read from %s", stat_file)
                model.descriptor.set_stat(st, protection)
                return st
    st = model.descriptor.env_stat(_extended(model, batches))
    model.descriptor.set_stat(st, protection)
    if stat_file:
        import h5py

        Path(stat_file).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(stat_file, "a") as h5:
            if key in h5:
                del h5[key]
            g = h5.create_group(key)
            g["r"], g["a"] = st.r, st.a
            g.attrs["type_map"] = " ".join(model.type_map)
        log.info("descriptor statistics saved to %s", stat_file)
    return st


def fparam_stat(batches: list[dict], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and 1/std (std floored at 1e-2) of a frame/atomic parameter."""
    vals = [b[key].reshape(-1, b[key].shape[-1]).numpy() for b in batches if key in b]
    if not vals:
        return None
    v = np.concatenate(vals)
    return v.mean(0), 1.0 / np.maximum(v.std(0), 1e-2)


@torch.no_grad()
def set_model_statistics(model, batches: list[dict], conf: dict, stat_file=None) -> None:
    """All statistics a freshly initialised model needs, set in place."""
    compute_descriptor_stat(model, batches, conf.get("data_stat_protect", 1e-2), stat_file)
    preset = (conf.get("preset_out_bias") or {}).get("energy")
    bias = energy_bias(batches, model.ntypes, model.fitting.rcond, preset)
    if bias is not None:
        model.out_bias.copy_(torch.as_tensor(bias, dtype=model.out_bias.dtype))
        log.info(
            "energy bias per type %s: %s",
            model.type_map,
            np.array2string(bias.ravel(), precision=6),
        )
    fit = model.fitting
    for name, n in (("fparam", fit.numb_fparam), ("aparam", fit.numb_aparam)):
        if n:
            st = fparam_stat(batches, name)
            if st is not None:
                getattr(fit, f"{name}_avg").copy_(torch.as_tensor(st[0]))
                getattr(fit, f"{name}_inv_std").copy_(torch.as_tensor(st[1]))
