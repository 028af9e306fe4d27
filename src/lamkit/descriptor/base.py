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

from ..config.schema import Arg, normalize
from ..registry import Registry

DESCRIPTORS: Registry = Registry("descriptor")


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

    def env_stat(self, samples):
        """Environment-matrix statistics (an ``EnvStat``) over an iterable of dicts holding
        EXT_COORD, EXT_ATYPE and NLIST built for this descriptor."""
        raise NotImplementedError

    def set_stat(self, stat, protection: float = 1e-2) -> None:
        """Set the normalisation (davg/dstd) from ``env_stat``'s result."""
        raise NotImplementedError

    def stat_id(self) -> str:
        """A string that identifies the statistics (for the stat-file cache)."""
        return f"{type(self).__name__}:{self.rcut}:{self.rcut_smth}:{self.sel}:{self.mixed_types}"


def build_descriptor(config: dict, type_map: list[str]) -> Descriptor:
    """Descriptor from a (DeePMD-kit style) config dict with a ``type`` key."""
    cls = DESCRIPTORS.get(config.get("type", "se_e2_a"))
    conf = cls.normalize_config(config)
    conf.pop("type", None)
    return cls(ntypes=len(type_map), **{k: v for k, v in conf.items() if not k.startswith("_")})
