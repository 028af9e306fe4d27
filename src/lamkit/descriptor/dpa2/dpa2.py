"""DPA-2 descriptor (spec §4.4): repinit (a se_atten block without attention, reusing
:class:`lamkit.descriptor.dpa1.DPA1`), an optional three-body block (reusing
:class:`lamkit.descriptor.se_e3_tebd.SeE3Tebd`), a bias-free glorot ``g1_shape_tranform`` and the
repformer layers. All blocks share one type embedding.

``forward`` takes the repinit list (``rcut``/``nsel`` of repinit, sorted by distance) and cuts the
three-body and repformer lists out of it (spec §2.2). Excluded type pairs (``exclude_types``) are
removed from every list here (set to -1 in place), so the blocks never see them; their
statistics are then those of the reference, where each block masks its own list.

Config (``model/descriptor`` with ``type: "dpa2"``): :class:`~.config.DPA2Config`, with the
nested ``repinit`` (:class:`~.config.RepinitConfig`) and ``repformer``
(:class:`~.config.RepformerConfig`) sections of DeePMD-kit's argcheck, defaults included.
"""

from __future__ import annotations

import torch
from torch import nn

from ... import keys
from ...config.schema import normalize
from ...errors import ConfigError
from ...geometry.env import environment_matrix, gather_rows
from ...nn.chunking import Chunking
from ...nn.econf import econf_types
from ...nn.mlp import Dense, make_generator, to_dtype
from ...nn.params import RefNames
from ...nn.type_embedding import TypeEmbedNet
from ..base import (
    DESCRIPTORS,
    Descriptor,
    check_exclude_types,
    env_stat_id,
    pair_exclude_mask,
)
from ..dpa1 import DPA1
from ..env_block import EnvBlock, check_env
from ..env_stat import EnvStat
from ..se_e3_tebd import SeE3Tebd
from .config import (
    DPA2_ARGS,
    REPFORMER_ARGS,
    REPINIT_ARGS,
    DPA2Config,
    RepformerConfig,
    RepinitConfig,
)
from .repformers import GhostExchange, Repformers

REPINIT_DEFAULTS = RepinitConfig.defaults()
REPFORMER_DEFAULTS = RepformerConfig.defaults()


def split_neighbor_list(ext_coord, nlist, rcut: float, nsel: int) -> torch.Tensor:
    """First ``nsel`` columns of a distance-sorted list (padded with -1); ``r > rcut`` -> -1."""
    nf, nloc, nnei = nlist.shape
    if nsel > nnei:
        nlist = torch.cat([nlist, nlist.new_full((nf, nloc, nsel - nnei), -1)], dim=-1)
    nl = nlist[..., :nsel]
    diff = gather_rows(ext_coord, nl) - ext_coord[:, :nloc, None, :]
    r2 = (diff * diff).sum(-1)
    return torch.where((nl >= 0) & (r2 <= rcut * rcut), nl, -1)


def _share_type_embedding(block: nn.Module, tebd: nn.Module) -> None:
    """Make ``block`` use ``tebd`` without registering it a second time."""
    del block.type_embedding
    object.__setattr__(block, "type_embedding", tebd)


def _check_cutoff_order(where: str, blocks: dict[str, tuple[float, int]]) -> None:
    """The sub-lists are cut out of the repinit list: sorted by cutoff, the neighbour counts
    must not decrease, and repinit must be strictly the largest (as the reference asserts)."""
    order = sorted(blocks.items(), key=lambda kv: kv[1])
    for (a, (rc_a, n_a)), (b, (rc_b, n_b)) in zip(order, order[1:]):
        if n_a > n_b:
            raise ConfigError(
                f"{where}: {a} has rcut {rc_a} <= {b}'s {rc_b} but more neighbour slots "
                f"({n_a} > {n_b}); rcut and nsel must increase together"
            )
    rc_i, n_i = blocks["repinit"]
    rc_f, n_f = blocks["repformer"]
    if not (rc_i > rc_f and n_i > n_f):
        raise ConfigError(
            f"{where}: repinit rcut/nsel ({rc_i}/{n_i}) must exceed the repformer ones "
            f"({rc_f}/{n_f})"
        )


