"""se_e3_tebd: three-body embedding of neighbour-pair angles, with a type embedding.

For centre atom i with ``J = nsel`` type-blind neighbour slots, ``R~`` [J, 4] the normalised
environment matrix and ``A_t`` the embedding of type ``t`` (dim ``tebd_dim``):

    theta_jk = R~_j[1:4] . R~_k[1:4]                                  [J, J]
    concat:  G_jk = N([theta_jk, A_{t_j}, A_{t_k}])                      [J, J, M]
    strip:   G_jk = N_s(theta_jk) * (1 + N_t([A_{t_j}, A_{t_k}]) * sw_j sw_k)   (smooth)
    D_i = (1 / J^2) sum_{j,k} theta_jk G_jk                             [M]

optionally followed by ``A_{t_i}`` (``concat_output_tebd``). All ordered pairs are used,
``j = k`` included; empty slots have ``theta = 0`` (the angular mean is always 0), so they add
nothing. The work is O(J^2) per atom; the concat input ``[theta, A_j, A_k]`` is never built:
its first layer is split into ``theta * W_0 + (A W_1)[t_j] + (A W_2)[t_k]``, with the type parts
evaluated once per type. In strip mode the pair-type net runs once per pair of types and the
switch factors multiply theta, so ``G`` is never formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import keys
from ..errors import ConfigError
from ..geometry.env import environment_matrix
from ..nn.chunking import Chunking, map_rows
from ..nn.econf import econf_types
from ..nn.mlp import EmbeddingNet, make_generator
from ..nn.params import COMPRESSION, NETWORK_ALIASES, STAT_NAMES, STAT_ROWS, RefNames
from ..nn.type_embedding import TypeEmbedNet
from .base import DESCRIPTORS, Descriptor
from .block_config import BlockConfig, arg
from .env_block import EnvBlock


def _padded_types(atype: torch.Tensor, ntypes: int) -> torch.Tensor:
    """Types with virtual (< 0) atoms mapped to the padding index ``ntypes``."""
    return torch.where(atype >= 0, atype, ntypes)


@dataclass(frozen=True)
class SeE3TebdConfig(BlockConfig):
    """se_e3_tebd's keys and defaults (DeePMD-kit's argcheck)."""

    sel: Any = arg("auto", (int, list, str), doc="neighbour slots (all types), or 'auto[:ratio]'")
    rcut: float = arg(6.0, (float,))
    rcut_smth: float = arg(0.5, (float,))
    neuron: list = arg([10, 20, 40], (list,))
    tebd_dim: int = arg(8, (int,))
    tebd_input_mode: str = arg("concat", (str,), choices=("concat", "strip"))
    resnet_dt: bool = arg(False, (bool,))
    set_davg_zero: bool = arg(True, (bool,))
    activation_function: str = arg("tanh", (str,))
    env_protection: float = arg(0.0, (float,))
    smooth: bool = arg(True, (bool,))
    exclude_types: list = arg([], (list,))
    precision: str = arg("default", (str,))
    trainable: bool = arg(True, (bool,))
    seed: int | None = arg(None, (int, type(None)))
    type_map: list | None = arg(None, (list, type(None)))
    concat_output_tebd: bool = arg(True, (bool,))
    use_econf_tebd: bool = arg(False, (bool,))
    use_tebd_bias: bool = arg(True, (bool,))


@DESCRIPTORS.register("se_e3_tebd")
class SeE3Tebd(EnvBlock, Descriptor):
    ARGS = SeE3TebdConfig.args()
    mixed_types = True

    def __init__(self, ntypes: int, *args, where: str = "model/descriptor", **kwargs):
        super().__init__()
        cfg = SeE3TebdConfig.of(*args, **kwargs)
        if cfg.tebd_input_mode not in ("concat", "strip"):
            raise ConfigError(
                f"{where}/tebd_input_mode: expected 'concat' or 'strip', "
                f"got {cfg.tebd_input_mode!r}"
            )
        self.init_env_from(cfg, ntypes, typed=False, where=where)
        self.neuron = [int(n) for n in cfg.neuron]
        self.tebd_dim = int(cfg.tebd_dim)
        self.tebd_input_mode = cfg.tebd_input_mode
        self.smooth = cfg.smooth
        self.concat_output_tebd = cfg.concat_output_tebd
        self.dim_emb = self.neuron[-1]
        self.dim_out = self.neuron[-1] + (self.tebd_dim if cfg.concat_output_tebd else 0)
        self._build_nets(cfg, where)
        for p in self.parameters():
            p.requires_grad_(cfg.trainable)

    def _build_nets(self, cfg: SeE3TebdConfig, where: str) -> None:
        """The type embedding and the angle embedding net(s)."""
        self.type_embedding = TypeEmbedNet(
            self.ntypes,
            self.tebd_dim,
            cfg.use_tebd_bias,
            self.dtype,
            make_generator(cfg.seed, 2),
            econf_type_map=econf_types(cfg.use_econf_tebd, cfg.type_map, self.ntypes, where),
        )
        strip = cfg.tebd_input_mode == "strip"

        def net(n_in, salt):
            return EmbeddingNet(
                n_in,
                self.neuron,
                cfg.activation_function,
                cfg.resnet_dt,
                self.dtype,
                make_generator(cfg.seed, 1, salt),
            )

        self.embedding = net(1 if strip else 1 + 2 * self.tebd_dim, 1)
        self.embedding_strip = net(2 * self.tebd_dim, 2) if strip else None

    # --- pieces -----------------------------------------------------------------------------
    def _angles(self, ext_coord, ext_atype, nlist, start: int = 0):
        """theta [n, J, J], switch sw [n, J] (0 in empty and excluded slots) of the centre atoms
        ``start : start + nlist.shape[1]``."""
        nf, nloc, nnei = nlist.shape
        env, _, sw, mask = environment_matrix(
            ext_coord, nlist, self.rcut, self.rcut_smth, self.env_protection, start=start
        )
        atype = ext_atype[:, start : start + nloc]
        at = atype.clamp(min=0)
        # only the angular columns enter theta (their mean is 0 unless set otherwise)
        davg, dstd = self.davg[at, 1:].unsqueeze(2), self.dstd[at, 1:].unsqueeze(2)
        rr = (env[..., 1:] - davg) / dstd
        sw = sw.squeeze(-1)
        emask = self.exclude_mask(atype, ext_atype, nlist)
        if emask is not None:
            keep = emask.to(rr.dtype)
            rr = rr * keep.unsqueeze(-1)
            sw = sw * keep
        rr = rr.reshape(nf * nloc, nnei, 3)
        theta = torch.matmul(rr, rr.transpose(1, 2))
        return theta, sw.reshape(nf * nloc, nnei)

    def _neighbor_types(self, ext_atype, nlist) -> torch.Tensor:
        """[n, J] type of each slot; empty slots and virtual atoms -> padding index."""
        nf, nloc, nnei = nlist.shape
        tj = torch.gather(ext_atype, 1, nlist.clamp(min=0).reshape(nf, -1)).reshape(nf, nloc, nnei)
        tj = torch.where(nlist >= 0, _padded_types(tj, self.ntypes), self.ntypes)
        return tj.reshape(nf * nloc, nnei)

    def _concat_embedding(self, theta, ntype, table):
        """G = N([theta, A_j, A_k]) [n, J, J, M] without building the concatenated input."""
        first, rest = self.embedding.layers[0], self.embedding.layers[1:]
        if first.resnet:  # a skip needs the input itself: build it (only if 2T+1 in neuron[0])
            n, nnei = ntype.shape
            tj = table[ntype]
            x = torch.cat(
                [
                    theta.unsqueeze(-1),
                    tj.unsqueeze(2).expand(-1, -1, nnei, -1),
                    tj.unsqueeze(1).expand(-1, nnei, -1, -1),
                ],
                dim=-1,
            )
            return self.embedding(x)
        t = self.tebd_dim
        w = first.matrix
        proj_j = torch.matmul(table, w[1 : 1 + t])[ntype]  # [n, J, H]
        proj_k = torch.matmul(table, w[1 + t :])[ntype]
        pre = theta.unsqueeze(-1) * w[0] + proj_j.unsqueeze(2) + proj_k.unsqueeze(1)
        if first.bias is not None:
            pre = pre + first.bias
        h = first.act(pre)
        if first.idt is not None:
            h = h * first.idt
        for layer in rest:
            h = layer(h)
        return h

    def _strip_sum(self, theta, ntype, table, sw):
        """sum_jk theta_jk G_jk [n, M] with G = N_s(theta) * (1 + N_t([A_j, A_k]) sw_j sw_k).

        The switch factors go onto theta ([n, J, J]) rather than onto the [n, J, J, M] pair
        embedding, and ``G`` itself is never formed: two big tensors fewer than the direct form.
        """
        g_s = self.embedding(theta.unsqueeze(-1))
        nt = table.shape[0]
        pairs = torch.cat(
            [table.unsqueeze(1).expand(-1, nt, -1), table.unsqueeze(0).expand(nt, -1, -1)], dim=-1
        )
        g_pair = self.embedding_strip(pairs.reshape(nt * nt, -1))  # [(T+1)^2, M]
        g_t = g_pair[ntype.unsqueeze(2) * nt + ntype.unsqueeze(1)]  # [n, J, J, M]
        theta_t = theta * (sw.unsqueeze(2) * sw.unsqueeze(1)) if self.smooth else theta
        return torch.einsum("njk,njkm->nm", theta, g_s) + torch.einsum(
            "njk,njkm->nm", theta_t, g_s * g_t
        )

    # --- forward ----------------------------------------------------------------------------
    def forward(
        self, ext_coord, ext_atype, nlist, mapping=None, chunking: Chunking | None = None
    ):
        nf, nloc, _ = nlist.shape
        ext_coord = ext_coord.to(self.dtype)

        def rows(start, stop, nl):
            return self._rows(ext_coord, ext_atype, nl, start)

        return {keys.DESCRIPTOR: map_rows(rows, nf, nloc, nlist, chunking=chunking)}

    def _rows(self, ext_coord, ext_atype, nlist, start: int) -> torch.Tensor:
        """Descriptor [nf, rows, dim_out] of centre atoms ``start : start + nlist.shape[1]``."""
        nf, nloc, nnei = nlist.shape
        theta, sw = self._angles(ext_coord, ext_atype, nlist, start)
        table = self.type_embedding.table()
        ntype = self._neighbor_types(ext_atype, nlist)
        if self.tebd_input_mode == "concat":
            gg = self._concat_embedding(theta, ntype, table)
            res = torch.einsum("njk,njkm->nm", theta, gg)
        else:
            res = self._strip_sum(theta, ntype, table, sw)
        res = res * (1.0 / self.nnei / self.nnei)  # nsel, not the list width (see DPA-2)
        desc = res.reshape(nf, nloc, self.dim_emb)
        if self.concat_output_tebd:
            centre = table[_padded_types(ext_atype[:, start : start + nloc], self.ntypes)]
            desc = torch.cat([desc, centre], dim=-1)
        return desc

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = STAT_ROWS
    REF_NAMES = RefNames(
        names=(
            *STAT_NAMES,
            ("embedding.layers.*.*", "filter_layers.networks.0.layers.*.*"),
            ("embedding_strip.layers.*.*", "filter_layers_strip.networks.0.layers.*.*"),
        ),
        # the reference's type_embd_data is a compression table here
        ignore=(*NETWORK_ALIASES, *COMPRESSION, "type_embd_data"),
        block="se_ttebd",
    )
