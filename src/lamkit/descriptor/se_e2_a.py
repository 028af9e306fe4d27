"""se_e2_a (alias se_a): two-body embedding of the full environment matrix.

For centre atom i with ``J = sum(sel)`` slots, ``R~`` [J, 4] the normalised environment matrix
and ``G = N_t(R~[:, 0])`` [J, M1] the embedding of each slot by the net of its neighbour type
(and centre type unless ``type_one_side``):

    T = R~^T G / J   [4, M1],      D = T^T T[:, :M2]   [M1, M2] flattened row-major.

Empty slots are not zero after normalisation (``-davg/dstd``) and are kept, as in DeePMD-kit.
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
from .block_config import REQUIRED, BlockConfig, arg
from .env_block import EnvBlock


@dataclass(frozen=True)
class SeAConfig(BlockConfig):
    """se_e2_a's keys and defaults (DeePMD-kit's argcheck)."""

    sel: Any = arg(REQUIRED, (list, str), doc="neighbour slots per type, or 'auto[:ratio]'")
    rcut: float = arg(6.0, (float,))
    rcut_smth: float = arg(0.5, (float,))
    neuron: list = arg([10, 20, 40], (list,))
    axis_neuron: int = arg(4, (int,), aliases=("n_axis_neuron",))
    activation_function: str = arg("tanh", (str,))
    resnet_dt: bool = arg(False, (bool,))
    type_one_side: bool = arg(False, (bool,))
    precision: str = arg("default", (str,))
    trainable: bool = arg(True, (bool,))
    seed: int | None = arg(None, (int, type(None)))
    exclude_types: list = arg([], (list,))
    env_protection: float = arg(0.0, (float,))
    set_davg_zero: bool = arg(False, (bool,))


@DESCRIPTORS.register("se_e2_a", "se_a")
class SeA(EnvBlock, Descriptor):
    ARGS = SeAConfig.args()
    mixed_types = False
    has_rot_mat = True

    def __init__(self, ntypes: int, *args, where: str = "model/descriptor", **kwargs):
        super().__init__()
        cfg = SeAConfig.of(*args, **kwargs)
        self.init_env_from(cfg, ntypes, typed=True, where=where)
        self.sections = [0]
        for s in self.sel:
            self.sections.append(self.sections[-1] + s)
        self.neuron = list(cfg.neuron)
        self.axis_neuron = int(cfg.axis_neuron)
        self.type_one_side = cfg.type_one_side
        self.dim_emb = self.neuron[-1]
        self.dim_out = self.neuron[-1] * self.axis_neuron
        n_nets = ntypes if cfg.type_one_side else ntypes * ntypes
        # net index: neighbour type tj (type_one_side) or centre ti + ntypes * tj (as the reference)
        self.embeddings = nn.ModuleList(
            EmbeddingNet(
                1,
                self.neuron,
                cfg.activation_function,
                cfg.resnet_dt,
                self.dtype,
                make_generator(cfg.seed, 0, k),
            )
            for k in range(n_nets)
        )
        for p in self.parameters():
            p.requires_grad_(cfg.trainable)

    def normalized_env(self, ext_coord, ext_atype, nlist, start: int = 0):
        """``R~`` [nf, rows, nnei, 4] and the types [nf, rows] of the centre atoms
        ``start : start + nlist.shape[1]``."""
        nloc = nlist.shape[1]
        env, diff, sw, mask = environment_matrix(
            ext_coord, nlist, self.rcut, self.rcut_smth, self.env_protection, start=start
        )
        atype = ext_atype[:, start : start + nloc]
        rr = self.normalize_env(env, atype)
        emask = self.exclude_mask(atype, ext_atype, nlist)
        if emask is not None:
            rr = rr * emask.unsqueeze(-1).to(rr.dtype)
        return rr, atype

    def _block(self, rr: torch.Tensor, net_of_type) -> torch.Tensor:
        """sum over neighbour types of R~_t^T G_t for rr [n, nnei, 4] -> [n, 4, M1]."""
        out = None
        for tj in range(self.ntypes):
            a, b = self.sections[tj], self.sections[tj + 1]
            if a == b:
                continue
            r_t = rr[:, a:b, :]
            g = net_of_type(tj)(r_t[:, :, :1])
            gr = torch.matmul(r_t.transpose(1, 2), g)
            out = gr if out is None else out + gr
        return out

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
        rr, atype = self.normalized_env(ext_coord, ext_atype, nlist, start)
        rr = rr.reshape(nf * nloc, nnei, 4)
        if self.type_one_side:
            xyz = self._block(rr, lambda tj: self.embeddings[tj])
        else:
            flat = atype.reshape(-1)
            xyz = rr.new_zeros(nf * nloc, 4, self.dim_emb)
            for ti in range(self.ntypes):
                idx = torch.nonzero(flat == ti).squeeze(-1)
                if idx.numel() == 0:
                    continue
                part = self._block(
                    rr[idx], lambda tj, ti=ti: self.embeddings[ti + self.ntypes * tj]
                )
                xyz = xyz.index_add(0, idx, part)
        xyz = xyz / self.nnei
        xyz_t = xyz.transpose(1, 2)  # [n, M1, 4]
        desc = torch.matmul(xyz_t, xyz[:, :, : self.axis_neuron])  # [n, M1, M2]
        return {
            keys.DESCRIPTOR: desc.reshape(nf, nloc, self.dim_out),
            "rot_mat": xyz_t[:, :, 1:4].reshape(nf, nloc, self.dim_emb, 3),
        }

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = STAT_ROWS
    REF_NAMES = RefNames(
        names=(*STAT_NAMES, ("embeddings.*.layers.*.*", "filter_layers.networks.*.layers.*.*")),
        ignore=(*NETWORK_ALIASES, *COMPRESSION),
        block="sea",
    )
