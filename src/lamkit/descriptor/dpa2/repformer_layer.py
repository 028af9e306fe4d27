"""One repformer layer of DPA-2 (spec §4.4.1) and its attention sub-modules.

Shapes: ``g1_ext [nf, nall, ng1]`` (atom features, ghosts included), ``g2 [nf, nloc, J, ng2]``
(pair features), ``h2 [nf, nloc, J, 3]`` (equivariant pair vectors), ``nlist [nf, nloc, J]``
(empty slots already pointing at index 0), ``mask [nf, nloc, J]`` bool and the switch
``sw [nf, nloc, J]`` (0 in empty slots).
"""

from __future__ import annotations

import torch
from torch import nn

from ...geometry.env import gather_neighbors
from ...nn.mlp import Dense, activation, make_generator

ATTN_SHIFT = 20.0
EPSILON = 1e-4  # protection of 1/(number of neighbours) in the non-smooth paths
UPDATE_STYLES = ("res_avg", "res_incr", "res_residual")


def make_residual(dim, scale, mode, dtype, generator) -> nn.Parameter:
    """A per-channel residual weight: ``N(0, scale^2)`` ("norm") or the constant ``scale``."""
    data = torch.zeros(dim, dtype=dtype)
    if mode == "norm":
        data.normal_(0.0, scale, generator=generator)
    elif mode == "const":
        data.fill_(scale)
    else:
        raise ValueError(f"update_residual_init: 'norm' or 'const', got {mode!r}")
    return nn.Parameter(data)


def combine_updates(updates: list[torch.Tensor], style: str, residuals=None) -> torch.Tensor:
    """Merge ``[u0, u1, ..., un]`` by ``update_style``."""
    if style == "res_avg":
        return sum(updates) / (len(updates) ** 0.5)
    if style == "res_incr":
        return updates[0] + sum(updates[1:]) / ((len(updates) - 1) ** 0.5)
    out = updates[0]
    for u, r in zip(updates[1:], residuals):
        out = out + r * u
    return out


def neighbor_scale(mask, nnei: int, smooth: bool, sqrt: bool, dtype) -> torch.Tensor:
    """``[nf, nloc, 1, 1]`` or a scalar: the 1/J (or 1/sqrt J) normalisation of neighbour sums."""
    if smooth:
        return torch.tensor(1.0 / (nnei**0.5 if sqrt else nnei), dtype=dtype)
    count = mask.to(dtype).sum(-1)
    if sqrt:
        count = count.sqrt()
    return (1.0 / (EPSILON + count))[..., None, None]


def pair_moment(feat, h2, mask, sw, nnei, smooth, sqrt) -> torch.Tensor:
    """``H = c' sum_j h2_j (x) (F_j m_j sw_j)`` -> ``[nf, nloc, 3, nF]``."""
    f = feat * mask.unsqueeze(-1).to(feat.dtype)
    if smooth:
        f = f * sw.unsqueeze(-1)
    hf = torch.matmul(h2.transpose(-1, -2), f)
    return hf * neighbor_scale(mask, nnei, smooth, sqrt, feat.dtype)


def symmetrize(hf: torch.Tensor, axis: int) -> torch.Tensor:
    """``(H[:, :axis])^T H / 3`` flattened row-major -> ``[nf, nloc, axis * nF]``."""
    nf, nloc, _, nfeat = hf.shape
    out = torch.matmul(hf[..., :axis].transpose(-1, -2), hf) / 3.0
    return out.reshape(nf, nloc, axis * nfeat)


