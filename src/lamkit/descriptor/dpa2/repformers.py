"""The repformer block of DPA-2 (spec §4.4 step 6-7): g2/h2 from the environment matrix, then
``nlayers`` RepformerLayers with g1 re-gathered to the ghost atoms before each layer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ...geometry.env import environment_matrix, gather_rows
from ...nn.chunking import Chunking, map_rows, row_bounds
from ...nn.mlp import Dense, activation, make_generator
from ...nn.params import STAT_NAMES, STAT_ROWS, RefNames
from ..env_block import EnvBlock
from .config import RepformerConfig
from .repformer_layer import PairContext, RepformerLayer, pair_moment

# g1 [nf, nloc, g1_dim] -> g1 of all extended atoms [nf, nall, g1_dim]
GhostExchange = Callable[[torch.Tensor], torch.Tensor]


class Repformers(EnvBlock):
    """The repformer block, configured by the ``repformer`` section (:class:`RepformerConfig`);
    ``nsel`` is its resolved neighbour count."""

    def __init__(
        self,
        ntypes: int,
        cfg: RepformerConfig,
        nsel: int,
        *,
        smooth: bool = True,
        env_protection: float = 0.0,
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        salt: tuple = (),
        where: str = "model/descriptor/repformer",
    ):
        super().__init__()
        self.set_davg_zero = bool(cfg.set_davg_zero)
        self.init_env(
            ntypes,
            cfg.rcut,
            cfg.rcut_smth,
            nsel,
            dtype=dtype,
            typed=False,
            env_protection=env_protection,
            where=where,
            names=("rcut", "rcut_smth", "nsel"),
        )
        self.g1_dim, self.g2_dim = cfg.g1_dim, cfg.g2_dim
        self.direct_dist, self.smooth = cfg.direct_dist, smooth
        self.use_sqrt_nnei = cfg.use_sqrt_nnei
        self.act = activation(cfg.activation_function)
        self.g2_embd = Dense(
            1, cfg.g2_dim, None, dtype=dtype, generator=make_generator(seed, *salt, 0)
        )
        self.layers = nn.ModuleList(
            RepformerLayer(
                self.nnei,
                cfg,
                update_chnnl_2=(i != cfg.nlayers - 1),
                smooth=smooth,
                dtype=dtype,
                seed=seed,
                salt=(*salt, 1, i),
            )
            for i in range(cfg.nlayers)
        )

    def environment(self, ext_coord, ext_atype, nlist, start: int = 0):
        """Normalised ``R~ [nf, rows, J, 4]``, diff, sw (0 in empty slots), mask of the centre
        atoms ``start : start + nlist.shape[1]``."""
        nloc = nlist.shape[1]
        env, diff, sw, mask = environment_matrix(
            ext_coord, nlist, self.rcut, self.rcut_smth, self.env_protection, start=start
        )
        rr = self.normalize_env(env, ext_atype[:, start : start + nloc])
        return rr, diff, sw.squeeze(-1) * mask.to(sw.dtype), mask

    def pair_features(self, ext_coord, ext_atype, nlist, start: int = 0):
        """Initial ``g2 [nf, rows, J, g2_dim]``, ``h2 [nf, rows, J, 3]``, sw and mask of the
        centre atoms ``start : start + nlist.shape[1]``."""
        rr, diff, sw, mask = self.environment(ext_coord, ext_atype, nlist, start)
        if self.direct_dist:
            fmask = mask.unsqueeze(-1).to(diff.dtype)
            dist = torch.sqrt((diff * diff).sum(-1, keepdim=True) + (1.0 - fmask)) * fmask
            g2, h2 = dist / self.rcut, diff / self.rcut
        else:
            g2, h2 = rr[..., :1], rr[..., 1:]
        return self.act(self.g2_embd(g2)), h2, sw, mask

    def forward(
        self,
        ext_coord,
        ext_atype,
        nlist,
        g1,
        mapping,
        chunking: Chunking | None = None,
        ghost_exchange: GhostExchange | None = None,
    ):
        """g1 [nf, nloc, g1_dim] (transformed repinit output) -> g1, g2, h2, rot_mat, sw.

        In chunked evaluation (``chunking``, see :mod:`lamkit.nn.chunking`) the pair features
        and each layer run on slices of centre atoms; only g1, g2 and h2 of whole layers are
        kept between them. ``ghost_exchange``: the ghost atoms' g1 come from
        ``ghost_exchange(g1)`` (local g1 ``[nf, nloc, g1_dim]`` -> ``[nf, nall, g1_dim]``)
        rather than by gathering through ``mapping``: given while tracing a program for an MD
        engine that hands over the ghost atoms' features itself (DeePMD-kit's comm_dict
        across MPI ranks, :mod:`lamkit.infer.export_pth_comm`).
        """
        nf, nloc, _ = nlist.shape
        bounds = row_bounds(nf, nloc, chunking)
        g2, h2, sw, mask = map_rows(
            lambda s, e, nl: self.pair_features(ext_coord, ext_atype, nl, s),
            nf,
            nloc,
            nlist,
            bounds=bounds,
            chunking=chunking,
        )
        g1 = self.act(g1)
        nl = torch.where(mask, nlist, 0)
        exchange = ghost_exchange
        if mapping is None and exchange is None:
            if ext_coord.shape[1] != nloc:
                raise ValueError("repformers need `mapping` when there are ghost atoms")
            exchange = _no_ghosts
        elif exchange is None:
            index = mapping

            def exchange(g1):
                return gather_rows(g1, index)

        ctx = PairContext(mask, sw, self.nnei, self.smooth, self.use_sqrt_nnei)
        for layer in self.layers:
            g1_ext = exchange(g1)
            if bounds is None:
                g1, g2, h2 = layer(g1_ext, g2, h2, nl, ctx)
            else:
                g1, g2, h2 = self._chunked_layer(
                    layer, g1_ext, g2, h2, nl, ctx, bounds, chunking
                )
        hg = pair_moment(g2, h2, ctx.wm)
        return g1, g2, h2, hg.transpose(-1, -2), sw

    @staticmethod
    def _chunked_layer(layer, g1_ext, g2, h2, nl, ctx, bounds, chunking):
        """One layer on slices of centre atoms (message passing reads every atom's g1 from
        ``g1_ext``, so a slice needs only its own pair rows)."""
        nf, nloc = nl.shape[:2]

        def rows(s, e, g2_rows, h2_rows, nl_rows):
            g1_new, g2_new, h2_new = layer(g1_ext, g2_rows, h2_rows, nl_rows, ctx.rows(s, e), s)
            # a tensor the layer passes through unchanged is not copied into a new whole
            return (
                g1_new,
                None if g2_new is g2_rows else g2_new,
                None if h2_new is h2_rows else h2_new,
            )

        g1_new, g2_new, h2_new = map_rows(
            rows, nf, nloc, g2, h2, nl, bounds=bounds, chunking=chunking
        )
        return g1_new, g2 if g2_new is None else g2_new, h2 if h2_new is None else h2_new

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = STAT_ROWS
    # every name is the reference's but the g2 layer norm's scale
    REF_NAMES = RefNames(
        names=(
            *STAT_NAMES,
            ("layers.*.attn2_lm.weight", "layers.*.attn2_lm.matrix"),
            ("g2_embd.**", "g2_embd.**"),
            ("layers.**", "layers.**"),
        ),
    )


def _no_ghosts(g1: torch.Tensor) -> torch.Tensor:
    return g1
