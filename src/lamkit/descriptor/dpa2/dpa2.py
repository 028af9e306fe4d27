"""DPA-2 descriptor (spec §4.4): repinit (a se_atten block without attention, reusing
:class:`lamkit.descriptor.dpa1.DPA1`), an optional three-body block (reusing
:class:`lamkit.descriptor.se_e3_tebd.SeE3Tebd`), a bias-free glorot ``g1_shape_tranform`` and the
repformer layers. All blocks share one type embedding.

``forward`` takes the repinit list (``rcut``/``sel`` of repinit, sorted by distance) and cuts the
three-body and repformer lists out of it (spec §2.2).
"""

from __future__ import annotations

import torch
from torch import nn

from ... import keys
from ...errors import ConfigError
from ...geometry.env import gather_neighbors
from ...nn.mlp import Dense, make_generator, to_dtype
from ...nn.type_embedding import TypeEmbedNet
from ..base import Descriptor
from ..dpa1 import DPA1
from ..env_stat import EnvStat
from ..se_e3_tebd import SeE3Tebd
from .repformers import Repformers

REPINIT_DEFAULTS = dict(
    neuron=[25, 50, 100],
    axis_neuron=16,
    tebd_dim=8,
    tebd_input_mode="concat",
    set_davg_zero=True,
    activation_function="tanh",
    type_one_side=False,
    resnet_dt=False,
    use_three_body=False,
    three_body_neuron=[2, 4, 8],
    three_body_sel=40,
    three_body_rcut=4.0,
    three_body_rcut_smth=0.5,
)
REPFORMER_DEFAULTS = dict(
    nlayers=3,
    g1_dim=128,
    g2_dim=16,
    axis_neuron=4,
    direct_dist=False,
    update_g1_has_conv=True,
    update_g1_has_drrd=True,
    update_g1_has_grrg=True,
    update_g1_has_attn=True,
    update_g2_has_g1g1=True,
    update_g2_has_attn=True,
    update_h2=False,
    attn1_hidden=64,
    attn1_nhead=4,
    attn2_hidden=16,
    attn2_nhead=4,
    attn2_has_gate=False,
    activation_function="tanh",
    update_style="res_avg",
    update_residual=0.001,
    update_residual_init="norm",
    set_davg_zero=True,
    trainable_ln=True,
    ln_eps=1e-5,
    use_sqrt_nnei=True,
    g1_out_conv=True,
    g1_out_mlp=True,
)


def split_neighbor_list(ext_coord, nlist, rcut: float, nsel: int) -> torch.Tensor:
    """First ``nsel`` columns of a distance-sorted list (padded with -1); ``r > rcut`` -> -1."""
    nf, nloc, nnei = nlist.shape
    if nsel > nnei:
        nlist = torch.cat([nlist, nlist.new_full((nf, nloc, nsel - nnei), -1)], dim=-1)
    nl = nlist[..., :nsel]
    diff = gather_neighbors(ext_coord, nl) - ext_coord[:, :nloc, None, :]
    r2 = (diff * diff).sum(-1)
    return torch.where((nl >= 0) & (r2 <= rcut * rcut), nl, -1)


def _share_type_embedding(block: nn.Module, tebd: nn.Module) -> None:
    """Make ``block`` use ``tebd`` without registering it a second time."""
    del block.type_embedding
    object.__setattr__(block, "type_embedding", tebd)


