"""DPA-1 (alias se_atten): two-body embedding with type embedding and neighbour attention.

For centre atom i with ``J = sel`` type-blind slots sorted by distance, ``R~`` [J, 4] the
normalised environment matrix and ``A_t`` the type embedding (:mod:`lamkit.nn.type_embedding`):

* concat mode: ``G_j = N([R~_j0, A_tj, A_ti])`` (``A_ti`` dropped when ``type_one_side``);
* strip mode:  ``G_j = N_s(R~_j0) * (1 + N_t([A_tj, A_ti]) * (sw_j if smooth))``;
* ``attn_layer`` times ``G <- LayerNorm(G + GatedAttention(G))`` (single head);
* ``T = R~^T G / J``, ``D = T^T T[:, :M2]`` flattened, then ``A_ti`` appended when
  ``concat_output_tebd``.

As in DeePMD-kit, empty (and excluded) slots look up the type of extended atom 0 of their
frame. With ``set_davg_zero`` (the default) their rows of ``R~`` are zero and the attention masks
them, so this has no effect; with a non-zero ``davg`` (``se_atten_v2`` defaults to that) empty
slots contribute ``-davg/dstd`` rows embedded with that type, so predictions then depend on
which atom comes first and on atoms beyond the cutoff. We keep this for parity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import keys
from ..config.schema import REQUIRED, Arg
from ..errors import ConfigError
from ..geometry.env import environment_matrix
from ..nn.chunking import map_rows, row_bounds
from ..nn.econf import econf_types
from ..nn.mlp import Dense, EmbeddingNet, make_generator, to_dtype
from ..nn.params import COMPRESSION, NETWORK_ALIASES, STAT_NAMES, STAT_ROWS, RefNames
from ..nn.type_embedding import TypeEmbedNet
from .base import DESCRIPTORS, Descriptor, pair_exclude_mask

ATTN_SHIFT = 20.0  # smooth attention: logits of vanishing pairs are pulled to -20, not -inf


class GatedAttention(nn.Module):
    """One single-head neighbour attention layer followed by a residual LayerNorm."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        dotr: bool,
        scaling_factor: float,
        normalize: bool,
        temperature: float | None,
        smooth: bool,
        ln_eps: float,
        trainable_ln: bool,
        dtype: torch.dtype,
        generator: torch.Generator,
    ):
        super().__init__()
        self.in_proj = Dense(dim, 3 * hidden, None, dtype=dtype, generator=generator)
        self.out_proj = Dense(hidden, dim, None, dtype=dtype, generator=generator)
        self.norm = nn.LayerNorm(dim, eps=ln_eps, dtype=dtype)
        self.norm.requires_grad_(trainable_ln)
        self.dotr, self.normalize, self.smooth = dotr, normalize, smooth
        self.scale = (hidden * scaling_factor) ** -0.5 if temperature is None else temperature

    def forward(self, g, mask, sw, r_hat):
        """g [n, J, M1], mask [n, J] bool, sw [n, J], r_hat [n, J, 3] -> [n, J, M1]."""
        q, k, v = self.in_proj(g).chunk(3, dim=-1)
        if self.normalize:
            q, k, v = F.normalize(q, dim=-1), F.normalize(k, dim=-1), F.normalize(v, dim=-1)
        logits = torch.matmul(q * self.scale, k.transpose(1, 2))  # [n, J, J]
        if self.smooth:
            sw2 = sw.unsqueeze(-1) * sw.unsqueeze(-2)
            logits = (logits + ATTN_SHIFT) * sw2 - ATTN_SHIFT
        else:
            logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weight = torch.softmax(logits, dim=-1).masked_fill(~mask.unsqueeze(-1), 0.0)
        if self.smooth:
            weight = weight * sw2
        if self.dotr:
            weight = weight * torch.matmul(r_hat, r_hat.transpose(1, 2))
        return self.norm(g + self.out_proj(torch.matmul(weight, v)))


