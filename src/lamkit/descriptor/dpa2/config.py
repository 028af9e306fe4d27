"""DPA-2 config: the keys of DeePMD-kit 3.2's ``dpa2`` descriptor and its ``repinit`` and
``repformer`` sections, defaults included (the single source of them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..block_config import REQUIRED, BlockConfig, arg

_NSEL_DOC = "neighbour slots (one number, all types), or 'auto' / 'auto:factor'"


@dataclass(frozen=True)
class RepinitConfig(BlockConfig):
    """The ``repinit`` section: a se_atten block without attention (and the optional
    three-body block)."""

    rcut: float = arg(REQUIRED, (float,), doc="cutoff radius (Å) of repinit, also the model's")
    rcut_smth: float = arg(REQUIRED, (float,), doc="where the switching function starts (Å)")
    nsel: Any = arg(REQUIRED, (int, str), doc=_NSEL_DOC)
    neuron: list = arg([25, 50, 100], (list,))
    axis_neuron: int = arg(16, (int,))
    tebd_dim: int = arg(8, (int,))
    tebd_input_mode: str = arg("concat", (str,), choices=("concat", "strip"))
    set_davg_zero: bool = arg(True, (bool,))
    activation_function: str = arg("tanh", (str,))
    type_one_side: bool = arg(False, (bool,))
    resnet_dt: bool = arg(False, (bool,))
    use_three_body: bool = arg(False, (bool,))
    three_body_neuron: list = arg([2, 4, 8], (list,))
    three_body_rcut: float = arg(4.0, (float,))
    three_body_rcut_smth: float = arg(0.5, (float,))
    three_body_sel: Any = arg(40, (int, str), doc=_NSEL_DOC)


@dataclass(frozen=True)
class RepformerConfig(BlockConfig):
    """The ``repformer`` section: the repformer block and its layers."""

    rcut: float = arg(REQUIRED, (float,), doc="cutoff radius (Å) of the repformer layers")
    rcut_smth: float = arg(REQUIRED, (float,), doc="where the switching function starts (Å)")
    nsel: Any = arg(REQUIRED, (int, str), doc=_NSEL_DOC)
    nlayers: int = arg(3, (int,))
    g1_dim: int = arg(128, (int,))
    g2_dim: int = arg(16, (int,))
    axis_neuron: int = arg(4, (int,))
    direct_dist: bool = arg(False, (bool,))
    update_g1_has_conv: bool = arg(True, (bool,))
    update_g1_has_drrd: bool = arg(True, (bool,))
    update_g1_has_grrg: bool = arg(True, (bool,))
    update_g1_has_attn: bool = arg(True, (bool,))
    update_g2_has_g1g1: bool = arg(True, (bool,))
    update_g2_has_attn: bool = arg(True, (bool,))
    use_sqrt_nnei: bool = arg(True, (bool,))
    g1_out_conv: bool = arg(True, (bool,))
    g1_out_mlp: bool = arg(True, (bool,))
    update_h2: bool = arg(False, (bool,))
    attn1_hidden: int = arg(64, (int,))
    attn1_nhead: int = arg(4, (int,))
    attn2_hidden: int = arg(16, (int,))
    attn2_nhead: int = arg(4, (int,))
    attn2_has_gate: bool = arg(False, (bool,))
    activation_function: str = arg("tanh", (str,))
    update_style: str = arg("res_avg", (str,), choices=("res_avg", "res_incr", "res_residual"))
    update_residual: float = arg(0.001, (float,))
    update_residual_init: str = arg("norm", (str,), choices=("norm", "const"))
    set_davg_zero: bool = arg(True, (bool,))
    trainable_ln: bool = arg(True, (bool,))
    ln_eps: float | None = arg(None, (float, type(None)), doc="layer-norm epsilon; null means 1e-5")


@dataclass(frozen=True)
class DPA2Config(BlockConfig):
    """The ``dpa2`` descriptor's top-level keys."""

    repinit: Any = arg(REQUIRED, (dict,), sub=RepinitConfig)
    repformer: Any = arg(REQUIRED, (dict,), sub=RepformerConfig)
    concat_output_tebd: bool = arg(True, (bool,))
    precision: str = arg("default", (str,))
    smooth: bool = arg(True, (bool,))
    exclude_types: list = arg([], (list,))
    env_protection: float = arg(0.0, (float,))
    trainable: bool = arg(True, (bool,))
    seed: int | None = arg(None, (int, type(None)))
    add_tebd_to_repinit_out: bool = arg(False, (bool,), aliases=("repformer_add_type_ebd_to_seq",))
    use_econf_tebd: bool = arg(False, (bool,))
    use_tebd_bias: bool = arg(False, (bool,))


REPINIT_ARGS = RepinitConfig.args()
REPFORMER_ARGS = RepformerConfig.args()
DPA2_ARGS = DPA2Config.args()
