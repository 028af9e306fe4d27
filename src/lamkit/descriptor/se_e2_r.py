"""se_e2_r (alias se_r): two-body embedding of the radial part of the environment matrix.

For centre atom i with ``J = sum(sel)`` slots and ``s~_j`` the normalised radial entry
``(s(r_ij) - davg) / dstd`` of slot j (``s = sw(r) / r``), each slot is embedded by the net of
its neighbour type and the embeddings are averaged over all slots:

    D_i = (1 / 5) * (1 / J) * sum_j N_{t_j}(s~_j)     [M]

The descriptor is invariant by construction (distances only) and has no rotation matrix.
As in DeePMD-kit's PyTorch backend there is one net per neighbour type whatever
``type_one_side`` says; empty slots are kept (``-davg/dstd``), excluded pairs are zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import keys
from ..geometry.env import environment_matrix
from ..nn.chunking import Chunking, map_rows
from ..nn.mlp import EmbeddingNet, make_generator
from ..nn.params import COMPRESSION, NETWORK_ALIASES, STAT_NAMES, STAT_ROWS, RefNames
from .base import DESCRIPTORS, Descriptor
from .block_config import BlockConfig, arg
from .env_block import EnvBlock

# the reference's fixed rescaling of the averaged embedding
RESCALE = 0.2


@dataclass(frozen=True)
class SeRConfig(BlockConfig):
    """se_e2_r's keys and defaults (DeePMD-kit's argcheck)."""

    sel: Any = arg("auto", (list, str), doc="neighbour slots per type, or 'auto[:ratio]'")
    rcut: float = arg(6.0, (float,))
    rcut_smth: float = arg(0.5, (float,))
    neuron: list = arg([10, 20, 40], (list,))
    activation_function: str = arg("tanh", (str,))
    resnet_dt: bool = arg(False, (bool,))
    type_one_side: bool = arg(False, (bool,), doc="accepted; one net per neighbour type always")
    precision: str = arg("default", (str,))
    trainable: bool = arg(True, (bool,))
    seed: int | None = arg(None, (int, type(None)))
    exclude_types: list = arg([], (list,))
    env_protection: float = arg(0.0, (float,))
    set_davg_zero: bool = arg(False, (bool,))


@DESCRIPTORS.register("se_e2_r", "se_r")
class SeR(EnvBlock, Descriptor):
    ARGS = SeRConfig.args()
    mixed_types = False
    stat_columns = 1  # radial only

    def __init__(self, ntypes: int, *args, where: str = "model/descriptor", **kwargs):
        super().__init__()
        cfg = SeRConfig.of(*args, **kwargs)
        self.init_env_from(cfg, ntypes, typed=True, where=where)
        self.sections = [0]
        for s in self.sel:
            self.sections.append(self.sections[-1] + s)
        self.neuron = list(cfg.neuron)
        self.type_one_side = bool(cfg.type_one_side)
        self.dim_out = self.neuron[-1]
        # net k embeds the slots of neighbour type k (reference: filter_layers.networks.k)
        self.embeddings = nn.ModuleList(
            EmbeddingNet(
                1,
                self.neuron,
                cfg.activation_function,
                cfg.resnet_dt,
                self.dtype,
                make_generator(cfg.seed, 0, k),
            )
            for k in range(ntypes)
        )
        for p in self.parameters():
            p.requires_grad_(cfg.trainable)

    def forward(
        self, ext_coord, ext_atype, nlist, mapping=None, chunking: Chunking | None = None
    ):
        nf, nloc, _ = nlist.shape
        ext_coord = ext_coord.to(self.dtype)

        def rows(start, stop, nl):
            return self._rows(ext_coord, ext_atype, nl, start)

        return map_rows(rows, nf, nloc, nlist, chunking=chunking)

    def _rows(self, ext_coord, ext_atype, nlist, start: int) -> dict[str, torch.Tensor]:
        """Outputs of centre atoms ``start : start + nlist.shape[1]``."""
        nf, nloc, nnei = nlist.shape
        env, _, _, _ = environment_matrix(
            ext_coord,
            nlist,
            self.rcut,
            self.rcut_smth,
            self.env_protection,
            radial_only=True,
            start=start,
        )
        atype = ext_atype[:, start : start + nloc]
        rr = self.normalize_env(env, atype)
        emask = self.exclude_mask(atype, ext_atype, nlist)
        if emask is not None:
            rr = rr * emask.unsqueeze(-1).to(rr.dtype)
        rr = rr.reshape(nf * nloc, nnei, 1)
        out = rr.new_zeros(nf * nloc, self.dim_out)
        for tj in range(self.ntypes):
            a, b = self.sections[tj], self.sections[tj + 1]
            if a == b:
                continue
            out = out + self.embeddings[tj](rr[:, a:b, :]).sum(dim=1)
        desc = out * (RESCALE / self.nnei)
        return {keys.DESCRIPTOR: desc.reshape(nf, nloc, self.dim_out)}

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = STAT_ROWS
    REF_NAMES = RefNames(
        names=(*STAT_NAMES, ("embeddings.*.layers.*.*", "filter_layers.networks.*.layers.*.*")),
        ignore=(*NETWORK_ALIASES, *COMPRESSION),
    )
