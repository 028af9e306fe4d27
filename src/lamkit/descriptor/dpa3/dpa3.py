"""DPA-3 descriptor (registered as ``dpa3``): a type embedding of width ``n_dim`` as the initial
node features, then the repflow block (:class:`Repflows`).

Config (``model/descriptor`` with ``type: "dpa3"``): :class:`~.config.DPA3Config` with the
nested ``repflow`` section (:class:`~.config.RepflowConfig`), DeePMD-kit 3.2's names and
defaults.
Statistics: the normalisation std is the constant ``fix_stat_std`` (0.3) unless it is 0, the
mean is always zero (the reference's repflow block keeps ``set_davg_zero``).
"""

from __future__ import annotations

import torch

from ... import keys
from ...config.schema import normalize
from ...errors import ConfigError
from ...nn.econf import econf_types
from ...nn.mlp import make_generator, to_dtype
from ...nn.params import RefNames
from ...nn.type_embedding import TypeEmbedNet
from ..base import DESCRIPTORS, Descriptor, check_exclude_types, pair_exclude_mask
from ..env_block import EnvBlock, check_count
from .charge_spin import ChargeSpinEmbedding
from .config import (
    DPA3_ARGS,
    REPFLOW_ARGS,
    DPA3Config,
    RepflowConfig,
    check_dpa3,
    check_repflow,
)
from .repflows import Repflows