class DescrptDPA2(Descriptor):
    mixed_types = True

    def __init__(
        self,
        ntypes: int,
        repinit: dict,
        repformer: dict,
        concat_output_tebd: bool = True,
        precision: str = "float64",
        smooth: bool = True,
        exclude_types=(),
        env_protection: float = 0.0,
        trainable: bool = True,
        seed: int | None = None,
        add_tebd_to_repinit_out: bool = False,
        use_econf_tebd: bool = False,
        use_tebd_bias: bool = False,
        type_map=None,
    ):
        super().__init__()
        where = "model/descriptor"
        if exclude_types:
            raise ConfigError(f"{where}/exclude_types: not supported for dpa2 yet")
        if use_econf_tebd:
            raise ConfigError(f"{where}/use_econf_tebd: not supported")
        ri = {**REPINIT_DEFAULTS, **repinit}
        rf = {**REPFORMER_DEFAULTS, **repformer}
        if rf["ln_eps"] is None:  # the reference's config may carry null (= 1e-5)
            rf["ln_eps"] = 1e-5
        if ri["tebd_input_mode"] != "concat":
            raise ConfigError(f"{where}/repinit/tebd_input_mode: only 'concat' is supported yet")
        self.ntypes = ntypes
        self.dtype = to_dtype(precision)
        self.smooth = smooth
        self.concat_output_tebd = concat_output_tebd
        self.add_tebd_to_repinit_out = add_tebd_to_repinit_out
        self.tebd_dim = int(ri["tebd_dim"])
        self.rcut, self.rcut_smth = float(ri["rcut"]), float(ri["rcut_smth"])
        self.nnei = int(ri["nsel"])
        self.sel = [self.nnei]
        self.use_three_body = bool(ri["use_three_body"])
        if not (self.rcut > float(rf["rcut"]) and self.nnei > int(rf["nsel"])):
            raise ConfigError(f"{where}: repinit rcut/nsel must exceed the repformer ones")

        def gen(*salt):
            return make_generator(seed, *salt)

        self.type_embedding = TypeEmbedNet(
            ntypes, self.tebd_dim, use_tebd_bias, self.dtype, gen(2), trainable
        )
        self.repinit = DPA1(
            ntypes,
            self.nnei,
            rcut=self.rcut,
            rcut_smth=self.rcut_smth,
            neuron=ri["neuron"],
            axis_neuron=ri["axis_neuron"],
            activation_function=ri["activation_function"],
            resnet_dt=ri["resnet_dt"],
            type_one_side=ri["type_one_side"],
            precision=precision,
            seed=None if seed is None else seed + 1,
            env_protection=env_protection,
            attn_layer=0,
            smooth_type_embedding=smooth,
            set_davg_zero=ri["set_davg_zero"],
            tebd_dim=self.tebd_dim,
            tebd_input_mode=ri["tebd_input_mode"],
            concat_output_tebd=False,
        )
        _share_type_embedding(self.repinit, self.type_embedding)
        g1_in = self.repinit.dim_out
        self.repinit_three_body = None
        if self.use_three_body:
            self.repinit_three_body = SeE3Tebd(
                ntypes,
                int(ri["three_body_sel"]),
                rcut=float(ri["three_body_rcut"]),
                rcut_smth=float(ri["three_body_rcut_smth"]),
                neuron=ri["three_body_neuron"],
                tebd_dim=self.tebd_dim,
                tebd_input_mode=ri["tebd_input_mode"],
                resnet_dt=ri["resnet_dt"],
                set_davg_zero=ri["set_davg_zero"],
                activation_function=ri["activation_function"],
                env_protection=env_protection,
                smooth=smooth,
                precision=precision,
                seed=None if seed is None else seed + 5,
                concat_output_tebd=False,
                use_tebd_bias=False,
            )
            _share_type_embedding(self.repinit_three_body, self.type_embedding)
            g1_in += self.repinit_three_body.dim_out
        g1_dim = int(rf["g1_dim"])
        self.g1_shape_tranform = (
            Dense(
                g1_in, g1_dim, None, bias=False, dtype=self.dtype, generator=gen(3), init="glorot"
            )
            if g1_in != g1_dim
            else nn.Identity()
        )
        self.tebd_transform = (
            Dense(self.tebd_dim, g1_dim, None, bias=False, dtype=self.dtype, generator=gen(4))
            if add_tebd_to_repinit_out
            else None
        )
        layer_kw = {
            k: rf[k]
            for k in REPFORMER_DEFAULTS
            if k
            not in (
                "nlayers",
                "g1_dim",
                "g2_dim",
                "axis_neuron",
                "direct_dist",
                "activation_function",
                "use_sqrt_nnei",
                "set_davg_zero",
            )
        }
        self.repformer_set_davg_zero = bool(rf["set_davg_zero"])
        self.repformers = Repformers(
            ntypes,
            float(rf["rcut"]),
            float(rf["rcut_smth"]),
            int(rf["nsel"]),
            nlayers=int(rf["nlayers"]),
            g1_dim=g1_dim,
            g2_dim=int(rf["g2_dim"]),
            axis_neuron=int(rf["axis_neuron"]),
            direct_dist=bool(rf["direct_dist"]),
            activation_function=rf["activation_function"],
            smooth=smooth,
            use_sqrt_nnei=bool(rf["use_sqrt_nnei"]),
            env_protection=env_protection,
            dtype=self.dtype,
            seed=seed,
            salt=(6,),
            **layer_kw,
        )
        self.dim_emb = int(rf["g2_dim"])
        self.dim_out = g1_dim + (self.tebd_dim if concat_output_tebd else 0)
        if not trainable:
            for p in self.parameters():
                p.requires_grad_(False)

    def sub_lists(self, ext_coord, nlist) -> dict[str, torch.Tensor]:
        nf, nloc, nnei = nlist.shape
        if nnei != self.nnei:  # pad / truncate like the reference's format_nlist (sorted input)
            nlist = split_neighbor_list(ext_coord, nlist, self.rcut, self.nnei)
        out = {"repinit": split_neighbor_list(ext_coord, nlist, self.rcut, self.nnei)}
        rf = self.repformers
        out["repformer"] = split_neighbor_list(ext_coord, nlist, rf.rcut, rf.nnei)
        if self.repinit_three_body is not None:
            tb = self.repinit_three_body
            out["three_body"] = split_neighbor_list(ext_coord, nlist, tb.rcut, tb.nnei)
        return out

    def forward(self, ext_coord, ext_atype, nlist, mapping=None):
        nf, nloc, _ = nlist.shape
        ext_coord = ext_coord.to(self.dtype)
        lists = self.sub_lists(ext_coord.detach(), nlist)
        g1 = self.repinit(ext_coord, ext_atype, lists["repinit"])[keys.DESCRIPTOR]
        if self.repinit_three_body is not None:
            g3 = self.repinit_three_body(ext_coord, ext_atype, lists["three_body"])
            g1 = torch.cat([g1, g3[keys.DESCRIPTOR]], dim=-1)
        g1 = self.g1_shape_tranform(g1)
        tebd = self.type_embedding(ext_atype[:, :nloc])
        if self.tebd_transform is not None:
            g1 = g1 + self.tebd_transform(tebd)
        g1, g2, h2, rot_mat, sw = self.repformers(
            ext_coord, ext_atype, lists["repformer"], g1, mapping
        )
        if self.concat_output_tebd:
            g1 = torch.cat([g1, tebd], dim=-1)
        return {keys.DESCRIPTOR: g1, "rot_mat": rot_mat, "g2": g2, "h2": h2, "sw": sw}

    # --- statistics: one EnvStat per block ----------------------------------------------------
    def _blocks(self):
        out = [("repinit", self.repinit)]
        if self.repinit_three_body is not None:
            out.append(("three_body", self.repinit_three_body))
        return out

    @torch.no_grad()
    def env_stat(self, samples) -> dict[str, EnvStat]:
        samples = list(samples)
        stats = {name: EnvStat(self.ntypes) for name in ("repinit", "three_body", "repformer")}
        for s in samples:
            ext_coord = s[keys.EXT_COORD].to(self.dtype)
            ext_atype = s[keys.EXT_ATYPE]
            lists = self.sub_lists(ext_coord, s[keys.NLIST])
            for name, nl in lists.items():
                block = self.repformers if name == "repformer" else dict(self._blocks())[name]
                from ...geometry.env import environment_matrix

                env, _, _, _ = environment_matrix(
                    ext_coord, nl, block.rcut, block.rcut_smth, self.repformers.env_protection
                )
                stats[name].add(env, ext_atype[:, : nl.shape[1]])
        return stats

    @torch.no_grad()
    def set_stat(self, stat: dict, protection: float = 1e-2) -> None:
        for name, block in self._blocks():
            block.set_stat(stat[name], protection)
        davg, dstd = stat["repformer"].davg_dstd(protection, self.repformer_set_davg_zero)
        self.repformers.davg.copy_(torch.as_tensor(davg, dtype=self.dtype))
        self.repformers.dstd.copy_(torch.as_tensor(dstd, dtype=self.dtype))
