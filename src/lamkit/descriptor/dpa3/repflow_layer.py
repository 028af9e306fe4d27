"""One repflow layer of DPA-3: node, edge and angle features update each other.

Shapes: node ``[nf, nloc, n_dim]`` (``node_ext``: ``[nf, nall, n_dim]``), edge
``[nf, nloc, nnei, e_dim]``, angle ``[nf, nloc, a_sel, a_sel, a_dim]`` (pairs of the first
``a_sel`` edge slots that lie within ``a_rcut``).

Every linear map over a concatenation (``[node_i, node_j, edge_ij]``,
``[angle_ijk, node_i, edge_ik, edge_ij]``) is applied block by block, which is the reference's
``optim_update`` and equals its plain form up to rounding. With ``use_dynamic_sel`` the
reference sums over the real edges/angles only and divides by ``sel / sel_reduce_factor``;
empty slots contribute exactly zero here (switch 0), so the same numbers follow from the dense
layout with those divisors.

Parameter names are the reference's (``node_self_mlp``, ``n_residual``, ...), so a DeePMD-kit
checkpoint's state dict loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ...geometry.env import gather_rows
from ...nn.mlp import Dense, activation, make_generator
from ..dpa2.repformer_layer import combine_updates, make_residual
from .config import RepflowConfig


def pair_moment(edge: torch.Tensor, h2: torch.Tensor, sw: torch.Tensor, scale: float):
    """``h2^T (edge * sw) * scale``: ``[nf, nloc, 3, e_dim]`` (``sw`` is 0 in empty slots)."""
    return torch.matmul(h2.transpose(-1, -2), edge * sw.unsqueeze(-1)) * scale


def grrg(hg: torch.Tensor, axis_neuron: int) -> torch.Tensor:
    """Invariant ``hg[..., :axis]^T hg / 3`` flattened: ``[nf, nloc, axis * e_dim]``."""
    nf, nloc, _, dim = hg.shape
    out = torch.matmul(hg[..., :axis_neuron].transpose(-1, -2), hg) / 3.0
    return out.reshape(nf, nloc, axis_neuron * dim)


class RepFlowLayer(nn.Module):
    """One repflow layer, configured by the ``repflow`` section (:class:`RepflowConfig`);
    ``nnei``/``a_sel`` are the resolved edge and angle neighbour counts."""

    def __init__(
        self,
        nnei: int,
        a_sel: int,
        cfg: RepflowConfig,
        activation_function: str = "silu",
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        salt: tuple = (),
    ):
        super().__init__()
        self.nnei, self.a_sel = int(nnei), int(a_sel)
        self.n_dim, self.e_dim, self.a_dim = cfg.n_dim, cfg.e_dim, cfg.a_dim
        self.axis_neuron = cfg.axis_neuron
        self.update_angle = cfg.update_angle
        self.update_style = cfg.update_style
        self.smooth_edge_update = cfg.smooth_edge_update
        self.n_multi_edge_message = cfg.n_multi_edge_message
        self.a_compress_rate = cfg.a_compress_rate
        self.a_compress_use_split = cfg.a_compress_use_split
        self.act = activation(activation_function)
        # divisors of the neighbour sums: the slot counts, or the "dynamic" expected counts
        if cfg.use_dynamic_sel:
            self.e_norm = self.nnei / cfg.sel_reduce_factor
            self.a_norm = self.a_sel / cfg.sel_reduce_factor
        else:
            self.e_norm, self.a_norm = float(self.nnei), float(self.a_sel)
        self._init_maps(cfg, dtype, seed, salt)

    def _init_maps(self, cfg: RepflowConfig, dtype, seed, salt) -> None:
        """The linear maps and residual weights, in the reference's creation order."""
        n_dim, e_dim, a_dim = cfg.n_dim, cfg.e_dim, cfg.a_dim

        def gen(i):
            return make_generator(seed, *salt, i)

        def dense(n_in, n_out, i, bias=True):
            return Dense(n_in, n_out, None, bias=bias, dtype=dtype, generator=gen(i))

        res = cfg.update_style == "res_residual"

        def resid(dim, i):
            scale, mode = cfg.update_residual, cfg.update_residual_init
            return make_residual(dim, scale, mode, dtype, gen(100 + i))

        edge_info = 2 * n_dim + e_dim
        self.node_self_mlp = dense(n_dim, n_dim, 0)
        self.node_sym_linear = dense(cfg.axis_neuron * (n_dim + e_dim), n_dim, 2)
        self.node_edge_linear = dense(edge_info, cfg.n_multi_edge_message * n_dim, 4)
        self.edge_self_linear = dense(edge_info, e_dim, 6)
        # residual weights in the reference's creation order, used by position
        self.n_residual = nn.ParameterList(
            [resid(n_dim, i) for i in range(2 + cfg.n_multi_edge_message)] if res else []
        )
        self.e_residual = nn.ParameterList(
            [resid(e_dim, 10 + i) for i in range(2 if cfg.update_angle else 1)] if res else []
        )
        self.a_residual = nn.ParameterList([resid(a_dim, 20)] if res and cfg.update_angle else [])
        self.a_compress_n_linear = self.a_compress_e_linear = None
        self.edge_angle_linear1 = self.edge_angle_linear2 = self.angle_self_linear = None
        if cfg.update_angle:
            rate = cfg.a_compress_rate
            if rate == 0:
                self.n_a_dim, self.e_a_dim = n_dim, e_dim
            else:
                self.n_a_dim = a_dim // rate
                self.e_a_dim = a_dim // (2 * rate) * cfg.a_compress_e_rate
                if not cfg.a_compress_use_split:
                    self.a_compress_n_linear = dense(n_dim, self.n_a_dim, 8, bias=False)
                    self.a_compress_e_linear = dense(e_dim, self.e_a_dim, 9, bias=False)
            angle_in = a_dim + self.n_a_dim + 2 * self.e_a_dim
            self.edge_angle_linear1 = dense(angle_in, e_dim, 10)
            self.edge_angle_linear2 = dense(e_dim, e_dim, 11)
            self.angle_self_linear = dense(angle_in, a_dim, 13)

    # --- block-wise linear maps ---------------------------------------------------------------
    def _edge_linear(self, layer: Dense, node, node_ext, edge, nlist):
        """``layer([node_i, node_j, edge_ij])`` without building the concatenation."""
        w_i, w_j, w_e = torch.split(layer.matrix, [self.n_dim, self.n_dim, self.e_dim])
        return (
            layer.bias
            + torch.matmul(node, w_i).unsqueeze(2)
            + gather_rows(torch.matmul(node_ext, w_j), nlist)
            + torch.matmul(edge, w_e)
        )

    def _angle_linear(self, layer: Dense, angle, node_a, edge_a):
        """``layer([angle_ijk, node_i, edge_ik, edge_ij])`` (j: axis 2, k: axis 3)."""
        w_a, w_n, w_k, w_j = torch.split(
            layer.matrix, [angle.shape[-1], node_a.shape[-1], edge_a.shape[-1], edge_a.shape[-1]]
        )
        # the one [nf, nloc, a, a, out] tensor is the product; the other blocks are added in
        # place (no further tensors of that size: the angle path is memory-bound)
        small = (layer.bias + torch.matmul(node_a, w_n)[:, :, None, :]).unsqueeze(2)
        out = torch.matmul(angle, w_a)
        out.add_(torch.matmul(edge_a, w_j).unsqueeze(3))
        return out.add_(small + torch.matmul(edge_a, w_k).unsqueeze(2))

    def _combine(self, updates, residuals):
        return combine_updates(updates, self.update_style, list(residuals))

    # --- forward ------------------------------------------------------------------------------
    def forward(self, node_ext, edge, h2, angle, nlist, sw, a_mask, a_sw, start: int = 0):
        """nlist: 0 in empty slots; sw / a_sw: 0 in empty slots; a_mask [nf, rows, a_sel].
        The pair rows belong to centre atoms ``start : start + rows`` (chunked evaluation)."""
        nloc = nlist.shape[1]
        node = node_ext[:, start : start + nloc]
        nei_node = gather_rows(node_ext, nlist)
        scale = self.e_norm**-0.5

        n_updates = [node, self.act(self.node_self_mlp(node))]
        sym = torch.cat(
            [
                grrg(pair_moment(edge, h2, sw, scale), self.axis_neuron),
                grrg(pair_moment(nei_node, h2, sw, scale), self.axis_neuron),
            ],
            dim=-1,
        )
        n_updates.append(self.act(self.node_sym_linear(sym)))
        message = self.act(self._edge_linear(self.node_edge_linear, node, node_ext, edge, nlist))
        message = (message * sw.unsqueeze(-1)).sum(dim=-2) / self.e_norm
        if self.n_multi_edge_message > 1:
            heads = message.unflatten(-1, (self.n_multi_edge_message, self.n_dim))
            n_updates.extend(heads.unbind(-2))
        else:
            n_updates.append(message)
        node_new = self._combine(n_updates, self.n_residual)

        e_updates = [
            edge,
            self.act(self._edge_linear(self.edge_self_linear, node, node_ext, edge, nlist)),
        ]
        if not self.update_angle:
            return node_new, self._combine(e_updates, self.e_residual), angle

        node_a, edge_a = node, edge
        if self.a_compress_rate:
            if self.a_compress_use_split:
                node_a, edge_a = node[..., : self.n_a_dim], edge[..., : self.e_a_dim]
            else:
                node_a = self.a_compress_n_linear(node)
                edge_a = self.a_compress_e_linear(edge)
        a_width = a_mask.shape[-1]  # a_sel, or fewer when empty slots were trimmed
        edge_a = torch.where(a_mask.unsqueeze(-1), edge_a[:, :, :a_width], 0.0)

        upd = self.act(self._angle_linear(self.edge_angle_linear1, angle, node_a, edge_a))
        weight = (a_sw.unsqueeze(-1) * a_sw.unsqueeze(-2)).unsqueeze(-1)
        reduced = (weight * upd).sum(dim=-2) / self.a_norm**0.5
        nf, _, nnei, _ = edge.shape
        padded = torch.cat([reduced, reduced.new_zeros(nf, nloc, nnei - a_width, self.e_dim)], 2)
        if not self.smooth_edge_update:
            full = torch.cat([a_mask, a_mask.new_zeros(nf, nloc, nnei - a_width)], dim=-1)
            padded = torch.where(full.unsqueeze(-1), padded, edge)
        e_updates.append(self.act(self.edge_angle_linear2(padded)))
        edge_new = self._combine(e_updates, self.e_residual)

        a_upd = self.act(self._angle_linear(self.angle_self_linear, angle, node_a, edge_a))
        angle_new = self._combine([angle, a_upd], self.a_residual)
        return node_new, edge_new, angle_new
