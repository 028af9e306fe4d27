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

import torch
from torch import nn

from .. import keys
from ..config.schema import Arg
from ..errors import ConfigError
from ..geometry.env import environment_matrix
from ..nn.chunking import map_rows
from ..nn.mlp import EmbeddingNet, make_generator, to_dtype
from ..nn.params import COMPRESSION, NETWORK_ALIASES, STAT_NAMES, STAT_ROWS, RefNames
from .base import DESCRIPTORS, Descriptor, check_exclude_types, pair_exclude_mask


@DESCRIPTORS.register("se_e3", "se_at", "se_a_3be", "se_t")
class SeT(Descriptor):
    ARGS = (
        Arg("sel", (list, str), "auto", doc="neighbour slots per type, or 'auto[:ratio]'"),
        Arg("rcut", (float,), 6.0),
        Arg("rcut_smth", (float,), 0.5),
        Arg("neuron", (list,), [10, 20, 40]),
        Arg("activation_function", (str,), "tanh"),
        Arg("resnet_dt", (bool,), False),
        Arg("precision", (str,), "default"),
        Arg("trainable", (bool,), True),
        Arg("seed", (int, type(None)), None),
        Arg("set_davg_zero", (bool,), False),
        Arg("exclude_types", (list,), []),
        Arg("env_protection", (float,), 0.0),
    )
    mixed_types = False

    def __init__(
        self,
        ntypes: int,
        sel,
        rcut: float = 6.0,
        rcut_smth: float = 0.5,
        neuron=(10, 20, 40),
        activation_function: str = "tanh",
        resnet_dt: bool = False,
        precision: str = "default",
        trainable: bool = True,
        seed: int | None = None,
        set_davg_zero: bool = False,
        exclude_types=(),
        env_protection: float = 0.0,
    ):
        super().__init__()
        if isinstance(sel, str):
            raise ValueError("sel must be resolved to a list before building se_e3")
        if len(sel) != ntypes:
            raise ConfigError(
                f"model/descriptor/sel: se_e3 needs one entry per type ({ntypes}), got {sel}"
            )
        self.ntypes = ntypes
        self.sel = [int(s) for s in sel]
        self.nnei = sum(self.sel)
        self.sections = [0]
        for s in self.sel:
            self.sections.append(self.sections[-1] + s)
        self.rcut, self.rcut_smth = float(rcut), float(rcut_smth)
        self.neuron = list(neuron)
        self.set_davg_zero = set_davg_zero
        self.env_protection = float(env_protection)
        self.exclude_types = check_exclude_types(
            exclude_types, ntypes, "model/descriptor/exclude_types"
        )
        self.dtype = to_dtype(precision)
        self.dim_out = self.neuron[-1]
        self.embeddings = nn.ModuleList(
            EmbeddingNet(
                1,
                self.neuron,
                activation_function,
                resnet_dt,
                self.dtype,
                make_generator(seed, 0, k),
            )
            for k in range(ntypes * ntypes)
        )
        self.register_buffer("davg", torch.zeros(ntypes, 4, dtype=self.dtype))
        self.register_buffer("dstd", torch.ones(ntypes, 4, dtype=self.dtype))
        for p in self.parameters():
            p.requires_grad_(trainable)

    def forward(self, ext_coord, ext_atype, nlist, mapping=None):
        nf, nloc, _ = nlist.shape
        ext_coord = ext_coord.to(self.dtype)

        def rows(start, stop, nl):
            return self._rows(ext_coord, ext_atype, nl, start)

        return map_rows(rows, nf, nloc, nlist)

    def _rows(self, ext_coord, ext_atype, nlist, start: int) -> dict[str, torch.Tensor]:
        """Outputs of centre atoms ``start : start + nlist.shape[1]``."""
        nf, nloc, nnei = nlist.shape
        env, _, _, _ = environment_matrix(
            ext_coord, nlist, self.rcut, self.rcut_smth, self.env_protection, start=start
        )
        atype = ext_atype[:, start : start + nloc]
        at = atype.clamp(min=0)
        rr = (env - self.davg[at].unsqueeze(2)) / self.dstd[at].unsqueeze(2)
        emask = pair_exclude_mask(self.exclude_types, self.ntypes, atype, ext_atype, nlist)
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
