"""DPA-3 descriptor (registered as ``dpa3``): a type embedding of width ``n_dim`` as the initial
node features, then the repflow block (:class:`Repflows`).

Config (``model/descriptor`` with ``type: "dpa3"``): the keys of :data:`DPA3_ARGS` with the
nested ``repflow`` section (:data:`REPFLOW_ARGS`), DeePMD-kit 3.2's names and defaults.
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
from .charge_spin import ChargeSpinEmbedding
from .config import DPA3_ARGS, REPFLOW_ARGS, check_dpa3, check_repflow
from .repflows import Repflows

# repflow keys that Repflows takes itself rather than passing to every layer
_BLOCK_KEYS = (
    "n_dim",
    "e_dim",
    "a_dim",
    "nlayers",
    "e_rcut",
    "e_rcut_smth",
    "e_sel",
    "a_rcut",
    "a_rcut_smth",
    "a_sel",
    "edge_init_use_dist",
    "use_exp_switch",
    "use_dynamic_sel",
    "sel_reduce_factor",
    "fix_stat_std",
)
# keys that change nothing in the numbers here
_UNUSED_KEYS = ("optim_update", "skip_stat", "sequential_update")


def _count(where: str, value) -> int:
    if isinstance(value, str):
        raise ConfigError(
            f"{where}: '{value}' must be resolved from the training data before the model is "
            "built (lam train does this)"
        )
    return int(value)


@DESCRIPTORS.register("dpa3")
class DescrptDPA3(Descriptor):
    ARGS = DPA3_ARGS
    mixed_types = True
    has_rot_mat = True
    set_davg_zero = True

    def __init__(
        self,
        ntypes: int,
        repflow: dict,
        concat_output_tebd: bool = False,
        activation_function: str = "silu",
        precision: str = "float64",
        exclude_types=(),
        env_protection: float = 0.0,
        trainable: bool = True,
        seed: int | None = None,
        use_econf_tebd: bool = False,
        use_tebd_bias: bool = False,
        use_loc_mapping: bool = True,
        add_chg_spin_ebd: bool = False,
        default_chg_spin=None,
        type_map=None,
    ):
        super().__init__()
        where = "model/descriptor"
        rf = normalize(repflow, REPFLOW_ARGS, f"{where}/repflow")
        check_repflow(rf, f"{where}/repflow")
        if rf["skip_stat"]:
            rf["fix_stat_std"] = 0.3
        self.ntypes = ntypes
        self.dtype = to_dtype(precision)
        self.concat_output_tebd = concat_output_tebd
        self.exclude_types = check_exclude_types(exclude_types, ntypes, f"{where}/exclude_types")
        self.env_protection = float(env_protection)
        self.rcut, self.rcut_smth = float(rf["e_rcut"]), float(rf["e_rcut_smth"])
        self.nnei = _count(f"{where}/repflow/e_sel", rf["e_sel"])
        a_sel = _count(f"{where}/repflow/a_sel", rf["a_sel"])
        if a_sel > self.nnei:
            raise ConfigError(f"{where}/repflow/a_sel: {a_sel} exceeds e_sel {self.nnei}")
        self.sel = [self.nnei]
        self.tebd_dim = int(rf["n_dim"])
        self.type_embedding = TypeEmbedNet(
            ntypes,
            self.tebd_dim,
            use_tebd_bias,
            self.dtype,
            make_generator(seed, 2),
            trainable,
            econf_type_map=econf_types(use_econf_tebd, type_map, ntypes, where),
        )
        self.charge_spin = None
        if add_chg_spin_ebd:
            gens = [make_generator(seed, k) for k in (3, 4, 5)]
            self.charge_spin = ChargeSpinEmbedding(
                self.tebd_dim, activation_function, default_chg_spin, self.dtype, gens, where
            )
        elif default_chg_spin is not None:
            raise ConfigError(f"{where}/default_chg_spin: needs add_chg_spin_ebd: true")
        block = {k: rf[k] for k in _BLOCK_KEYS}
        block.update(e_sel=self.nnei, a_sel=a_sel)
        layer_kw = {k: v for k, v in rf.items() if k not in _BLOCK_KEYS + _UNUSED_KEYS}
        self.repflows = Repflows(
            ntypes,
            activation_function=activation_function,
            env_protection=env_protection,
            dtype=self.dtype,
            seed=seed,
            salt=(1,),
            **block,
            **layer_kw,
        )
        self.dim_emb = int(rf["e_dim"])
        self.dim_out = self.tebd_dim * (2 if concat_output_tebd else 1)
        if not trainable:
            for p in self.parameters():
                p.requires_grad_(False)

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