@DESCRIPTORS.register("dpa3")
class DescrptDPA3(EnvBlock, Descriptor):
    ARGS = DPA3_ARGS
    mixed_types = True
    has_rot_mat = True
    set_davg_zero = True

    def __init__(
        self, ntypes: int, *args, where: str = "model/descriptor", type_map=None, **kwargs
    ):
        super().__init__()
        cfg = DPA3Config.of(*args, **kwargs)
        check_dpa3(cfg.as_dict(), where)
        rf = RepflowConfig.of(**normalize(cfg.repflow, REPFLOW_ARGS, f"{where}/repflow"))
        check_repflow(rf.as_dict(), f"{where}/repflow")
        if rf.skip_stat:
            rf = rf.replace(fix_stat_std=0.3)
        self.init_env(
            ntypes,
            rf.e_rcut,
            rf.e_rcut_smth,
            rf.e_sel,
            dtype=to_dtype(cfg.precision),
            typed=False,
            env_protection=cfg.env_protection,
            where=f"{where}/repflow",
            names=("e_rcut", "e_rcut_smth", "e_sel"),
            stats=False,  # davg/dstd are the repflow block's
        )
        self.exclude_types = check_exclude_types(
            cfg.exclude_types, ntypes, f"{where}/exclude_types"
        )
        self.concat_output_tebd = cfg.concat_output_tebd
        a_sel = check_count(f"{where}/repflow/a_sel", rf.a_sel)
        if a_sel > self.nnei:
            raise ConfigError(f"{where}/repflow/a_sel: {a_sel} exceeds e_sel {self.nnei}")
        self.tebd_dim = int(rf.n_dim)
        self.type_embedding = TypeEmbedNet(
            ntypes,
            self.tebd_dim,
            cfg.use_tebd_bias,
            self.dtype,
            make_generator(cfg.seed, 2),
            cfg.trainable,
            econf_type_map=econf_types(cfg.use_econf_tebd, type_map, ntypes, where),
        )
        self.charge_spin = self._charge_spin(cfg, where)
        self.repflows = Repflows(
            ntypes,
            rf,
            self.nnei,
            a_sel,
            activation_function=cfg.activation_function,
            env_protection=cfg.env_protection,
            dtype=self.dtype,
            seed=cfg.seed,
            salt=(1,),
            where=f"{where}/repflow",
        )
        self.dim_emb = int(rf.e_dim)
        self.dim_out = self.tebd_dim * (2 if cfg.concat_output_tebd else 1)
        if not cfg.trainable:
            for p in self.parameters():
                p.requires_grad_(False)

    def _charge_spin(self, cfg: DPA3Config, where: str) -> ChargeSpinEmbedding | None:
        """The frame charge/spin embedding added to the type embedding (``add_chg_spin_ebd``)."""
        if not cfg.add_chg_spin_ebd:
            if cfg.default_chg_spin is not None:
                raise ConfigError(f"{where}/default_chg_spin: needs add_chg_spin_ebd: true")
            return None
        gens = [make_generator(cfg.seed, k) for k in (3, 4, 5)]
        return ChargeSpinEmbedding(
            self.tebd_dim, cfg.activation_function, cfg.default_chg_spin, self.dtype, gens, where
        )

    @classmethod
    def normalize_config(cls, config: dict, path: str = "model/descriptor") -> dict:
        conf = super().normalize_config(config, path)
        check_dpa3(conf, path)
        return conf

    @classmethod
    def neighbor_selections(cls, config: dict) -> list[tuple[tuple[str, ...], float]]:
        rf = config["repflow"]
        return [
            (("repflow", "e_sel"), float(rf["e_rcut"])),
            (("repflow", "a_sel"), float(rf["a_rcut"])),
        ]

    def _list(self, ext_coord, ext_atype, nlist) -> torch.Tensor:
        """The edge list: ``nsel`` slots, excluded type pairs set to -1."""
        nf, nloc, nnei = nlist.shape
        if nnei != self.nnei:  # pad/truncate a distance-sorted list like format_nlist
            from ..dpa2 import split_neighbor_list

            nlist = split_neighbor_list(ext_coord, nlist, self.rcut, self.nnei)
        emask = pair_exclude_mask(
            self.exclude_types, self.ntypes, ext_atype[:, :nloc], ext_atype, nlist
        )
        return nlist if emask is None else torch.where(emask, nlist, -1)

    def forward(self, ext_coord, ext_atype, nlist, mapping=None, chunking=None, charge_spin=None):
        """``charge_spin`` [nf, 2]: each frame's charge and spin (``add_chg_spin_ebd``)."""
        nf, nloc = nlist.shape[:2]
        ext_coord = ext_coord.to(self.dtype)
        nlist = self._list(ext_coord.detach(), ext_atype, nlist)
        tebd = self.type_embedding(ext_atype[:, :nloc])
        if self.charge_spin is not None:
            tebd = tebd + self.charge_spin(charge_spin, nf)
        node, edge, h2, rot_mat, sw = self.repflows(
            ext_coord, ext_atype, nlist, tebd, mapping, chunking
        )
        if self.concat_output_tebd:
            node = torch.cat([node, tebd], dim=-1)
        return {keys.DESCRIPTOR: node, "rot_mat": rot_mat, "g2": edge, "h2": h2, "sw": sw}

    # --- statistics ----------------------------------------------------------------------------
    @property
    def davg(self) -> torch.Tensor:
        return self.repflows.davg

    @property
    def dstd(self) -> torch.Tensor:
        return self.repflows.dstd

    @torch.no_grad()
    def env_stat(self, samples):
        samples = (
            {
                **s,
                keys.NLIST: self._list(
                    s[keys.EXT_COORD].to(self.dtype), s[keys.EXT_ATYPE], s[keys.NLIST]
                ),
            }
            for s in samples
        )
        return super().env_stat(samples)

    @torch.no_grad()
    def set_stat(self, stat, protection: float = 1e-2) -> None:
        """Zero mean always; the std from the data only when ``fix_stat_std`` is 0."""
        if self.repflows.fix_stat_std != 0.0:
            return
        _, dstd = stat.davg_dstd(protection, True)
        self.repflows.dstd.copy_(torch.as_tensor(dstd, dtype=self.dtype))

    # --- declarations (lamkit.nn.params): the type embedding and repflows declare theirs ---
    REF_NAMES = RefNames(  # the charge/spin embedding's nets sit at the descriptor's level
        names=(("charge_spin.mix_cs_mlp.*", "mix_cs_mlp.*"),),
        children=(
            ("charge_spin.chg_embedding", "chg_embedding"),
            ("charge_spin.spin_embedding", "spin_embedding"),
        ),
    )

    @property
    def frame_inputs(self) -> tuple[str, ...]:
        """Per-frame inputs besides the geometry (``charge_spin``, [nf, 2])."""
        return () if self.charge_spin is None else ("charge_spin",)
