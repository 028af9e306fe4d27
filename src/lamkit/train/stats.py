"""Statistics computed once before training: neighbour counts (``sel: "auto"``), descriptor
davg/dstd, the per-type energy bias and fparam/aparam normalisation, with an optional cache
file (``training.stat_file``, HDF5)."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import keys
from ..data import System, SystemLoader
from ..descriptor.env_stat import EnvStat
from ..errors import ConfigError
from ..geometry.neighbor import NeighborBuilder
from ..model.out_stat import regression_stats, set_output_stats

log = logging.getLogger("lamkit.train")


def neighbor_stat(
    systems: list[System], rcut: float | Sequence[float], ntypes: int, mixed_types: bool
):
    """Maximum neighbour count within ``rcut`` (r < rcut) per neighbour type (or in total when
    ``mixed_types``) over every frame, and the minimum pair distance (Å).

    With a list of cutoffs, one pass over the data gives a list of counts, one per cutoff.
    """
    from vesin import NeighborList

    rcuts = [float(rcut)] if isinstance(rcut, (int, float)) else [float(r) for r in rcut]
    nl = NeighborList(cutoff=max(rcuts), full_list=True)
    max_count = np.zeros((len(rcuts), ntypes), dtype=np.int64)
    max_total = np.zeros(len(rcuts), dtype=np.int64)
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
            min_dist = min(min_dist, float(d.min()))
            for k, rc in enumerate(rcuts):
                inside = d < rc
                slot = i[inside] * ntypes + at[j[inside]]
                counts = np.bincount(slot, minlength=n * ntypes).reshape(n, ntypes)
                max_count[k] = np.maximum(max_count[k], counts.max(0))
                max_total[k] = max(max_total[k], int(counts.sum(1).max()))
    out = [int(t) if mixed_types else c.tolist() for t, c in zip(max_total, max_count)]
    return (out[0] if isinstance(rcut, (int, float)) else out), min_dist


def resolve_sel(sel, counts) -> list[int] | int:
    """``"auto"`` / ``"auto:factor"`` -> ``counts * factor`` (factor 1.1 by default), truncated to
    an integer and rounded up to a multiple of 4, as DeePMD-kit's ``update_sel`` does."""
    ratio = 1.1
    if isinstance(sel, str):
        words = sel.split(":")
        if words[0] != "auto" or len(words) > 2:
            raise ConfigError(f"'{sel}': expected a number, 'auto' or 'auto:factor'")
        if len(words) == 2:
            try:
                ratio = float(words[1])
            except ValueError:
                raise ConfigError(f"'{sel}': the factor after 'auto:' is not a number") from None

    def up4(n):
        return 4 * ((int(n * ratio) + 3) // 4)

    return [up4(c) for c in counts] if isinstance(counts, list) else up4(counts)


def auto_selections(descriptor_config: dict) -> list[tuple[dict, tuple[str, ...], float]]:
    """The neighbour counts of a normalised descriptor config still given as "auto" or
    "auto:factor": ``(parent dict, key path, rcut)`` for each."""
    from ..descriptor import DESCRIPTORS

    cls = DESCRIPTORS.get(descriptor_config.get("type", "se_e2_a"))
    out = []
    for path, rc in cls.neighbor_selections(descriptor_config):
        parent = descriptor_config
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent.get(path[-1]), str):
            out.append((parent, path, rc))
    return out


def resolve_auto_sel(descriptor_config: dict, systems: list[System], ntypes: int) -> list[str]:
    """Replace every "auto"/"auto:factor" neighbour count of a normalised descriptor config in
    place, from one pass over ``systems`` for all cutoffs (DeePMD-kit's ``update_sel``);
    returns what was done, as log lines."""
    from ..descriptor import DESCRIPTORS

    todo = auto_selections(descriptor_config)
    if not todo:
        return []
    mixed = DESCRIPTORS.get(descriptor_config.get("type", "se_e2_a")).mixed_types
    counts, min_d = neighbor_stat(systems, [rc for _, _, rc in todo], ntypes, mixed)
    lines = []
    for (parent, path, rc), cnt in zip(todo, counts):
        where = "/".join(path)
        try:
            parent[path[-1]] = resolve_sel(parent[path[-1]], cnt)
        except ConfigError as exc:
            raise ConfigError(f"model/descriptor/{where}: {exc}") from None
        lines.append(
            f"neighbour statistics within {rc} Å: max neighbours {cnt}, min distance "
            f"{min_d:.4f} Å -> {where} {parent[path[-1]]}"
        )
    return lines


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
    fixed = None
    if preset is not None:
        fixed = np.array([[np.nan if v is None else float(v)] for v in preset])
    y = np.concatenate(ys)
    bias, _ = regression_stats(y, np.concatenate(rows), rcond=rcond, preset=fixed)
    return bias.reshape(ntypes, 1)


