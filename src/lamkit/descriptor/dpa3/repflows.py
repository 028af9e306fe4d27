"""The repflow block of DPA-3: edge and angle inputs from the environment matrix, then
``nlayers`` :class:`RepFlowLayer` with the node features re-gathered to the ghost atoms before
each layer; the output rotation matrix comes from the last edge features."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ...geometry.env import gather_rows, smooth_switch
from ...nn.chunking import Chunking, map_rows, row_bounds
from ...nn.mlp import Dense, activation, make_generator
from ...nn.params import STAT_NAMES, STAT_ROWS, RefNames
from ...nn.tracing import capturing
from ..env_block import EnvBlock
from .config import RepflowConfig
from .repflow_layer import RepFlowLayer, pair_moment


def exp_switch(r: torch.Tensor, rmin: float, rmax: float) -> torch.Tensor:
    """``exp(-exp(20 (r - rmin) / rmin))`` on ``r`` clamped to ``[0, rmax]`` (the reference's
    ``use_exp_switch``): about 1 well inside ``rmin``, falling to ~0 beyond it."""
    r = torch.clamp(r, min=0.0, max=rmax)
    return torch.exp(-torch.exp(20.0 / rmin * (r - rmin)))


def safe_norm(x: torch.Tensor) -> torch.Tensor:
    """``|x|`` over the last axis, ``[..., 1]``, with a zero gradient at ``x = 0``."""
    nonzero = (x * x).sum(-1, keepdim=True) > 0
    safe = torch.where(nonzero, x, torch.ones_like(x))
    return torch.where(nonzero, torch.linalg.norm(safe, dim=-1, keepdim=True), 0.0)


def env_matrix(
    ext_coord, nlist, rcut: float, rcut_smth: float, protection: float, use_exp: bool, start=0
):
    """``[1/r, x/r^2, y/r^2, z/r^2] * sw`` ``[nf, rows, nnei, 4]``, diff (0 in empty slots)
    and sw ``[nf, rows, nnei]`` (0 in empty slots) of centre atoms ``start : start + rows``."""
    rows = nlist.shape[1]
    mask = (nlist >= 0).unsqueeze(-1)
    diff = (gather_rows(ext_coord, nlist) - ext_coord[:, start : start + rows, None, :]) * mask
    safe = torch.where(mask, diff, torch.ones_like(diff))
    length = torch.where(mask, torch.linalg.norm(safe, dim=-1, keepdim=True), 1.0)
    switch = exp_switch if use_exp else smooth_switch
    sw = switch(length, rcut_smth, rcut) * mask
    inv = length + protection
    env = torch.cat([1 / inv, diff / inv**2], dim=-1) * sw
    return env, diff, sw.squeeze(-1)


class Repflows(EnvBlock):
    """The repflow block, configured by the ``repflow`` section (:class:`RepflowConfig`);
    ``e_sel``/``a_sel`` are its resolved edge and angle neighbour counts. The mean is always
    zero; the std is the constant ``fix_stat_std`` unless that is 0."""

    set_davg_zero = True

    def __init__(
        self,
        ntypes: int,
        cfg: RepflowConfig,
        e_sel: int,
        a_sel: int,
        *,
        activation_function: str = "silu",
        env_protection: float = 0.0,
        dtype: torch.dtype = torch.float64,
        seed: int | None = None,
        salt: tuple = (),
        where: str = "model/descriptor/repflow",
    ):
        super().__init__()
        self.fix_stat_std = float(cfg.fix_stat_std)
        self.init_env(
            ntypes,
            cfg.e_rcut,
            cfg.e_rcut_smth,
            e_sel,
            dtype=dtype,
            typed=False,
            env_protection=env_protection,
            where=where,
            names=("e_rcut", "e_rcut_smth", "e_sel"),
            std=self.fix_stat_std if self.fix_stat_std != 0.0 else 1.0,
        )
        self.a_rcut, self.a_rcut_smth = float(cfg.a_rcut), float(cfg.a_rcut_smth)
        self.a_sel = int(a_sel)
        self.n_dim, self.e_dim = cfg.n_dim, cfg.e_dim
        self.edge_init_use_dist = cfg.edge_init_use_dist
        self.use_exp_switch = cfg.use_exp_switch
        reduce = cfg.sel_reduce_factor
        self.e_norm = self.nnei / reduce if cfg.use_dynamic_sel else float(self.nnei)
        self.act = activation(activation_function)
        self.edge_embd = Dense(
            1, cfg.e_dim, None, dtype=dtype, generator=make_generator(seed, *salt, 0)
        )
        self.angle_embd = Dense(
            1, cfg.a_dim, None, bias=False, dtype=dtype, generator=make_generator(seed, *salt, 1)
        )
        self.layers = nn.ModuleList(
            RepFlowLayer(
                self.nnei,
                self.a_sel,
                cfg,
                activation_function=activation_function,
                dtype=dtype,
                seed=seed,
                salt=(*salt, 2, i),
            )
            for i in range(cfg.nlayers)
        )

    def widths(self, ext_coord, nlist) -> tuple[torch.Tensor, int]:
        """The edge list without its trailing empty slots, and the angle slots to keep.

        Slots past the last neighbour of every row carry nothing (zero switch, zero mask, and
        the normalisations use the configured ``e_sel``/``a_sel``), so dropping them changes no
        number and saves the memory of large ``sel`` (the OpenLAM models' 1200/300 edge/angle
        slots with ``use_dynamic_sel``). Eager evaluation only: traced and compiled graphs keep
        the full, static widths."""
        a_width = min(self.a_sel, nlist.shape[-1])
        if capturing():
            return nlist, a_width
        with torch.no_grad():
            slot = torch.arange(1, nlist.shape[-1] + 1, device=nlist.device)
            width = max(1, int(torch.where(nlist >= 0, slot, 0).max()))
            nlist = nlist[..., :width]
            a_nl = nlist[..., : self.a_sel]
            idx = torch.where(a_nl >= 0, a_nl, 0)
            d = gather_rows(ext_coord, idx) - ext_coord[:, : nlist.shape[1]].unsqueeze(2)
            inside = (a_nl >= 0) & (d.norm(dim=-1) < self.a_rcut)
            a_width = max(1, int(torch.where(inside, slot[: a_nl.shape[-1]], 0).max()))
        return nlist, a_width

    def inputs(self, ext_coord, ext_atype, nlist, start: int = 0, a_width: int | None = None):
        """Initial edge/angle features and the pair data every layer uses, of centre atoms
        ``start : start + nlist.shape[1]`` (angles over the first ``a_width`` edge slots)."""
        rows = nlist.shape[1]
        prot, use_exp = self.env_protection, self.use_exp_switch
        env, diff, sw = env_matrix(
            ext_coord, nlist, self.rcut, self.rcut_smth, prot, use_exp, start
        )
        rr = self.normalize_env(env, ext_atype[:, start : start + rows])
        # angles: the first a_sel edge slots within a_rcut
        a_width = min(self.a_sel, nlist.shape[-1]) if a_width is None else a_width
        a_nlist = nlist[..., :a_width]
        a_nlist = torch.where(
            safe_norm(diff[..., :a_width, :]).squeeze(-1) < self.a_rcut, a_nlist, -1
        )
        _, a_diff, a_sw = env_matrix(
            ext_coord, a_nlist, self.a_rcut, self.a_rcut_smth, prot, use_exp, start
        )
        unit = a_diff / (safe_norm(a_diff) + 1e-6)
        cosine = torch.matmul(unit, unit.transpose(-1, -2)) * (1 - 1e-6)
        angle = self.angle_embd(cosine.unsqueeze(-1) / math.sqrt(math.pi))
        if self.edge_init_use_dist:
            edge = self.edge_embd(safe_norm(diff))
        else:
            edge = self.act(self.edge_embd(rr[..., :1]))
        return edge, rr[..., 1:], angle, sw, a_nlist >= 0, a_sw

    def forward(
        self, ext_coord, ext_atype, nlist, node, mapping, chunking: Chunking | None = None
    ):
        """node [nf, nloc, n_dim] (the type embedding) -> node, edge, h2, rot_mat, sw;
        ``chunking``: see :mod:`lamkit.nn.chunking`."""
        nf, nloc, _ = nlist.shape
        nlist, a_width = self.widths(ext_coord.detach(), nlist)
        bounds = row_bounds(nf, nloc, chunking)
        edge, h2, angle, sw, a_mask, a_sw = map_rows(
            lambda s, e, nl: self.inputs(ext_coord, ext_atype, nl, s, a_width),
            nf,
            nloc,
            nlist,
            bounds=bounds,
            chunking=chunking,
        )
        nl = torch.where(nlist >= 0, nlist, 0)
        if mapping is None:
            if ext_coord.shape[1] != nloc:
                raise ValueError("repflows need `mapping` when there are ghost atoms")
        else:
            # message passing among local atoms: the ghosts' features are their owners'
            nl = torch.gather(mapping, 1, nl.reshape(nf, -1)).reshape(nl.shape)
        node = self.act(node)
        for layer in self.layers:
            if bounds is None:
                node, edge, angle = layer(node, edge, h2, angle, nl, sw, a_mask, a_sw)
            else:  # slices of centre atoms; each reads every atom's node features
                node, edge, angle = map_rows(
                    functools.partial(self._layer_rows, layer, node),
                    nf,
                    nloc,
                    edge,
                    h2,
                    angle,
                    nl,
                    sw,
                    a_mask,
                    a_sw,
                    bounds=bounds,
                    chunking=chunking,
                )
        hg = pair_moment(edge, h2, sw, self.e_norm**-0.5)
        return node, edge, h2, hg.transpose(-1, -2), sw

    @staticmethod
    def _layer_rows(layer, node, start, stop, edge, h2, angle, nl, sw, a_mask, a_sw):
        return layer(node, edge, h2, angle, nl, sw, a_mask, a_sw, start)

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = STAT_ROWS
    REF_NAMES = RefNames(
        names=(
            *STAT_NAMES,
            ("edge_embd.**", "edge_embd.**"),
            ("angle_embd.**", "angle_embd.**"),
            ("layers.**", "layers.**"),
        ),
    )
