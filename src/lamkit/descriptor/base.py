"""Descriptor contract and registry.

A descriptor maps the extended neighbourhood of every local atom to a per-atom feature:

    forward(extended_coord [nf, nall, 3], extended_atype [nf, nall], nlist [nf, nloc, nnei],
            mapping [nf, nall]) -> {DESCRIPTOR: [nf, nloc, dim_out], "rot_mat": [nf, nloc, m1, 3]}

It declares its cutoff ``rcut``, neighbour slots ``sel`` and whether its neighbour list mixes
types (``mixed_types``), so the caller builds the right neighbour data.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from ..config.schema import Arg, normalize
from ..registry import Registry

DESCRIPTORS: Registry = Registry("descriptor")


def pair_exclude_mask(
    exclude_types, ntypes: int, atype: torch.Tensor, ext_atype: torch.Tensor, nlist: torch.Tensor
) -> torch.Tensor | None:
    """[nf, nloc, nnei] 0/1 mask that removes pairs of excluded type pairs, or None."""
    if not exclude_types:
        return None
    table = torch.ones(ntypes + 1, ntypes + 1, dtype=torch.bool, device=nlist.device)
    for a, b in exclude_types:
        table[a, b] = table[b, a] = False
    nf, nloc, nnei = nlist.shape
    tj = torch.gather(ext_atype, 1, nlist.clamp(min=0).reshape(nf, -1)).reshape(nf, nloc, nnei)
    tj = torch.where(nlist >= 0, tj, ntypes)
    ti = torch.where(atype >= 0, atype, ntypes)
    return table[ti.unsqueeze(-1).expand_as(tj), tj]


class Descriptor(nn.Module):
    """Base class: subclasses set ``ARGS`` (their config spec) and implement ``forward``."""

    ARGS: tuple[Arg, ...] = ()
    rcut: float
    rcut_smth: float
    sel: list[int]
    mixed_types: bool
    dim_out: int

    @classmethod
    def normalize_config(cls, config: dict, path: str = "model/descriptor") -> dict:
        return normalize(config, cls.ARGS, path, allow_extra=("type",))

    def forward(self, ext_coord, ext_atype, nlist, mapping=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def env_stat(self, samples):
        """Un-normalised environment-matrix statistics (an ``EnvStat``: per centre type, every
        slot, excluded pairs zeroed) over an iterable of dicts holding EXT_COORD, EXT_ATYPE and
        NLIST built for this descriptor. Uses ``rcut``, ``rcut_smth``, ``env_protection``,
        ``exclude_types``, ``ntypes`` and ``dtype``; blocks with other needs override it."""
        from ..geometry.env import environment_matrix
        from .env_stat import EnvStat

        stat = EnvStat(self.ntypes)
        for s in samples:
            ext_coord, ext_atype, nlist = s[keys.EXT_COORD], s[keys.EXT_ATYPE], s[keys.NLIST]
            env, _, _, _ = environment_matrix(
                ext_coord.to(self.dtype), nlist, self.rcut, self.rcut_smth, self.env_protection
            )
            atype = ext_atype[:, : nlist.shape[1]]
            emask = pair_exclude_mask(self.exclude_types, self.ntypes, atype, ext_atype, nlist)
            if emask is not None:
                env = env * emask.unsqueeze(-1).to(env.dtype)
            stat.add(env, atype)
        return stat

    @torch.no_grad()
    def set_stat(self, stat, protection: float = 1e-2) -> None:
        """Set the ``davg``/``dstd`` buffers from ``env_stat``'s result."""
        davg, dstd = stat.davg_dstd(protection, self.set_davg_zero)
        self.davg.copy_(torch.as_tensor(davg, dtype=self.dtype))
        self.dstd.copy_(torch.as_tensor(dstd, dtype=self.dtype))

    def stat_id(self) -> str:
        """A string that identifies the statistics (for the stat-file cache)."""
        return f"{type(self).__name__}:{self.rcut}:{self.rcut_smth}:{self.sel}:{self.mixed_types}"


def build_descriptor(config: dict, type_map: list[str]) -> Descriptor:
    """Descriptor from a (DeePMD-kit style) config dict with a ``type`` key."""
    cls = DESCRIPTORS.get(config.get("type", "se_e2_a"))
    conf = cls.normalize_config(config)
    conf.pop("type", None)
    return cls(ntypes=len(type_map), **{k: v for k, v in conf.items() if not k.startswith("_")})
