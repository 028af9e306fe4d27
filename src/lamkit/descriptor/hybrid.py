"""hybrid: a list of descriptors whose per-atom outputs are concatenated.

The model builds one neighbour list for the whole list: the largest cutoff, and per type the
largest count of the sub-descriptors (``sel``). It mixes types when any sub-descriptor does
(then ``sel`` is one number, the largest total count). Each sub-descriptor sees a cut of it:

* same kind of list as the hybrid's: in every type block (one block when mixed) its first
  ``sel[t]`` slots, nearest first;
* a type-sorted descriptor (se_e2_a) inside a mixed hybrid: the mixed list regrouped by
  neighbour type (stable, nearest first, per type the largest count of the type-sorted
  sub-descriptors), then cut as above.

Neighbours beyond a sub-descriptor's own cutoff may remain in its slots; they enter with a zero
switch, as in DeePMD-kit. Cuts keep the nearest neighbours: each block is sorted by distance
first (the model's neighbour list need not be). ``rot_mat`` is the sub-descriptors' rotation
matrices stacked along the embedding axis, when every sub-descriptor has one.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from ..errors import ConfigError
from ..nn.params import RefNames
from .base import DESCRIPTORS, Descriptor, build_descriptor


def _cut_index(hybrid_sel: list[int], sub_sel: list[int]) -> list[int]:
    """Slots of a sub-descriptor: the first ``sub_sel[t]`` of each block of ``hybrid_sel``."""
    out: list[int] = []
    start = 0
    for width, take in zip(hybrid_sel, sub_sel):
        out.extend(range(start, start + take))
        start += width
    return out


def regroup_by_type(nlist: torch.Tensor, ext_atype: torch.Tensor, sel: list[int]) -> torch.Tensor:
    """A mixed (distance-sorted) neighbour list [nf, nloc, nnei] as a type-sorted one
    [nf, nloc, sum(sel)]: per type, its neighbours in their order, then -1 padding."""
    nf, nloc, nnei = nlist.shape
    empty = nlist < 0
    tj = torch.gather(ext_atype, 1, nlist.clamp(min=0).reshape(nf, -1)).reshape(nf, nloc, nnei)
    tj = tj.masked_fill(empty, -1)
    blocks = []
    for t, width in enumerate(sel):
        hit = (tj == t).to(torch.int32)
        order = torch.sort(hit, dim=-1, descending=True, stable=True)
        picked = torch.gather(nlist, 2, order.indices).masked_fill(order.values == 0, -1)
        if picked.shape[-1] < width:
            pad = picked.new_full((nf, nloc, width - picked.shape[-1]), -1)
            picked = torch.cat([picked, pad], dim=-1)
        blocks.append(picked[..., :width])
    return torch.cat(blocks, dim=-1)


@DESCRIPTORS.register("hybrid")
class DescrptHybrid(Descriptor):
    mixed_types = False  # per instance: True when any sub-descriptor mixes types

    @classmethod
    def normalize_config(cls, config: dict, path: str = "model/descriptor") -> dict:
        extra = sorted(k for k in config if k not in ("type", "list") and not k.startswith("_"))
        if extra:
            raise ConfigError(f"{path}/{extra[0]}: unknown key for a hybrid descriptor")
        subs = config.get("list")
        if not isinstance(subs, list) or not subs:
            raise ConfigError(f"{path}/list: expected a non-empty list of descriptor sections")
        out = []
        for i, sub in enumerate(subs):
            where = f"{path}/list/{i}"
            if not isinstance(sub, dict):
                raise ConfigError(f"{where}: expected a descriptor section (a dict)")
            kind = sub.get("type", "se_e2_a")
            if kind == "hybrid":
                raise ConfigError(f"{where}/type: a hybrid descriptor cannot contain a hybrid")
            sub_cls = DESCRIPTORS.get(kind)
            conf = sub_cls.normalize_config(sub, where)
            for sel_path, _ in sub_cls.neighbor_selections(conf):
                value = conf
                for key in sel_path:
                    value = value[key]
                if isinstance(value, str):
                    raise ConfigError(
                        f"{where}/{'/'.join(sel_path)}: '{value}' is not supported inside a "
                        "hybrid descriptor; give the neighbour counts"
                    )
            out.append({**conf, "type": kind})
        return {"type": "hybrid", "list": out}

    @classmethod
    def neighbor_selections(cls, config: dict) -> list[tuple[tuple[str, ...], float]]:
        return []  # every count is explicit (normalize_config refuses "auto")

    def __init__(
        self,
        ntypes: int,
        list: list[dict],  # noqa: A002 - the reference's key
        where: str = "model/descriptor",
    ):
        super().__init__()
        type_map = [str(t) for t in range(ntypes)]  # sub-descriptors only need the count
        self.ntypes = ntypes
        self.descrpt_list = nn.ModuleList(
            [build_descriptor(c, type_map, f"{where}/list/{i}") for i, c in enumerate(list)]
        )
        descs = self.descrpt_list
        self.mixed_types = any(d.mixed_types for d in descs)
        self.rcut = max(d.rcut for d in descs)
        self.rcut_smth = min(d.rcut_smth for d in descs)
        protections = {float(getattr(d, "env_protection", 0.0)) for d in descs}
        if len(protections) > 1:
            raise ConfigError(
                f"{where}/list: env_protection must be the same in every "
                f"sub-descriptor, got {sorted(protections)}"
            )
        self.env_protection = protections.pop()
        if self.mixed_types:
            self.sel = [max(sum(d.sel) for d in descs)]
        else:
            self.sel = [max(col) for col in zip(*(d.sel for d in descs))]
        typed = [d.sel for d in descs if not d.mixed_types]
        self.sel_by_type = [max(col) for col in zip(*typed)] if self.mixed_types and typed else []
        self.cut_index: list[list[int]] = []
        for d in descs:
            outer = self.sel if d.mixed_types == self.mixed_types else self.sel_by_type
            self.cut_index.append(_cut_index(outer, d.sel))
        self.dim_out = sum(d.dim_out for d in descs)
        self.has_rot_mat = all(d.has_rot_mat for d in descs)
        self.dim_emb = sum(getattr(d, "dim_emb", 0) for d in descs)
        self.dtype = descs[0].dtype

    @torch.no_grad()
    def sorted_nlist(self, ext_coord: torch.Tensor, nlist: torch.Tensor) -> torch.Tensor:
        """``nlist`` with every type block (the whole list when mixed) ordered nearest first,
        empty slots last, as the reference's neighbour list is (cuts keep the nearest)."""
        nf, nloc, _ = nlist.shape
        filled = nlist >= 0
        nb = torch.gather(ext_coord, 1, nlist.clamp(min=0).reshape(nf, -1, 1).expand(-1, -1, 3))
        dist = (nb.reshape(nf, nloc, -1, 3) - ext_coord[:, :nloc, None, :]).norm(dim=-1)
        dist = torch.where(filled, dist, torch.full_like(dist, float("inf")))
        blocks, start = [], 0
        for width in self.sel:
            order = torch.sort(dist[..., start : start + width], dim=-1, stable=True).indices
            blocks.append(torch.gather(nlist[..., start : start + width], 2, order))
            start += width
        return torch.cat(blocks, dim=-1)

    def sub_nlists(self, ext_coord, ext_atype, nlist) -> list[torch.Tensor]:
        """The neighbour list of each sub-descriptor, cut from the hybrid's."""
        nlist = self.sorted_nlist(ext_coord, nlist)
        typed = regroup_by_type(nlist, ext_atype, self.sel_by_type) if self.sel_by_type else None
        out = []
        for d, idx in zip(self.descrpt_list, self.cut_index):
            source = nlist if d.mixed_types == self.mixed_types else typed
            out.append(source[:, :, torch.as_tensor(idx, dtype=torch.long, device=nlist.device)])
        return out

    def forward(
        self, ext_coord, ext_atype, nlist, mapping=None, chunking=None
    ) -> dict[str, torch.Tensor]:
        descs, rots = [], []
        for d, nl in zip(self.descrpt_list, self.sub_nlists(ext_coord, ext_atype, nlist)):
            out = d(ext_coord, ext_atype, nl, mapping, chunking=chunking)
            descs.append(out[keys.DESCRIPTOR])
            if self.has_rot_mat:
                rots.append(out["rot_mat"])
        dtype = descs[0].dtype
        for x in descs[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
        res = {keys.DESCRIPTOR: torch.cat([x.to(dtype) for x in descs], dim=-1)}
        if rots:
            res["rot_mat"] = torch.cat([r.to(dtype) for r in rots], dim=-2)
        return res

    # --- statistics: one block per sub-descriptor (its own blocks below it) -------------------
    def _sub_samples(self, samples) -> list[list[dict]]:
        samples = list(samples)
        per_sub: list[list[dict]] = [[] for _ in self.descrpt_list]
        for s in samples:
            for i, nl in enumerate(
                self.sub_nlists(s[keys.EXT_COORD], s[keys.EXT_ATYPE], s[keys.NLIST])
            ):
                per_sub[i].append({**s, keys.NLIST: nl})
        return per_sub

    @staticmethod
    def _flat(i: int, value) -> dict:
        if isinstance(value, dict):
            return {f"{i}.{k}": v for k, v in value.items()}
        return {str(i): value}

    @torch.no_grad()
    def env_stat(self, samples):
        out: dict = {}
        for i, (d, sub) in enumerate(zip(self.descrpt_list, self._sub_samples(samples))):
            out.update(self._flat(i, d.env_stat(sub)))
        return out

    def stat_id(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i, d in enumerate(self.descrpt_list):
            out.update(self._flat(i, d.stat_id()))
        return out

    @torch.no_grad()
    def set_stat(self, stat, protection: float = 1e-2) -> None:
        for i, d in enumerate(self.descrpt_list):
            if str(i) in stat:
                d.set_stat(stat[str(i)], protection)
            else:
                prefix = f"{i}."
                d.set_stat(
                    {k[len(prefix) :]: v for k, v in stat.items() if k.startswith(prefix)},
                    protection,
                )

    def share_type_embedding(self, tebd: nn.Module) -> None:
        raise ConfigError(
            "hybrid descriptors share only at level 0 (the whole descriptor) in multi-task mode"
        )

    # --- declarations (lamkit.nn.params): the members keep their names below descrpt_list.<i>
    REF_NAMES = RefNames()