class Atten2Map(nn.Module):
    """Pair-pair attention weights ``AA [nf, nloc, J, J, nh]`` from g2 (and h2)."""

    def __init__(self, ng2, hidden, nhead, has_gate, smooth, dtype, generator):
        super().__init__()
        self.mapqk = Dense(
            ng2, 2 * hidden * nhead, None, bias=False, dtype=dtype, generator=generator
        )
        self.hidden, self.nhead, self.has_gate, self.smooth = hidden, nhead, has_gate, smooth

    def forward(self, g2, h2, mask, sw):
        nf, nloc, nnei, _ = g2.shape
        nd, nh = self.hidden, self.nhead
        qk = self.mapqk(g2).view(nf, nloc, nnei, nd, 2 * nh).permute(0, 1, 4, 2, 3)
        q, k = qk[:, :, :nh], qk[:, :, nh:]
        a = torch.matmul(q, k.transpose(-1, -2)) / nd**0.5  # [nf, nloc, nh, J, J]
        hh = torch.matmul(h2, h2.transpose(-1, -2)).unsqueeze(2)
        if self.has_gate:
            a = a * hh
        swj, swk = sw[:, :, None, :, None], sw[:, :, None, None, :]
        if self.smooth:
            a = (a + ATTN_SHIFT) * swj * swk - ATTN_SHIFT
        else:
            a = a.masked_fill(~mask[:, :, None, None, :], float("-inf"))
        a = torch.softmax(a, dim=-1)
        a = a.masked_fill(~mask[:, :, None, None, :], 0.0)
        a = a.masked_fill(~mask[:, :, None, :, None], 0.0)
        if self.smooth:
            a = a * swj * swk
        return (a * hh / 3.0**0.5).permute(0, 1, 3, 4, 2)


class Atten2MultiHeadApply(nn.Module):
    def __init__(self, ng2, nhead, dtype, generator):
        super().__init__()
        self.mapv = Dense(ng2, ng2 * nhead, None, bias=False, dtype=dtype, generator=generator)
        self.head_map = Dense(ng2 * nhead, ng2, None, dtype=dtype, generator=generator)
        self.nhead = nhead

    def forward(self, aa, g2):
        nf, nloc, nnei, ng2 = g2.shape
        v = self.mapv(g2).view(nf, nloc, nnei, ng2, self.nhead).permute(0, 1, 4, 2, 3)
        out = torch.matmul(aa.permute(0, 1, 4, 2, 3), v)  # [nf, nloc, nh, J, ng2]
        out = out.permute(0, 1, 3, 4, 2).reshape(nf, nloc, nnei, ng2 * self.nhead)
        return self.head_map(out)


class Atten2EquiVarApply(nn.Module):
    def __init__(self, nhead, dtype, generator):
        super().__init__()
        self.head_map = Dense(nhead, 1, None, bias=False, dtype=dtype, generator=generator)

    def forward(self, aa, h2):
        out = torch.matmul(aa.permute(0, 1, 4, 2, 3), h2.unsqueeze(2))  # [nf, nloc, nh, J, 3]
        return self.head_map(out.permute(0, 1, 3, 4, 2)).squeeze(-1)


class LocalAtten(nn.Module):
    """Attention of centre g1_i over its neighbours' g1_j."""

    def __init__(self, ng1, hidden, nhead, smooth, dtype, generator):
        super().__init__()
        self.mapq = Dense(ng1, hidden * nhead, None, bias=False, dtype=dtype, generator=generator)
        self.mapkv = Dense(
            ng1, (hidden + ng1) * nhead, None, bias=False, dtype=dtype, generator=generator
        )
        self.head_map = Dense(ng1 * nhead, ng1, None, dtype=dtype, generator=generator)
        self.ng1, self.hidden, self.nhead, self.smooth = ng1, hidden, nhead, smooth

    def forward(self, g1, gg1, mask, sw):
        nf, nloc, nnei = mask.shape
        ni, nd, nh = self.ng1, self.hidden, self.nhead
        q = self.mapq(g1).view(nf, nloc, nd, nh).permute(0, 1, 3, 2)  # [nf, nloc, nh, nd]
        kv = self.mapkv(gg1).view(nf, nloc, nnei, nd + ni, nh).permute(0, 1, 4, 2, 3)
        k, v = kv[..., :nd], kv[..., nd:]
        a = torch.matmul(q.unsqueeze(-2), k.transpose(-1, -2)).squeeze(-2) / nd**0.5
        if self.smooth:
            a = (a + ATTN_SHIFT) * sw.unsqueeze(-2) - ATTN_SHIFT
        else:
            a = a.masked_fill(~mask.unsqueeze(-2), float("-inf"))
        a = torch.softmax(a, dim=-1).masked_fill(~mask.unsqueeze(-2), 0.0)
        if self.smooth:
            a = a * sw.unsqueeze(-2)
        out = torch.matmul(a.unsqueeze(-2), v).squeeze(-2).reshape(nf, nloc, nh * ni)
        return self.head_map(out)