@DESCRIPTORS.register("dpa2")
class DescrptDPA2(EnvBlock, Descriptor):
    ARGS = DPA2_ARGS
    mixed_types = True
    has_rot_mat = True

    def __init__(
        self, ntypes: int, *args, where: str = "model/descriptor", type_map=None, **kwargs
    ):
        super().__init__()
        cfg = DPA2Config.of(*args, **kwargs)
        ri = RepinitConfig.of(**normalize(cfg.repinit, REPINIT_ARGS, f"{where}/repinit"))
        rf = RepformerConfig.of(**normalize(cfg.repformer, REPFORMER_ARGS, f"{where}/repformer"))
        self.smooth = cfg.smooth
        self.concat_output_tebd = cfg.concat_output_tebd
        self.add_tebd_to_repinit_out = cfg.add_tebd_to_repinit_out
        self.init_env(
            ntypes,
            ri.rcut,
            ri.rcut_smth,
            ri.nsel,
            dtype=to_dtype(cfg.precision),
            typed=False,
            env_protection=cfg.env_protection,
            where=f"{where}/repinit",
            names=("rcut", "rcut_smth", "nsel"),
            stats=False,  # davg/dstd are the blocks'
        )
        self.exclude_types = check_exclude_types(
            cfg.exclude_types, ntypes, f"{where}/exclude_types"
        )
        self.tebd_dim = int(ri.tebd_dim)
        self.tebd_input_mode = ri.tebd_input_mode
        self.use_three_body = bool(ri.use_three_body)
        rf_nsel, tb_nsel = self._check_lists(ri, rf, where)
        self.type_embedding = TypeEmbedNet(
            ntypes,
            self.tebd_dim,
            cfg.use_tebd_bias,
            self.dtype,
            make_generator(cfg.seed, 2),
            cfg.trainable,
            econf_type_map=econf_types(cfg.use_econf_tebd, type_map, ntypes, where),
        )
        g1_in = self._build_repinit(cfg, ri, tb_nsel, where)
        self._build_repformers(cfg, rf, rf_nsel, g1_in, where)
        if not cfg.trainable:
            for p in self.parameters():
                p.requires_grad_(False)

    def _check_lists(self, ri: RepinitConfig, rf: RepformerConfig, where: str):
        """The repformer (and three-body) neighbour counts, each block's cutoffs checked, and
        the order of the lists cut out of the repinit one."""
        names = ("rcut", "rcut_smth", "nsel")
        (rf_nsel,) = check_env(
            f"{where}/repformer", rf.rcut, rf.rcut_smth, rf.nsel, self.ntypes, False, names
        )
        cutoffs = {"repinit": (self.rcut, self.nnei), "repformer": (float(rf.rcut), rf_nsel)}
        tb_nsel = None
        if self.use_three_body:
            (tb_nsel,) = check_env(
                f"{where}/repinit",
                ri.three_body_rcut,
                ri.three_body_rcut_smth,
                ri.three_body_sel,
                self.ntypes,
                False,
                ("three_body_rcut", "three_body_rcut_smth", "three_body_sel"),
            )
            cutoffs["three_body"] = (float(ri.three_body_rcut), tb_nsel)
        _check_cutoff_order(where, cutoffs)
        return rf_nsel, tb_nsel

    def _build_repinit(self, cfg: DPA2Config, ri: RepinitConfig, tb_nsel, where: str) -> int:
        """The repinit block and the optional three-body block, sharing the type embedding;
        returns the width of their concatenated output. exclude_types is applied to the lists
        in :meth:`sub_lists`, so the blocks get none."""
        seed = cfg.seed
        self.repinit = DPA1(
            self.ntypes,
            self.nnei,
            rcut=self.rcut,
            rcut_smth=self.rcut_smth,
            neuron=ri.neuron,
            axis_neuron=ri.axis_neuron,
            activation_function=ri.activation_function,
            resnet_dt=ri.resnet_dt,
            type_one_side=ri.type_one_side,
            precision=cfg.precision,
            seed=None if seed is None else seed + 1,
            env_protection=cfg.env_protection,
            attn_layer=0,
            smooth_type_embedding=cfg.smooth,
            set_davg_zero=ri.set_davg_zero,
            tebd_dim=self.tebd_dim,
            tebd_input_mode=self.tebd_input_mode,
            concat_output_tebd=False,
            where=f"{where}/repinit",
        )
        _share_type_embedding(self.repinit, self.type_embedding)
        g1_in = self.repinit.dim_out
        self.repinit_three_body = None
        if self.use_three_body:
            self.repinit_three_body = SeE3Tebd(
                self.ntypes,
                tb_nsel,
                rcut=float(ri.three_body_rcut),
                rcut_smth=float(ri.three_body_rcut_smth),
                neuron=ri.three_body_neuron,
                tebd_dim=self.tebd_dim,
                tebd_input_mode=self.tebd_input_mode,
                resnet_dt=ri.resnet_dt,
                set_davg_zero=ri.set_davg_zero,
                activation_function=ri.activation_function,
                env_protection=cfg.env_protection,
                smooth=cfg.smooth,
                precision=cfg.precision,
                seed=None if seed is None else seed + 5,
                concat_output_tebd=False,
                use_tebd_bias=False,
                where=f"{where}/repinit",
            )
            _share_type_embedding(self.repinit_three_body, self.type_embedding)
            g1_in += self.repinit_three_body.dim_out
        return g1_in

    def _build_repformers(
        self, cfg: DPA2Config, rf: RepformerConfig, rf_nsel: int, g1_in: int, where: str
    ) -> None:
        """g1_shape_tranform, tebd_transform and the repformer block."""
        g1_dim = int(rf.g1_dim)
        self.g1_shape_tranform = (
            Dense(
                g1_in,
                g1_dim,
                None,
                bias=False,
                dtype=self.dtype,
                generator=make_generator(cfg.seed, 3),
                init="glorot",
            )
            if g1_in != g1_dim
            else nn.Identity()
        )
        self.tebd_transform = (
            Dense(
                self.tebd_dim,
                g1_dim,
                None,
                bias=False,
                dtype=self.dtype,
                generator=make_generator(cfg.seed, 4),
            )
            if cfg.add_tebd_to_repinit_out
            else None
        )
        self.repformers = Repformers(
            self.ntypes,
            rf,
            rf_nsel,
            smooth=cfg.smooth,
            env_protection=cfg.env_protection,
            dtype=self.dtype,
            seed=cfg.seed,
            salt=(6,),
            where=f"{where}/repformer",
        )
        self.dim_emb = int(rf.g2_dim)
        self.dim_out = g1_dim + (self.tebd_dim if cfg.concat_output_tebd else 0)

    # --- config helpers -------------------------------------------------------------------------
    @classmethod
    def neighbor_selections(cls, config: dict) -> list[tuple[tuple[str, ...], float]]:
        ri, rf = config["repinit"], config["repformer"]
        return [
            (("repinit", "nsel"), float(ri["rcut"])),
            (("repinit", "three_body_sel"), float(ri["three_body_rcut"])),
            (("repformer", "nsel"), float(rf["rcut"])),
        ]

    # --- forward ------------------------------------------------------------------------------
    def _blocks(self) -> dict[str, nn.Module]:
        """The blocks with their own neighbour list and statistics, by name."""
        out = {"repinit": self.repinit}
        if self.repinit_three_body is not None:
            out["three_body"] = self.repinit_three_body
        out["repformer"] = self.repformers
        return out

    def sub_lists(self, ext_coord, ext_atype, nlist) -> dict[str, torch.Tensor]:
        """Each block's list [nf, nloc, nsel_block], cut from the distance-sorted repinit list,
        with excluded type pairs set to -1."""
        nf, nloc, nnei = nlist.shape
        if nnei != self.nnei:  # pad / truncate like the reference's format_nlist (sorted input)
            nlist = split_neighbor_list(ext_coord, nlist, self.rcut, self.nnei)
        emask = pair_exclude_mask(
            self.exclude_types, self.ntypes, ext_atype[:, :nloc], ext_atype, nlist
        )
        if emask is not None:
            nlist = torch.where(emask, nlist, -1)
        return {
            name: split_neighbor_list(ext_coord, nlist, block.rcut, block.nnei)
            for name, block in self._blocks().items()
        }

    def trimmed(self, lists: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each block's list cut to the widest row actually used (slots past it are empty in
        every row), where that leaves the result exact.

        Empty slots change nothing in a block whose normalisation uses its ``nsel`` rather than
        the list width: in repinit and the three-body block their normalised environment row
        is ``-davg / dstd``, zero when the mean is zero (the default for repinit; always for the
        angular columns the three-body block uses); repformers account for the cut slots in
        their attention softmax (:class:`PairContext`). Work then follows the real neighbour
        count (about 36 of 48 repformer slots in liquid water) instead of ``nsel``.
        """
        out = {}
        for name, nl in lists.items():
            width = nl.shape[-1]
            if self.exact_trim(name) and width > 1:
                slot = torch.arange(1, width + 1, device=nl.device)
                used = int(torch.where(nl >= 0, slot, 0).amax()) if nl.numel() else 0
                if 0 < used < width:
                    nl = nl[..., :used]
            out[name] = nl
        return out

    def exact_trim(self, name: str) -> bool:
        """Whether cutting the slots past the widest used row off block ``name``'s list
        leaves the block's output exact (see :meth:`trimmed`)."""
        block = self._blocks()[name]
        davg = block.davg if name == "repinit" else block.davg[:, 1:]
        return name == "repformer" or not bool(davg.any())

    def graph_inputs(self, ext_coord, ext_atype, nlist, step: int = 1) -> dict[str, torch.Tensor]:
        """The trimmed lists (:meth:`trimmed`), each widened with empty slots to a multiple of
        ``step`` (at most its ``nsel``; exact wherever trimming is)."""
        ext_coord = ext_coord.detach().to(self.dtype)
        out = {}
        for name, nl in self.trimmed(self.sub_lists(ext_coord, ext_atype, nlist)).items():
            width, nsel = nl.shape[-1], self._blocks()[name].nnei
            target = min(nsel, -(-width // step) * step)
            if target > width:
                nl = torch.nn.functional.pad(nl, (0, target - width), value=-1)
            out[name] = nl
        return out

    def forward_inputs(self, inputs: dict[str, torch.Tensor]) -> dict:
        return {keys.BLOCK_NLISTS: inputs}

    def forward(
        self,
        ext_coord,
        ext_atype,
        nlist,
        mapping=None,
        chunking: Chunking | None = None,
        block_nlists: dict[str, torch.Tensor] | None = None,
        ghost_exchange: GhostExchange | None = None,
    ):
        """``block_nlists``: each block's list by block name (repinit, three_body,
        repformer; from :meth:`graph_inputs` or :meth:`sub_lists`), used as given instead of
        cut from ``nlist``. ``chunking``: see :mod:`lamkit.nn.chunking`; ``ghost_exchange``:
        see :meth:`Repformers.forward`."""
        nf, nloc, _ = nlist.shape
        ext_coord = ext_coord.to(self.dtype)
        lists = block_nlists
        if lists is None:
            lists = self.trimmed(self.sub_lists(ext_coord.detach(), ext_atype, nlist))
        g1 = self.repinit(ext_coord, ext_atype, lists["repinit"], chunking=chunking)
        g1 = g1[keys.DESCRIPTOR]
        if self.repinit_three_body is not None:
            g3 = self.repinit_three_body(
                ext_coord, ext_atype, lists["three_body"], chunking=chunking
            )
            g1 = torch.cat([g1, g3[keys.DESCRIPTOR]], dim=-1)
        g1 = self.g1_shape_tranform(g1)
        tebd = self.type_embedding(ext_atype[:, :nloc])
        if self.tebd_transform is not None:
            g1 = g1 + self.tebd_transform(tebd)
        g1, g2, h2, rot_mat, sw = self.repformers(
            ext_coord, ext_atype, lists["repformer"], g1, mapping, chunking, ghost_exchange
        )
        if self.concat_output_tebd:
            g1 = torch.cat([g1, tebd], dim=-1)
        return {keys.DESCRIPTOR: g1, "rot_mat": rot_mat, "g2": g2, "h2": h2, "sw": sw}

    # --- statistics: one EnvStat per block ----------------------------------------------------
    def share_type_embedding(self, tebd: nn.Module) -> None:
        super().share_type_embedding(tebd)
        _share_type_embedding(self.repinit, tebd)
        if self.repinit_three_body is not None:
            _share_type_embedding(self.repinit_three_body, tebd)

    def stat_id(self) -> dict[str, str]:
        return {
            name: env_stat_id(
                block.rcut,
                block.rcut_smth,
                [block.nnei],
                True,
                self.exclude_types,
                self.env_protection,
            )
            for name, block in self._blocks().items()
        }

    @torch.no_grad()
    def env_stat(self, samples) -> dict[str, EnvStat]:
        """Un-normalised environment-matrix statistics of each block on its own list."""
        blocks = self._blocks()
        stats = {name: EnvStat(self.ntypes) for name in blocks}
        for s in samples:
            ext_coord = s[keys.EXT_COORD].to(self.dtype)
            ext_atype = s[keys.EXT_ATYPE]
            lists = self.sub_lists(ext_coord, ext_atype, s[keys.NLIST])
            atype = ext_atype[:, : s[keys.NLIST].shape[1]]
            for name, nl in lists.items():
                block = blocks[name]
                env, _, _, _ = environment_matrix(
                    ext_coord, nl, block.rcut, block.rcut_smth, self.env_protection
                )
                stats[name].add(env, atype)
        return stats

    @torch.no_grad()
    def set_stat(self, stat: dict[str, EnvStat], protection: float = 1e-2) -> None:
        missing = [name for name in self._blocks() if name not in stat]
        if missing:
            raise ValueError(f"dpa2 statistics lack the block(s) {missing}")
        for name, block in self._blocks().items():
            block.set_stat(stat[name], protection)

    # --- declarations (lamkit.nn.params): DeePMD-kit names; the blocks declare their own ----
    REF_NAMES = RefNames(
        names=(
            ("g1_shape_tranform.*", "g1_shape_tranform.*"),
            ("tebd_transform.*", "tebd_transform.*"),
        ),
        bare=("repinit", "repinit_three_body"),  # DPA-1 / se_e3_tebd blocks, not descriptors
    )