def _stat_keys(model) -> dict[str, str]:
    """Cache key of each statistics block (``""`` for a descriptor with a single block).

    Blocks whose statistics depend on the same things share a key, so they are stored once
    (in DPA-2 the three-body and repformer blocks usually do, as in the reference's file).
    """
    ids = model.descriptor.stat_id()
    ids = ids if isinstance(ids, dict) else {"": ids}
    tm = " ".join(model.type_map)
    return {
        name: hashlib.sha1(f"{text}|type_map={tm}".encode()).hexdigest()[:16]
        for name, text in ids.items()
    }


def _read_cached(stat_file: str | None, keys_: dict[str, str]) -> dict[str, EnvStat] | None:
    if not stat_file or not Path(stat_file).exists():
        return None
    import h5py

    with h5py.File(stat_file, "r") as h5:
        if not all(k in h5 for k in keys_.values()):
            return None
        return {
            name: EnvStat.from_arrays({"r": h5[k]["r"][()], "a": h5[k]["a"][()]})
            for name, k in keys_.items()
        }


def _write_cached(stat_file: str, keys_: dict[str, str], stats: dict[str, EnvStat], model):
    import h5py

    Path(stat_file).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(stat_file, "a") as h5:
        for key in dict.fromkeys(keys_.values()):
            names = [n for n, k in keys_.items() if k == key]
            if key in h5:
                del h5[key]
            g = h5.create_group(key)
            g["r"], g["a"] = stats[names[0]].r, stats[names[0]].a
            g.attrs["type_map"] = " ".join(model.type_map)
            g.attrs["descriptor"] = type(model.descriptor).__name__
            if names != [""]:
                g.attrs["blocks"] = " ".join(names)


def compute_descriptor_stat(
    model,
    batches: list[dict],
    protection: float,
    stat_file: str | None = None,
    stat_mode: str = "update",
) -> EnvStat | dict[str, EnvStat]:
    """davg/dstd of the model's descriptor, from the cache file when it has them.

    Returns what ``descriptor.env_stat`` returns: one ``EnvStat``, or a dict of them for
    descriptors with several blocks (DPA-2: repinit, three_body, repformer). The HDF5 file
    holds one group ``<key>/{r, a}`` per block (``[ntypes, 3]``: count, sum, sum of squares of
    the radial and the angular columns). ``stat_mode`` ``"update"`` computes what the file lacks
    and writes it; ``"read"`` (``training.stat_file_mode``) needs the file complete and never
    writes it, so that several runs can share one file.
    """
    keys_ = _stat_keys(model)
    stats = _read_cached(stat_file, keys_)
    if stats is None and stat_mode == "read":
        what = "does not exist" if not Path(stat_file).exists() else "lacks this descriptor's"
        raise ConfigError(
            f"training/stat_file {stat_file}: stat_file_mode is 'read' but the file {what}"
            + (" statistics" if what.startswith("lacks") else "")
            + " (run once with stat_file_mode 'update' to write them)"
        )
    if stats is not None:
        log.info("descriptor statistics read from %s", stat_file)
    else:
        st = model.descriptor.env_stat(_extended(model, batches))
        stats = st if isinstance(st, dict) else {"": st}
        if set(stats) != set(keys_):
            raise ValueError(
                f"{type(model.descriptor).__name__}: env_stat gave blocks {sorted(stats)} but "
                f"stat_id names {sorted(keys_)}"
            )
        if stat_file and stat_mode != "read":
            _write_cached(stat_file, keys_, stats, model)
            log.info("descriptor statistics saved to %s", stat_file)
    result = stats[""] if list(stats) == [""] else stats
    model.descriptor.set_stat(result, protection)
    return result


def fparam_stat(batches: list[dict], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and 1/std (std floored at 1e-2) of a frame/atomic parameter."""
    vals = [b[key].reshape(-1, b[key].shape[-1]).numpy() for b in batches if key in b]
    if not vals:
        return None
    v = np.concatenate(vals)
    return v.mean(0), 1.0 / np.maximum(v.std(0), 1e-2)


@torch.no_grad()
def set_model_statistics(
    model, batches: list[dict], conf: dict, stat_file=None, stat_mode="update"
):
    """All statistics a freshly initialised model needs, set in place; returns the descriptor's
    environment statistics (for merging over tasks that share the descriptor)."""
    pack = getattr(model, "statistics_batches", None)
    if pack is not None:  # spin models: the statistics of the system with its virtual atoms
        batches = pack(batches)
    protect = conf.get("data_stat_protect", 1e-2)
    env = compute_descriptor_stat(model, batches, protect, stat_file, stat_mode)
    for member in getattr(model, "dp_models", ()):  # linear_ener: every DP model's own
        compute_descriptor_stat(member, batches, protect, stat_file, stat_mode)
    bias = None
    if model.output_def.kind == "energy":
        preset = (conf.get("preset_out_bias") or {}).get("energy")
        bias = energy_bias(batches, model.ntypes, model.fitting.rcond, preset)
    else:  # property, dipole, polar: bias and std (lamkit.model.out_stat)
        set_output_stats(model, batches, conf)
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
    return env