class RepformerLayer(nn.Module):
    def __init__(
        self,
        nnei: int,
        g1_dim: int = 128,
        g2_dim: int = 16,
        axis_neuron: int = 4,
        update_chnnl_2: bool = True,
        update_g1_has_conv: bool = True,
        update_g1_has_drrd: bool = True,
        update_g1_has_grrg: bool = True,
        update_g1_has_attn: bool = True,
        update_g2_has_g1g1: bool = True,
        update_g2_has_attn: bool = True,
        update_h2: bool = False,
        attn1_hidden: int = 64,
        attn1_nhead: int = 4,
        attn2_hidden: int = 16,
        attn2_nhead: int = 4,
        attn2_has_gate: bool = False,
        activation_function: str = "tanh",
        update_style: str = "res_avg",
        update_residual: float = 0.001,
        update_residual_init: str = "norm",
        smooth: bool = True,
        trainable_ln: bool = True,
        ln_eps: float = 1e-5,
        use_sqrt_nnei: bool = True,
        g1_out_conv: bool = True,
        g1_out_mlp: bool = True,
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        salt: tuple = (),
    ):
        super().__init__()
        if update_style not in UPDATE_STYLES:
            raise ValueError(f"update_style must be one of {UPDATE_STYLES}, got {update_style!r}")
        self.nnei, self.g1_dim, self.g2_dim, self.axis = nnei, g1_dim, g2_dim, axis_neuron
        self.update_chnnl_2 = update_chnnl_2
        self.has_conv, self.has_drrd = update_g1_has_conv, update_g1_has_drrd
        self.has_grrg, self.has_attn1 = update_g1_has_grrg, update_g1_has_attn
        self.has_g1g1 = update_g2_has_g1g1 and update_chnnl_2
        self.has_attn2 = update_g2_has_attn and update_chnnl_2
        self.update_h2 = update_h2 and update_chnnl_2
        self.update_style, self.smooth = update_style, smooth
        self.use_sqrt_nnei, self.g1_out_conv, self.g1_out_mlp = (
            use_sqrt_nnei,
            g1_out_conv,
            g1_out_mlp,
        )
        self.act = activation(activation_function)
        res = update_style == "res_residual"

        def gen(i):
            return make_generator(seed, *salt, i)

        def resid(dim, i):
            return make_residual(dim, update_residual, update_residual_init, dtype, gen(i))

        # residual vectors are kept in the reference's creation order and used by position
        self.g1_residual = nn.ParameterList()
        self.g2_residual = nn.ParameterList()
        self.h2_residual = nn.ParameterList()
        if res:
            self.g1_residual.append(resid(g1_dim, 0))
        n_in = 0 if g1_out_mlp else g1_dim
        if update_g1_has_conv and not g1_out_conv:
            n_in += g2_dim
        if update_g1_has_grrg:
            n_in += axis_neuron * g2_dim
        if update_g1_has_drrd:
            n_in += axis_neuron * g1_dim
        self.linear1 = Dense(n_in, g1_dim, None, dtype=dtype, generator=gen(1))
        self.linear2 = None
        if update_chnnl_2:
            self.linear2 = Dense(g2_dim, g2_dim, None, dtype=dtype, generator=gen(2))
            if res:
                self.g2_residual.append(resid(g2_dim, 3))
        self.g1_self_mlp = None
        if g1_out_mlp:
            self.g1_self_mlp = Dense(g1_dim, g1_dim, None, dtype=dtype, generator=gen(15))
            if res:
                self.g1_residual.append(resid(g1_dim, 16))
        self.proj_g1g2 = None
        if update_g1_has_conv:
            if g1_out_conv:
                self.proj_g1g2 = Dense(
                    g2_dim, g1_dim, None, bias=False, dtype=dtype, generator=gen(4)
                )
                if res:
                    self.g1_residual.append(resid(g1_dim, 17))
            else:
                self.proj_g1g2 = Dense(
                    g1_dim, g2_dim, None, bias=False, dtype=dtype, generator=gen(4)
                )
        self.proj_g1g1g2 = None
        if self.has_g1g1:
            self.proj_g1g1g2 = Dense(
                g1_dim, g2_dim, None, bias=False, dtype=dtype, generator=gen(5)
            )
            if res:
                self.g2_residual.append(resid(g2_dim, 6))
        self.attn2g_map = self.attn2_mh_apply = self.attn2_lm = self.attn2_ev_apply = None
        if self.has_attn2 or self.update_h2:
            self.attn2g_map = Atten2Map(
                g2_dim, attn2_hidden, attn2_nhead, attn2_has_gate, smooth, dtype, gen(7)
            )
            if self.has_attn2:
                self.attn2_mh_apply = Atten2MultiHeadApply(g2_dim, attn2_nhead, dtype, gen(8))
                self.attn2_lm = nn.LayerNorm(g2_dim, eps=ln_eps, dtype=dtype)
                self.attn2_lm.requires_grad_(trainable_ln)
                if res:
                    self.g2_residual.append(resid(g2_dim, 10))
            if self.update_h2:
                self.attn2_ev_apply = Atten2EquiVarApply(attn2_nhead, dtype, gen(11))
                if res:
                    self.h2_residual.append(resid(1, 12))
        self.loc_attn = None
        if update_g1_has_attn:
            self.loc_attn = LocalAtten(g1_dim, attn1_hidden, attn1_nhead, smooth, dtype, gen(13))
            if res:
                self.g1_residual.append(resid(g1_dim, 14))

    def _conv(self, gg1, g2, mask, sw):
        if self.g1_out_conv:
            g2 = self.proj_g1g2(g2)
        else:
            gg1 = self.proj_g1g2(gg1)
        gg1 = gg1 * mask.unsqueeze(-1).to(gg1.dtype)
        if self.smooth:
            gg1 = gg1 * sw.unsqueeze(-1)
        scale = neighbor_scale(mask, self.nnei, self.smooth, False, g2.dtype)
        if not self.smooth:
            scale = scale[..., 0]
        return (g2 * gg1).sum(-2) * scale

    def forward(self, g1_ext, g2, h2, nlist, mask, sw):
        nloc = nlist.shape[1]
        g1 = g1_ext[:, :nloc]
        gg1 = gather_neighbors(g1_ext, nlist)
        style = self.update_style
        g2_new, h2_new = g2, h2
        if self.update_chnnl_2:
            g2_upd = [g2, self.act(self.linear2(g2))]
            if self.has_g1g1:
                gg = g1.unsqueeze(-2) * gg1 * mask.unsqueeze(-1).to(g1.dtype)
                if self.smooth:
                    gg = gg * sw.unsqueeze(-1)
                g2_upd.append(self.proj_g1g1g2(gg))
            aa = None
            if self.attn2g_map is not None:
                aa = self.attn2g_map(g2, h2, mask, sw)
            if self.has_attn2:
                g2_upd.append(self.attn2_lm(self.attn2_mh_apply(aa, g2)))
            if self.update_h2:
                h2_new = combine_updates([h2, self.attn2_ev_apply(aa, h2)], style, self.h2_residual)
            g2_new = combine_updates(g2_upd, style, self.g2_residual)

        g1_upd, mlp_in = [g1], []
        if self.g1_out_mlp:
            g1_upd.append(self.act(self.g1_self_mlp(g1)))
        else:
            mlp_in.append(g1)
        if self.has_conv:
            conv = self._conv(gg1, g2, mask, sw)
            (g1_upd if self.g1_out_conv else mlp_in).append(conv)
        sq = self.use_sqrt_nnei
        if self.has_grrg:
            hg = pair_moment(g2, h2, mask, sw, self.nnei, self.smooth, sq)
            mlp_in.append(symmetrize(hg, self.axis))
        if self.has_drrd:
            hg = pair_moment(gg1, h2, mask, sw, self.nnei, self.smooth, sq)
            mlp_in.append(symmetrize(hg, self.axis))
        g1_upd.append(self.act(self.linear1(torch.cat(mlp_in, dim=-1))))
        if self.loc_attn is not None:
            g1_upd.append(self.loc_attn(g1, gg1, mask, sw))
        g1_new = combine_updates(g1_upd, style, self.g1_residual)
        return g1_new, g2_new, h2_new
