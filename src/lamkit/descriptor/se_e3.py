"""se_e3 (aliases se_at, se_a_3be, se_t): three-body embedding of neighbour-pair angles.

For centre atom i, ``R~`` [J, 4] the normalised environment matrix and ``r_j = R~[j, 1:4]``
(the normalised ``sw(r) x / r^2`` part), every pair of slots (j, k) of neighbour types
``(t_j, t_k)`` with ``t_j <= t_k`` contributes through its scalar product
``c_jk = r_j . r_k``:

    D_i = sum_{a <= b} 1 / (sel_a sel_b) * sum_{j in a, k in b} c_jk N_{ab}(c_jk)     [M]

``N_{ab}`` is the embedding net of the type pair; as in DeePMD-kit there are ``ntypes^2`` nets
(net ``a + ntypes * b``) of which only those with ``a <= b`` are used. Empty slots are kept
(``-davg/dstd``), excluded pairs are zeroed.
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


@dataclass(frozen=True)
class SeTConfig(BlockConfig):
    """se_e3's keys and defaults (DeePMD-kit's argcheck)."""

    sel: Any = arg("auto", (list, str), doc="neighbour slots per type, or 'auto[:ratio]'")
    rcut: float = arg(6.0, (float,))
    rcut_smth: float = arg(0.5, (float,))
    neuron: list = arg([10, 20, 40], (list,))
    activation_function: str = arg("tanh", (str,))
    resnet_dt: bool = arg(False, (bool,))
    precision: str = arg("default", (str,))
    trainable: bool = arg(True, (bool,))
    seed: int | None = arg(None, (int, type(None)))
    set_davg_zero: bool = arg(False, (bool,))
    exclude_types: list = arg([], (list,))
    env_protection: float = arg(0.0, (float,))


@DESCRIPTORS.register("se_e3", "se_at", "se_a_3be", "se_t")
class SeT(EnvBlock, Descriptor):
    ARGS = SeTConfig.args()
    mixed_types = False

    def __init__(self, ntypes: int, *args, where: str = "model/descriptor", **kwargs):
        super().__init__()
        cfg = SeTConfig.of(*args, **kwargs)
        self.init_env_from(cfg, ntypes, typed=True, where=where)
        self.sections = [0]
        for s in self.sel:
            self.sections.append(self.sections[-1] + s)
        self.neuron = list(cfg.neuron)
        self.dim_out = self.neuron[-1]
        self.embeddings = nn.ModuleList(
            EmbeddingNet(
                1,
                self.neuron,
                cfg.activation_function,
                cfg.resnet_dt,
                self.dtype,
                make_generator(cfg.seed, 0, k),
            )
            for k in range(ntypes * ntypes)
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
            ext_coord, nlist, self.rcut, self.rcut_smth, self.env_protection, start=start
        )
        atype = ext_atype[:, start : start + nloc]
        rr = self.normalize_env(env, atype)
        emask = self.exclude_mask(atype, ext_atype, nlist)
        if emask is not None:
            rr = rr * emask.unsqueeze(-1).to(rr.dtype)
        vec = rr[..., 1:].reshape(nf * nloc, nnei, 3)
        out = vec.new_zeros(nf * nloc, self.dim_out)
        for ta in range(self.ntypes):
            for tb in range(ta, self.ntypes):
                a0, a1 = self.sections[ta], self.sections[ta + 1]
                b0, b1 = self.sections[tb], self.sections[tb + 1]
                if a0 == a1 or b0 == b1:
                    continue
                # [n, sel_a, sel_b] scalar products of the normalised direction parts
                cos = torch.matmul(vec[:, a0:a1], vec[:, b0:b1].transpose(1, 2))
                g = self.embeddings[ta + self.ntypes * tb](cos.unsqueeze(-1))
                part = torch.einsum("njk,njkm->nm", cos, g)
                out = out + part / float((a1 - a0) * (b1 - b0))
        return {keys.DESCRIPTOR: out.reshape(nf, nloc, self.dim_out)}

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = STAT_ROWS
    REF_NAMES = RefNames(
        names=(*STAT_NAMES, ("embeddings.*.layers.*.*", "filter_layers.networks.*.layers.*.*")),
        ignore=(*NETWORK_ALIASES, *COMPRESSION),
        block="seat",
    )