@DESCRIPTORS.register("dpa1", "se_atten")
class DPA1(Descriptor):
    ARGS = (
        Arg("sel", (int, list, str), REQUIRED, doc="neighbour slots (one number), or 'auto'"),
        Arg("rcut", (float,), 6.0),
        Arg("rcut_smth", (float,), 0.5),
        Arg("neuron", (list,), [10, 20, 40]),
        Arg("axis_neuron", (int,), 4, aliases=("n_axis_neuron",)),
        Arg("lmax", (int, type(None)), None, doc="only 1 (the classic DPA-1) is supported"),
        Arg("activation_function", (str,), "tanh"),
        Arg("resnet_dt", (bool,), False),
        Arg("type_one_side", (bool,), False),
        Arg("precision", (str,), "default"),
        Arg("trainable", (bool,), True),
        Arg("seed", (int, type(None)), None),
        Arg("exclude_types", (list,), []),
        Arg("env_protection", (float,), 0.0),
        Arg("attn", (int,), 128),
        Arg("attn_layer", (int,), 2),
        Arg("attn_dotr", (bool,), True),
        Arg("attn_mask", (bool,), False),
        Arg("stripped_type_embedding", (bool, type(None)), None, doc="deprecated: True = strip"),
        Arg("smooth_type_embedding", (bool,), False, aliases=("smooth_type_embdding",)),
        Arg("set_davg_zero", (bool,), True),
        Arg("trainable_ln", (bool,), True),
        Arg("ln_eps", (float, type(None)), None),
        Arg("tebd_dim", (int,), 8),
        Arg("use_econf_tebd", (bool,), False),
        Arg("use_tebd_bias", (bool,), False),
        Arg("tebd_input_mode", (str,), "concat", choices=("concat", "strip")),
        Arg("scaling_factor", (float,), 1.0),
        Arg("normalize", (bool,), True),
        Arg("temperature", (float, type(None)), None),
        Arg("concat_output_tebd", (bool,), True),
        Arg("type_map", (list, type(None)), None),
    )
    mixed_types = True
    has_rot_mat = True

    def __init__(
        self,
        ntypes: int,
        sel,
        rcut=6.0,
        rcut_smth=0.5,
        neuron=(10, 20, 40),
        axis_neuron=4,
        lmax=None,
        activation_function="tanh",
        resnet_dt=False,
        type_one_side=False,
        precision="default",
        trainable=True,
        seed=None,
        exclude_types=(),
        env_protection=0.0,
        attn=128,
        attn_layer=2,
        attn_dotr=True,
        attn_mask=False,
        stripped_type_embedding=None,
        smooth_type_embedding=False,
        set_davg_zero=True,
        trainable_ln=True,
        ln_eps=None,
        tebd_dim=8,
        use_econf_tebd=False,
        use_tebd_bias=False,
        tebd_input_mode="concat",
        scaling_factor=1.0,
        normalize=True,
        temperature=None,
        concat_output_tebd=True,
        type_map=None,
    ):
        super().__init__()
        where = "model/descriptor"
        if isinstance(sel, str):
            raise ValueError("sel must be resolved to a number before building dpa1")
        if lmax not in (None, 1):
            raise ConfigError(f"{where}/lmax: only lmax 1 is supported, got {lmax}")
        if attn_mask:
            raise ConfigError(f"{where}/attn_mask: must be false (as in DeePMD-kit)")
        if stripped_type_embedding is not None:
            tebd_input_mode = "strip" if stripped_type_embedding else "concat"
        if tebd_input_mode not in ("concat", "strip"):
            raise ConfigError(
                f"{where}/tebd_input_mode: 'concat' or 'strip', got '{tebd_input_mode}'"
            )
        self.ntypes = ntypes
        self.nnei = int(sum(sel)) if isinstance(sel, (list, tuple)) else int(sel)
        self.sel = [self.nnei]
        self.rcut, self.rcut_smth = float(rcut), float(rcut_smth)
        self.neuron = list(neuron)
        self.axis_neuron = int(axis_neuron)
        self.type_one_side = type_one_side
        self.tebd_input_mode = tebd_input_mode
        self.smooth = smooth_type_embedding
        self.concat_output_tebd = concat_output_tebd
        self.set_davg_zero = set_davg_zero
        self.env_protection = float(env_protection)
        self.exclude_types = [tuple(p) for p in exclude_types]
        self.tebd_dim = int(tebd_dim)
        self.dtype = to_dtype(precision)
        self.dim_emb = self.neuron[-1]
        self.dim_out = self.dim_emb * self.axis_neuron + (
            self.tebd_dim if concat_output_tebd else 0
        )

        def gen(*salt):
            return make_generator(seed, *salt)

        self.type_embedding = TypeEmbedNet(
            ntypes,
            self.tebd_dim,
            use_tebd_bias,
            self.dtype,
            gen(0),
            trainable,
            econf_type_map=econf_types(use_econf_tebd, type_map, ntypes, where),
        )
        ntebd = self.tebd_dim if type_one_side else 2 * self.tebd_dim
        act = activation_function
        if tebd_input_mode == "concat":
            self.embedding = EmbeddingNet(
                1 + ntebd, self.neuron, act, resnet_dt, self.dtype, gen(1)
            )
            self.embedding_strip = None
        else:
            self.embedding = EmbeddingNet(1, self.neuron, act, resnet_dt, self.dtype, gen(1))
            self.embedding_strip = EmbeddingNet(
                ntebd, self.neuron, act, resnet_dt, self.dtype, gen(2)
            )
        self.attention = nn.ModuleList(
            GatedAttention(
                self.dim_emb,
                int(attn),
                attn_dotr,
                float(scaling_factor),
                normalize,
                temperature,
                self.smooth,
                1e-5 if ln_eps is None else float(ln_eps),
                trainable_ln,
                self.dtype,
                gen(3, layer),
            )
            for layer in range(int(attn_layer))
        )
        self.register_buffer("davg", torch.zeros(ntypes, 4, dtype=self.dtype))
        self.register_buffer("dstd", torch.ones(ntypes, 4, dtype=self.dtype))
        # the reference's compressed type-pair table: always empty here (no compression), kept
        # so that reference checkpoints map one to one
        self.register_buffer("type_embd_data", torch.zeros(0, dtype=self.dtype))
        if not trainable:
            for p in self.parameters():
                p.requires_grad_(False)

    # --- forward ------------------------------------------------------------------------------
    def _pair_embedding(self, rr0, table, ti, tj):
        """G [n, J, M1] from rr0 [n, J, 1], the type table [ntypes+1, tebd] and types [n, J]
        of centres ``ti`` and neighbours ``tj`` (``ntypes`` for virtual atoms)."""
        if self.embedding_strip is None:
            parts = [rr0, table[tj]] + ([] if self.type_one_side else [table[ti]])
            return self.embedding(torch.cat(parts, dim=-1)), None
        nt1 = self.ntypes + 1
        if self.type_one_side:
            pair_tab, idx = self.embedding_strip(table), tj
        else:  # row ti * (ntypes+1) + tj holds [A_tj, A_ti]
            nei = table.unsqueeze(0).expand(nt1, -1, -1)
            cen = table.unsqueeze(1).expand(-1, nt1, -1)
            pair = torch.cat([nei, cen], dim=-1).reshape(nt1 * nt1, -1)
            pair_tab, idx = self.embedding_strip(pair), ti * nt1 + tj
        return self.embedding(rr0), pair_tab[idx]

    def forward(self, ext_coord, ext_atype, nlist, mapping=None):
        """Descriptor, ``rot_mat`` and, unless evaluated in chunks of centre atoms (see
        :mod:`lamkit.nn.chunking`), the per-pair ``g2`` [nf, nloc, J, M1], ``h2`` [.., 3] and
        ``sw`` [nf, nloc, J]: those are the whole-system pair tensors that chunking avoids."""
        nf, nloc, _ = nlist.shape
        ext_coord = ext_coord.to(self.dtype)
        bounds = row_bounds(nf, nloc)

        def rows(start, stop, nl):
            return self._rows(ext_coord, ext_atype, nl, start, pair_outputs=bounds is None)

        return map_rows(rows, nf, nloc, nlist, bounds=bounds)

    def _rows(self, ext_coord, ext_atype, nlist, start: int, pair_outputs: bool = True):
        """Outputs of centre atoms ``start : start + nlist.shape[1]``."""
        nf, nloc, nnei = nlist.shape
        env, _, sw, mask = environment_matrix(
            ext_coord, nlist, self.rcut, self.rcut_smth, self.env_protection, start=start
        )
        atype = ext_atype[:, start : start + nloc]
        at = atype.clamp(min=0)
        rr = (env - self.davg[at].unsqueeze(2)) / self.dstd[at].unsqueeze(2)
        emask = pair_exclude_mask(self.exclude_types, self.ntypes, atype, ext_atype, nlist)
        if emask is not None:
            rr = rr * emask.unsqueeze(-1).to(rr.dtype)
            mask = mask & emask
        sw = sw.squeeze(-1) * mask.to(sw.dtype)
        # empty/excluded slots read extended atom 0 (the reference's convention)
        nl0 = torch.where(mask, nlist, 0).reshape(nf, nloc * nnei)
        tj = torch.gather(ext_atype, 1, nl0).reshape(nf, nloc, nnei)
        tj = torch.where(tj >= 0, tj, self.ntypes)
        ti = torch.where(atype >= 0, atype, self.ntypes).unsqueeze(-1).expand_as(tj)

        n = nf * nloc
        rr = rr.reshape(n, nnei, 4)
        mask, sw = mask.reshape(n, nnei), sw.reshape(n, nnei)
        table = self.type_embedding.table()
        g, g_type = self._pair_embedding(
            rr[:, :, :1], table, ti.reshape(n, nnei), tj.reshape(n, nnei)
        )
        if g_type is not None:
            if self.smooth:
                g_type = g_type * sw.unsqueeze(-1)
            g = g * g_type + g
        r_hat = F.normalize(rr[:, :, 1:4], dim=-1)
        for layer in self.attention:
            g = layer(g, mask, sw, r_hat)

        xyz = torch.matmul(rr.transpose(1, 2), g) / self.nnei  # [n, 4, M1]
        xyz_t = xyz.transpose(1, 2)
        desc = torch.matmul(xyz_t, xyz[:, :, : self.axis_neuron]).reshape(nf, nloc, -1)
        if self.concat_output_tebd:
            desc = torch.cat([desc, table[ti[:, :, 0]]], dim=-1)
        out = {
            keys.DESCRIPTOR: desc,
            "rot_mat": xyz_t[:, :, 1:4].reshape(nf, nloc, self.dim_emb, 3),
        }
        if pair_outputs:
            out["g2"] = g.reshape(nf, nloc, nnei, self.dim_emb)
            out["h2"] = rr[:, :, 1:4].reshape(nf, nloc, nnei, 3)
            out["sw"] = sw.reshape(nf, nloc, nnei)
        return out

    # --- statistics ---------------------------------------------------------------------------

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = STAT_ROWS
    REF_NAMES = RefNames(
        names=(
            *STAT_NAMES,
            ("embedding.layers.*.*", "filter_layers.networks.0.layers.*.*"),
            ("embedding_strip.layers.*.*", "filter_layers_strip.networks.0.layers.*.*"),
            ("attention.*.norm.weight", "dpa1_attention.attention_layers.*.attn_layer_norm.matrix"),
            ("attention.*.norm.bias", "dpa1_attention.attention_layers.*.attn_layer_norm.bias"),
            # in_proj, out_proj
            ("attention.*.*.*", "dpa1_attention.attention_layers.*.attention_layer.*.*"),
            ("type_embd_data", "type_embd_data"),
        ),
        ignore=(*NETWORK_ALIASES, *COMPRESSION),
        block="se_atten",
    )


@DESCRIPTORS.register("se_atten_v2")
class SeAttenV2(DPA1):
    """se_atten with ``tebd_input_mode="strip"`` and ``smooth_type_embedding`` forced on; its
    ``set_davg_zero`` defaults to False (DeePMD-kit's argcheck)."""

    ARGS = tuple(
        Arg("set_davg_zero", (bool,), False) if a.name == "set_davg_zero" else a
        for a in DPA1.ARGS
        if a.name not in ("tebd_input_mode", "smooth_type_embedding", "stripped_type_embedding")
    )

    def __init__(self, ntypes: int, sel, **kwargs):
        super().__init__(ntypes, sel, tebd_input_mode="strip", smooth_type_embedding=True, **kwargs)
