"""One repformer layer of DPA-2 (spec §4.4.1) and its attention sub-modules.

Shapes: ``g1_ext [nf, nall, ng1]`` (atom features, ghosts included), ``g2 [nf, nloc, J, ng2]``
(pair features), ``h2 [nf, nloc, J, 3]`` (equivariant pair vectors), ``nlist [nf, nloc, J]``
(empty slots already pointing at index 0), ``mask [nf, nloc, J]`` bool and the switch
``sw [nf, nloc, J]`` (0 in empty slots).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...geometry.env import gather_rows
from ...nn.mlp import Dense, activation, make_generator
from .config import RepformerConfig

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


class PairContext:
    """Per-forward constants shared by every layer: masks, the neighbour-sum weights and the
    pair-pair attention factors.

    The reference applies ``mask``, the switch ``sw`` and the 1/J normalisation to each large
    ``[nf, nloc, J, C]`` tensor in turn; here they are folded once into small weights: ``wm``
    [nf, nloc, J] for moments ``sum_j h2_j (x) F_j`` and ``wc`` for the convolution. ``sw`` is 0
    in empty slots, so in smooth mode it already carries the mask. The attention factors depend
    on h2, so they are cached per h2 tensor (constant across layers unless ``update_h2``).
    """

    def __init__(self, mask, sw, nnei: int, smooth: bool, sqrt: bool):
        self.mask, self.sw, self.nnei, self.smooth = mask, sw, nnei, smooth
        dtype = sw.dtype
        if smooth:
            self.wm = sw * (1.0 / (nnei**0.5 if sqrt else nnei))
            self.wc = sw * (1.0 / nnei)
        else:
            fmask = mask.to(dtype)
            count = fmask.sum(-1, keepdim=True)
            self.wm = fmask / (EPSILON + (count.sqrt() if sqrt else count))
            self.wc = fmask / (EPSILON + count)
        self._attn: tuple | None = None

    def rows(self, start: int, stop: int) -> PairContext:
        """The context of centre atoms ``start:stop`` (for evaluation in chunks of atoms)."""
        out = PairContext.__new__(PairContext)
        out.nnei, out.smooth, out._attn = self.nnei, self.smooth, None
        for name in ("mask", "sw", "wm", "wc"):
            setattr(out, name, getattr(self, name)[:, start:stop])
        return out

    @property
    def npad(self) -> int:
        """Slots cut off the end of the list (all empty in every row): ``nnei - J``."""
        return self.nnei - self.mask.shape[-1]

    def attention_factors(self, h2, hidden: int, gate: bool):
        """``(pre, shift)`` [nf, nloc, J, 1, J(+1)] and ``post`` [nf, nloc, J, 1, J]: logits
        ``= qk * pre + shift`` and the weights ``= softmax[..., :J] * post`` (smooth mode;
        non-smooth keeps the masks).

        In smooth mode an empty slot's logit is exactly ``-ATTN_SHIFT``, so the slots cut off
        the list (``npad``) still sit in the softmax denominator of the reference. One extra
        logit column ``-ATTN_SHIFT + log(npad)`` stands for all of them (their weights are
        zero, so the weights drop it again), which keeps the result exact while the work
        shrinks with ``J^2``.
        """
        key = (id(h2), hidden, gate)
        if self._attn is not None and self._attn[0] == key:
            return self._attn[1]
        hh = torch.matmul(h2, h2.transpose(-1, -2)).unsqueeze(3)  # [nf, nloc, J, 1, J]
        pre = hh if gate else torch.ones_like(hh[..., :1, :1])
        pre = pre * (1.0 / hidden**0.5)
        if self.smooth:
            w2 = self.sw[:, :, :, None, None] * self.sw[:, :, None, None, :]
            pre, shift, post = pre * w2, ATTN_SHIFT * (w2 - 1.0), w2 * hh * (1.0 / 3.0**0.5)
            if self.npad:
                pad = math.log(self.npad) - ATTN_SHIFT
                pre = torch.nn.functional.pad(pre, (0, 1))
                shift = torch.nn.functional.pad(shift, (0, 1), value=pad)
            out = (pre, shift, post)
        else:
            out = (pre, None, hh * (1.0 / 3.0**0.5))
        self._attn = (key, out)
        return out


class SmoothAttentionWeights(torch.autograd.Function):
    """``w = softmax(shift + a * pre)[..., :J] * post`` with a hand-written backward.

    Shapes: ``a [*, J, nh, K]`` (K = J, or J + 1 with the column standing for cut slots),
    ``pre``/``shift`` ``[*, J, 1, K]``, ``post [*, J, 1, J]``; ``w [*, J, nh, J]`` is returned
    without the extra column (its weight is zero), so the value products need no padding.

    Autograd would run eleven separate passes over ``[J, nh, K]`` tensors in the backward,
    each allocating a new one; this backward shares one product between the softmax and the
    ``post`` gradients and works in place on its own temporaries (the same formulas, so the
    results agree with the plain ops to rounding). When the backward itself is being
    differentiated (``create_graph``, e.g. a force loss) it recomputes the softmax from the
    inputs with out-of-place ops, so second derivatives are exact too.
    """

    @staticmethod
    def forward(ctx, a, pre, shift, post):
        # softmax in place on the one new tensor (faster than torch.softmax for rows this short)
        sm = torch.addcmul(shift, a, pre)
        sm = sm.sub_(sm.amax(-1, keepdim=True)).exp_()
        sm = sm.div_(sm.sum(-1, keepdim=True))
        nnei = post.shape[-1]
        ctx.save_for_backward(a, pre, shift, post, sm)
        return sm[..., :nnei] * post

    @staticmethod
    def backward(ctx, gw):
        a, pre, shift, post, sm = ctx.saved_tensors
        nnei, nk = post.shape[-1], a.shape[-1]
        if torch.is_grad_enabled():  # differentiable path for double backward
            sm = torch.softmax(torch.addcmul(shift, a, pre), dim=-1)
            t = gw * sm[..., :nnei]
            gpost = t.sum(-2, keepdim=True)
            u = t * post  # = (gw * post) * sm: the softmax input-gradient product
            s = u.sum(-1, keepdim=True)
            gl = torch.nn.functional.pad(u, (0, nk - nnei)) - sm * s
        else:
            t = gw * sm[..., :nnei]
            gpost = t.sum(-2, keepdim=True)
            u = t.mul_(post)
            s = u.sum(-1, keepdim=True)
            gl = sm * s.neg_()
            gl[..., :nnei] += u
        gshift = gl.sum(-2, keepdim=True)
        gpre = (gl * a).sum(-2, keepdim=True)
        ga = gl * pre if torch.is_grad_enabled() else gl.mul_(pre)
        return ga, gpre, gshift, gpost


def pair_moment(feat, h2, weight) -> torch.Tensor:
    """``H = sum_j (h2_j weight_j) (x) F_j`` -> ``[nf, nloc, 3, nF]`` (weight [nf, nloc, J])."""
    return torch.matmul((h2 * weight.unsqueeze(-1)).transpose(-1, -2), feat)


def symmetrize(hf: torch.Tensor, axis: int) -> torch.Tensor:
    """``(H[:, :axis])^T H / 3`` flattened row-major -> ``[nf, nloc, axis * nF]``."""
    nf, nloc, _, nfeat = hf.shape
    out = torch.matmul(hf[..., :axis].transpose(-1, -2), hf) / 3.0
    return out.reshape(nf, nloc, axis * nfeat)


class Atten2Map(nn.Module):
    """Pair-pair attention weights ``AA [nf, nloc, J, nh, J]`` from g2 (and h2).

    Heads sit between the two slot axes, so every head's logits of one atom come from one
    ``[J * nh, C] @ [C, J]`` product and the weighted sums of all heads from one
    ``[J, nh * J] @ [nh * J, C]`` product: few large matrix products instead of many small.
    """

    def __init__(self, ng2, hidden, nhead, has_gate, smooth, dtype, generator):
        super().__init__()
        self.mapqk = Dense(
            ng2, 2 * hidden * nhead, None, bias=False, dtype=dtype, generator=generator
        )
        self.hidden, self.nhead, self.has_gate, self.smooth = hidden, nhead, has_gate, smooth

    def forward(self, g2, h2, ctx: PairContext):
        nf, nloc, nnei, _ = g2.shape
        nd, nh = self.hidden, self.nhead
        ng2 = g2.shape[-1]
        # the reference's columns are (channel, head) with q the first nh heads
        w = self.mapqk.matrix.view(ng2, nd, 2 * nh).transpose(1, 2)  # [ng2, 2 nh, nd]
        pre, shift, post = ctx.attention_factors(h2, nd, self.has_gate)
        pad = self.smooth and ctx.npad  # a zero key for the column standing for the cut slots
        if ng2 <= nd:
            # q_j . k_k = g2_j (Wq_h Wk_h^T) g2_k: one [ng2, nh * ng2] product instead of two
            # [ng2, nh * nd] ones, and g2 itself is the key of every head
            qk = torch.einsum("ihd,jhd->ihj", w[:, :nh], w[:, nh:]).reshape(ng2, nh * ng2)
            q = torch.matmul(g2, qk).view(nf, nloc, nnei * nh, ng2)
            k = g2.transpose(-1, -2)  # [nf, nloc, ng2, J]
            if pad:
                k = torch.nn.functional.pad(k, (0, 1))
            a = torch.matmul(q, k).view(nf, nloc, nnei, nh, -1)
        else:
            # two products with head-major column blocks avoid slicing one big output
            q = torch.matmul(g2, w[:, :nh].reshape(ng2, nh * nd)).view(nf, nloc, nnei, nh, nd)
            k = torch.matmul(g2, w[:, nh:].reshape(ng2, nh * nd)).view(nf, nloc, nnei, nh, nd)
            if pad:
                k = torch.nn.functional.pad(k, (0, 0, 0, 0, 0, 1))
            a = torch.matmul(q.transpose(2, 3), k.permute(0, 1, 3, 4, 2)).transpose(2, 3)
        if self.smooth:
            # softmax((a * hh / sqrt(nd) + 20) * sw_j sw_k - 20) * post: empty slots have
            # sw = 0, so no mask is needed
            if not self.training and a.requires_grad:  # inference forces: fused backward
                return SmoothAttentionWeights.apply(a, pre, shift, post)
            a = torch.softmax(torch.addcmul(shift, a, pre), dim=-1)
            return a[..., :nnei] * post
        mask = ctx.mask
        a = (a * pre).masked_fill(~mask[:, :, None, None, :], float("-inf"))
        a = torch.softmax(a, dim=-1)
        a = a.masked_fill(~mask[:, :, None, None, :], 0.0)
        a = a.masked_fill(~mask[:, :, :, None, None], 0.0)
        return a * post


class Atten2MultiHeadApply(nn.Module):
    def __init__(self, ng2, nhead, dtype, generator):
        super().__init__()
        self.mapv = Dense(ng2, ng2 * nhead, None, bias=False, dtype=dtype, generator=generator)
        self.head_map = Dense(ng2 * nhead, ng2, None, dtype=dtype, generator=generator)
        self.nhead = nhead

    def forward(self, aa, g2):
        """aa [nf, nloc, J, nh, J], g2 [nf, nloc, J, ng2].

        ``head_map(concat_h(aa_h @ (g2 V_h)))`` computed as ``sum_h aa_h @ (g2 (V_h H_h)) + b``:
        the value and head maps are folded into one [ng2, nh * ng2] matrix, so the
        ``[J, nh * ng2]`` concatenation and its product with the head map (and their gradients)
        are never formed.
        """
        nf, nloc, nnei, ng2 = g2.shape
        nh = self.nhead
        # columns of mapv and rows of head_map are (channel, head)
        wv = self.mapv.matrix.view(ng2, ng2, nh)
        wh = self.head_map.matrix.view(ng2, nh, -1)
        folded = torch.einsum("ich,cho->iho", wv, wh).reshape(ng2, -1)
        u = torch.matmul(g2, folded).view(nf, nloc, nnei, nh, -1).transpose(2, 3)
        u = u.reshape(nf, nloc, nh * nnei, -1)
        out = torch.matmul(aa.reshape(nf, nloc, nnei, nh * nnei), u)  # [nf, nloc, J, ng2]
        return out + self.head_map.bias


class Atten2EquiVarApply(nn.Module):
    def __init__(self, nhead, dtype, generator):
        super().__init__()
        self.head_map = Dense(nhead, 1, None, bias=False, dtype=dtype, generator=generator)

    def forward(self, aa, h2):
        """aa [nf, nloc, J, nh, J], h2 [nf, nloc, J, 3] -> [nf, nloc, J, 3]."""
        nf, nloc, nnei, nh, nk = aa.shape
        out = torch.matmul(aa.reshape(nf, nloc, nnei * nh, nk), h2).view(nf, nloc, nnei, nh, 3)
        return self.head_map(out.transpose(-1, -2)).squeeze(-1)


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

    def forward(self, g1, gg1, ctx: PairContext):
        mask, sw = ctx.mask, ctx.sw
        nf, nloc, nnei = mask.shape
        ni, nd, nh = self.ng1, self.hidden, self.nhead
        q = self.mapq(g1).view(nf, nloc, nd, nh).permute(0, 1, 3, 2)  # [nf, nloc, nh, nd]
        kv = self.mapkv(gg1).view(nf, nloc, nnei, nd + ni, nh).permute(0, 1, 4, 2, 3)
        k, v = kv[..., :nd], kv[..., nd:]
        a = torch.matmul(q.unsqueeze(-2), k.transpose(-1, -2)).squeeze(-2) / nd**0.5
        if self.smooth:
            a = (a + ATTN_SHIFT) * sw.unsqueeze(-2) - ATTN_SHIFT
            if ctx.npad:  # one column for the slots cut off the list (see PairContext)
                a = torch.nn.functional.pad(a, (0, 1), value=math.log(ctx.npad) - ATTN_SHIFT)
                a = torch.softmax(a, dim=-1)[..., :nnei]
            else:
                a = torch.softmax(a, dim=-1)
            a = a * sw.unsqueeze(-2)  # 0 in empty slots
        else:
            a = a.masked_fill(~mask.unsqueeze(-2), float("-inf"))
            a = torch.softmax(a, dim=-1).masked_fill(~mask.unsqueeze(-2), 0.0)
        out = torch.matmul(a.unsqueeze(-2), v).squeeze(-2).reshape(nf, nloc, nh * ni)
        return self.head_map(out)


class RepformerLayer(nn.Module):
    """One repformer layer, configured by the ``repformer`` section (:class:`RepformerConfig`);
    ``update_chnnl_2`` is False in the last layer (g2 and h2 are then not updated)."""

    def __init__(
        self,
        nnei: int,
        cfg: RepformerConfig,
        update_chnnl_2: bool = True,
        smooth: bool = True,
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        salt: tuple = (),
    ):
        super().__init__()
        if cfg.update_style not in UPDATE_STYLES:
            raise ValueError(
                f"update_style must be one of {UPDATE_STYLES}, got {cfg.update_style!r}"
            )
        self.nnei, self.g1_dim, self.g2_dim = nnei, cfg.g1_dim, cfg.g2_dim
        self.axis = cfg.axis_neuron
        self.update_chnnl_2 = update_chnnl_2
        self.has_conv, self.has_drrd = cfg.update_g1_has_conv, cfg.update_g1_has_drrd
        self.has_grrg, self.has_attn1 = cfg.update_g1_has_grrg, cfg.update_g1_has_attn
        self.has_g1g1 = cfg.update_g2_has_g1g1 and update_chnnl_2
        self.has_attn2 = cfg.update_g2_has_attn and update_chnnl_2
        self.update_h2 = cfg.update_h2 and update_chnnl_2
        self.update_style, self.smooth = cfg.update_style, smooth
        self.use_sqrt_nnei = cfg.use_sqrt_nnei
        self.g1_out_conv, self.g1_out_mlp = cfg.g1_out_conv, cfg.g1_out_mlp
        self.act = activation(cfg.activation_function)
        self._res = cfg.update_style == "res_residual"
        self._residual = (cfg.update_residual, cfg.update_residual_init)
        self._dtype, self._seed, self._salt = dtype, seed, salt
        # residual vectors are kept in the reference's creation order and used by position
        self.g1_residual = nn.ParameterList()
        self.g2_residual = nn.ParameterList()
        self.h2_residual = nn.ParameterList()
        self._init_g1_maps(cfg)
        self._init_g2_maps(cfg)
        del self._res, self._residual, self._dtype, self._seed, self._salt

    def _gen(self, i: int) -> torch.Generator:
        return make_generator(self._seed, *self._salt, i)

    def _dense(self, n_in: int, n_out: int, i: int, bias: bool = True) -> Dense:
        return Dense(n_in, n_out, None, bias=bias, dtype=self._dtype, generator=self._gen(i))

    def _add_residual(self, plist: nn.ParameterList, dim: int, i: int) -> None:
        """Append a residual weight (update_style "res_residual" only)."""
        if self._res:
            scale, mode = self._residual
            plist.append(make_residual(dim, scale, mode, self._dtype, self._gen(i)))

    def _init_g1_maps(self, cfg: RepformerConfig) -> None:
        """linear1, linear2, g1_self_mlp and proj_g1g2 (the reference's creation order)."""
        g1_dim, g2_dim, axis = cfg.g1_dim, cfg.g2_dim, cfg.axis_neuron
        self._add_residual(self.g1_residual, g1_dim, 0)
        n_in = 0 if cfg.g1_out_mlp else g1_dim
        if cfg.update_g1_has_conv and not cfg.g1_out_conv:
            n_in += g2_dim
        if cfg.update_g1_has_grrg:
            n_in += axis * g2_dim
        if cfg.update_g1_has_drrd:
            n_in += axis * g1_dim
        self.linear1 = self._dense(n_in, g1_dim, 1)
        self.linear2 = None
        if self.update_chnnl_2:
            self.linear2 = self._dense(g2_dim, g2_dim, 2)
            self._add_residual(self.g2_residual, g2_dim, 3)
        self.g1_self_mlp = None
        if cfg.g1_out_mlp:
            self.g1_self_mlp = self._dense(g1_dim, g1_dim, 15)
            self._add_residual(self.g1_residual, g1_dim, 16)
        self.proj_g1g2 = None
        if cfg.update_g1_has_conv:
            if cfg.g1_out_conv:
                self.proj_g1g2 = self._dense(g2_dim, g1_dim, 4, bias=False)
                self._add_residual(self.g1_residual, g1_dim, 17)
            else:
                self.proj_g1g2 = self._dense(g1_dim, g2_dim, 4, bias=False)

    def _init_g2_maps(self, cfg: RepformerConfig) -> None:
        """proj_g1g1g2, the pair attention and the local attention."""
        g1_dim, g2_dim, dtype, smooth = cfg.g1_dim, cfg.g2_dim, self._dtype, self.smooth
        self.proj_g1g1g2 = None
        if self.has_g1g1:
            self.proj_g1g1g2 = self._dense(g1_dim, g2_dim, 5, bias=False)
            self._add_residual(self.g2_residual, g2_dim, 6)
        self.attn2g_map = self.attn2_mh_apply = self.attn2_lm = self.attn2_ev_apply = None
        nhead = cfg.attn2_nhead
        if self.has_attn2 or self.update_h2:
            self.attn2g_map = Atten2Map(
                g2_dim, cfg.attn2_hidden, nhead, cfg.attn2_has_gate, smooth, dtype, self._gen(7)
            )
            if self.has_attn2:
                self.attn2_mh_apply = Atten2MultiHeadApply(g2_dim, nhead, dtype, self._gen(8))
                ln_eps = 1e-5 if cfg.ln_eps is None else cfg.ln_eps  # the reference's null
                self.attn2_lm = nn.LayerNorm(g2_dim, eps=ln_eps, dtype=dtype)
                self.attn2_lm.requires_grad_(cfg.trainable_ln)
                self._add_residual(self.g2_residual, g2_dim, 10)
            if self.update_h2:
                self.attn2_ev_apply = Atten2EquiVarApply(nhead, dtype, self._gen(11))
                self._add_residual(self.h2_residual, 1, 12)
        self.loc_attn = None
        if cfg.update_g1_has_attn:
            self.loc_attn = LocalAtten(
                g1_dim, cfg.attn1_hidden, cfg.attn1_nhead, smooth, dtype, self._gen(13)
            )
            self._add_residual(self.g1_residual, g1_dim, 14)

    def _conv(self, gg1, g2, ctx: PairContext):
        """``c sum_j g2_j * g1_j`` with the weight folded into the narrow g2 (proj is linear)."""
        g2w = g2 * ctx.wc.unsqueeze(-1)
        if self.g1_out_conv:
            return (self.proj_g1g2(g2w) * gg1).sum(-2)
        return (g2w * self.proj_g1g2(gg1)).sum(-2)

    def forward(self, g1_ext, g2, h2, nlist, ctx: PairContext, start: int = 0):
        """New (g1, g2, h2) of the centre atoms ``start : start + nlist.shape[1]`` (all local
        atoms by default; a slice of rows when evaluating in chunks, ``ctx`` sliced to match)."""
        g1 = g1_ext[:, start : start + nlist.shape[1]]
        gg1 = gather_rows(g1_ext, nlist)
        style = self.update_style
        g2_new, h2_new = g2, h2
        if self.update_chnnl_2:
            g2_upd = [g2, self.act(self.linear2(g2))]
            if self.has_g1g1:
                w = ctx.sw if self.smooth else ctx.mask.to(g1.dtype)
                gg = g1.unsqueeze(-2) * gg1 * w.unsqueeze(-1)
                g2_upd.append(self.proj_g1g1g2(gg))
            aa = None
            if self.attn2g_map is not None:
                aa = self.attn2g_map(g2, h2, ctx)
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
            conv = self._conv(gg1, g2, ctx)
            (g1_upd if self.g1_out_conv else mlp_in).append(conv)
        if self.has_grrg or self.has_drrd:
            h2w = (h2 * ctx.wm.unsqueeze(-1)).transpose(-1, -2)  # [nf, nloc, 3, J]
            if self.has_grrg:
                mlp_in.append(symmetrize(torch.matmul(h2w, g2), self.axis))
            if self.has_drrd:
                mlp_in.append(symmetrize(torch.matmul(h2w, gg1), self.axis))
        g1_upd.append(self.act(self.linear1(torch.cat(mlp_in, dim=-1))))
        if self.loc_attn is not None:
            g1_upd.append(self.loc_attn(g1, gg1, ctx))
        g1_new = combine_updates(g1_upd, style, self.g1_residual)
        return g1_new, g2_new, h2_new
