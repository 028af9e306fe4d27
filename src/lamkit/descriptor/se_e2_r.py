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

# the reference's fixed rescaling of the averaged embedding
RESCALE = 0.2


@DESCRIPTORS.register("se_e2_r", "se_r")
class SeR(Descriptor):
    ARGS = (
        Arg("sel", (list, str), "auto", doc="neighbour slots per type, or 'auto[:ratio]'"),
        Arg("rcut", (float,), 6.0),
        Arg("rcut_smth", (float,), 0.5),
        Arg("neuron", (list,), [10, 20, 40]),
        Arg("activation_function", (str,), "tanh"),
        Arg("resnet_dt", (bool,), False),
        Arg("type_one_side", (bool,), False, doc="accepted; one net per neighbour type always"),
        Arg("precision", (str,), "default"),
        Arg("trainable", (bool,), True),
        Arg("seed", (int, type(None)), None),
        Arg("exclude_types", (list,), []),
        Arg("env_protection", (float,), 0.0),
        Arg("set_davg_zero", (bool,), False),
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
        type_one_side: bool = False,
        precision: str = "default",
        trainable: bool = True,
        seed: int | None = None,
        exclude_types=(),
        env_protection: float = 0.0,
        set_davg_zero: bool = False,
    ):
        super().__init__()
        if isinstance(sel, str):
            raise ValueError("sel must be resolved to a list before building se_e2_r")
        if len(sel) != ntypes:
            raise ConfigError(
                f"model/descriptor/sel: se_e2_r needs one entry per type ({ntypes}), got {sel}"
            )
        self.ntypes = ntypes
        self.sel = [int(s) for s in sel]
        self.nnei = sum(self.sel)
        self.sections = [0]
        for s in self.sel:
            self.sections.append(self.sections[-1] + s)
        self.rcut, self.rcut_smth = float(rcut), float(rcut_smth)
        self.neuron = list(neuron)
        self.type_one_side = bool(type_one_side)
        self.set_davg_zero = set_davg_zero
        self.env_protection = float(env_protection)
        self.exclude_types = check_exclude_types(
            exclude_types, ntypes, "model/descriptor/exclude_types"
        )
        self.dtype = to_dtype(precision)
        self.dim_out = self.neuron[-1]
        # net k embeds the slots of neighbour type k (reference: filter_layers.networks.k)
        self.embeddings = nn.ModuleList(
            EmbeddingNet(
                1,
                self.neuron,
                activation_function,
                resnet_dt,
                self.dtype,
                make_generator(seed, 0, k),
            )
            for k in range(ntypes)
        )
        self.register_buffer("davg", torch.zeros(ntypes, 1, dtype=self.dtype))
        self.register_buffer("dstd", torch.ones(ntypes, 1, dtype=self.dtype))
        for p in self.parameters():
            p.requires_grad_(trainable)

    @torch.no_grad()
    def set_stat(self, stat, protection: float = 1e-2) -> None:
        davg, dstd = stat.davg_dstd(protection, self.set_davg_zero, radial_only=True)
        self.davg.copy_(torch.as_tensor(davg, dtype=self.dtype))
        self.dstd.copy_(torch.as_tensor(dstd, dtype=self.dtype))

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
            ext_coord,
            nlist,
            self.rcut,
            self.rcut_smth,
            self.env_protection,
            radial_only=True,
            start=start,
        )
        atype = ext_atype[:, start : start + nloc]
        at = atype.clamp(min=0)
        rr = (env - self.davg[at].unsqueeze(2)) / self.dstd[at].unsqueeze(2)
        emask = pair_exclude_mask(self.exclude_types, self.ntypes, atype, ext_atype, nlist)
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
