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

import torch

from .. import keys
from ..config.schema import Arg
from ..errors import ConfigError
from ..geometry.env import environment_matrix
from ..nn.chunking import map_rows
from ..nn.econf import econf_types
from ..nn.mlp import EmbeddingNet, make_generator, to_dtype
from ..nn.params import COMPRESSION, NETWORK_ALIASES, STAT_NAMES, STAT_ROWS, RefNames
from ..nn.type_embedding import TypeEmbedNet
from .base import DESCRIPTORS, Descriptor, pair_exclude_mask


def _padded_types(atype: torch.Tensor, ntypes: int) -> torch.Tensor:
    """Types with virtual (< 0) atoms mapped to the padding index ``ntypes``."""
    return torch.where(atype >= 0, atype, ntypes)


@DESCRIPTORS.register("se_e3_tebd")
class SeE3Tebd(Descriptor):
    ARGS = (
        Arg("sel", (int, list, str), "auto", doc="neighbour slots (all types), or 'auto[:ratio]'"),
        Arg("rcut", (float,), 6.0),
        Arg("rcut_smth", (float,), 0.5),
        Arg("neuron", (list,), [10, 20, 40]),
        Arg("tebd_dim", (int,), 8),
        Arg("tebd_input_mode", (str,), "concat", choices=("concat", "strip")),
        Arg("resnet_dt", (bool,), False),
        Arg("set_davg_zero", (bool,), True),
        Arg("activation_function", (str,), "tanh"),
        Arg("env_protection", (float,), 0.0),
        Arg("smooth", (bool,), True),
        Arg("exclude_types", (list,), []),
        Arg("precision", (str,), "default"),
        Arg("trainable", (bool,), True),
        Arg("seed", (int, type(None)), None),
        Arg("type_map", (list, type(None)), None),
        Arg("concat_output_tebd", (bool,), True),
        Arg("use_econf_tebd", (bool,), False),
        Arg("use_tebd_bias", (bool,), True),
    )
    mixed_types = True

    def __init__(
        self,
        ntypes: int,
        sel,
        rcut=6.0,
        rcut_smth=0.5,
        neuron=(10, 20, 40),
        tebd_dim=8,
        tebd_input_mode="concat",
        resnet_dt=False,
        set_davg_zero=True,
        activation_function="tanh",
        env_protection=0.0,
        smooth=True,
        exclude_types=(),
        precision="default",
        trainable=True,
        seed=None,
        type_map=None,
        concat_output_tebd=True,
        use_econf_tebd=False,
        use_tebd_bias=True,
    ):
        super().__init__()
        where = "model/descriptor"
        if isinstance(sel, str):
            raise ValueError("sel must be resolved to a number before building se_e3_tebd")
        if tebd_input_mode not in ("concat", "strip"):
            raise ConfigError(
                f"{where}/tebd_input_mode: expected 'concat' or 'strip', got {tebd_input_mode!r}"
            )
        self.ntypes = ntypes
        self.nnei = int(sel) if isinstance(sel, int) else sum(int(s) for s in sel)
        self.sel = [self.nnei]
        self.rcut, self.rcut_smth = float(rcut), float(rcut_smth)
        self.neuron = [int(n) for n in neuron]
        self.tebd_dim = int(tebd_dim)
        self.tebd_input_mode = tebd_input_mode
        self.set_davg_zero = set_davg_zero
        self.env_protection = float(env_protection)
        self.smooth = smooth
        self.exclude_types = [tuple(p) for p in exclude_types]
        self.concat_output_tebd = concat_output_tebd
        self.dtype = to_dtype(precision)
        self.dim_emb = self.neuron[-1]
        self.dim_out = self.neuron[-1] + (self.tebd_dim if concat_output_tebd else 0)

        self.type_embedding = TypeEmbedNet(
            ntypes,
            self.tebd_dim,
            use_tebd_bias,
            self.dtype,
            make_generator(seed, 2),
            econf_type_map=econf_types(use_econf_tebd, type_map, ntypes, where),
        )
        n_in = 1 + 2 * self.tebd_dim if tebd_input_mode == "concat" else 1
        self.embedding = EmbeddingNet(
            n_in,
            self.neuron,
            activation_function,
            resnet_dt,
            self.dtype,
            make_generator(seed, 1, 1),
        )
        self.embedding_strip = (
            EmbeddingNet(
                2 * self.tebd_dim,
                self.neuron,
                activation_function,
                resnet_dt,
                self.dtype,
                make_generator(seed, 1, 2),
            )
            if tebd_input_mode == "strip"
            else None
        )
        self.register_buffer("davg", torch.zeros(ntypes, 4, dtype=self.dtype))
        self.register_buffer("dstd", torch.ones(ntypes, 4, dtype=self.dtype))
        for p in self.parameters():
            p.requires_grad_(trainable)

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
        emask = pair_exclude_mask(self.exclude_types, self.ntypes, atype, ext_atype, nlist)
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
    def forward(self, ext_coord, ext_atype, nlist, mapping=None):
        nf, nloc, _ = nlist.shape
        ext_coord = ext_coord.to(self.dtype)

        def rows(start, stop, nl):
            return self._rows(ext_coord, ext_atype, nl, start)

        return {keys.DESCRIPTOR: map_rows(rows, nf, nloc, nlist)}

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

    # --- statistics -------------------------------------------------------------------------

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
