"""DPA-3 config: the keys of DeePMD-kit 3.2's ``dpa3`` descriptor and its ``repflow`` section,
defaults included (the single source of them), and the options lamkit refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ..block_config import REQUIRED, BlockConfig, arg

_SEL_DOC = "neighbour slots (one number, all types), or 'auto' / 'auto:factor'"


@dataclass(frozen=True)
class RepflowConfig(BlockConfig):
    """The ``repflow`` section: the repflow block and its layers."""

    n_dim: int = arg(128, (int,), doc="node (atom) feature width")
    e_dim: int = arg(64, (int,), doc="edge feature width")
    a_dim: int = arg(64, (int,), doc="angle feature width")
    nlayers: int = arg(6, (int,), doc="number of repflow layers")
    e_rcut: float = arg(REQUIRED, (float,), doc="edge cutoff (Å), also the model's")
    e_rcut_smth: float = arg(REQUIRED, (float,), doc="where the edge switching function starts (Å)")
    e_sel: Any = arg(REQUIRED, (int, str), doc=_SEL_DOC)
    a_rcut: float = arg(REQUIRED, (float,), doc="angle cutoff (Å), at most e_rcut")
    a_rcut_smth: float = arg(
        REQUIRED, (float,), doc="where the angle switching function starts (Å)"
    )
    a_sel: Any = arg(REQUIRED, (int, str), doc=_SEL_DOC)
    a_compress_rate: int = arg(0, (int,), doc="0: no compression of the angle inputs")
    a_compress_e_rate: int = arg(1, (int,))
    a_compress_use_split: bool = arg(False, (bool,))
    n_multi_edge_message: int = arg(1, (int,))
    axis_neuron: int = arg(4, (int,))
    fix_stat_std: float = arg(0.3, (float,), doc="non-zero: constant normalisation std")
    skip_stat: bool = arg(False, (bool,), doc="deprecated: forces fix_stat_std 0.3")
    update_angle: bool = arg(True, (bool,))
    update_style: str = arg("res_residual", (str,), choices=("res_avg", "res_incr", "res_residual"))
    update_residual: float = arg(0.1, (float,))
    update_residual_init: str = arg("const", (str,), choices=("norm", "const"))
    optim_update: bool = arg(True, (bool,), doc="the same numbers, computed by split matrices")
    smooth_edge_update: bool = arg(False, (bool,))
    edge_init_use_dist: bool = arg(False, (bool,), aliases=("edge_use_dist",))
    use_exp_switch: bool = arg(False, (bool,), aliases=("use_env_envelope",))
    use_dynamic_sel: bool = arg(False, (bool,))
    sel_reduce_factor: float = arg(10.0, (float,))
    sequential_update: bool = arg(False, (bool,))


@dataclass(frozen=True)
class DPA3Config(BlockConfig):
    """The ``dpa3`` descriptor's top-level keys."""

    repflow: Any = arg(REQUIRED, (dict,), sub=RepflowConfig)
    concat_output_tebd: bool = arg(False, (bool,))
    activation_function: str = arg("silu", (str,))
    precision: str = arg("default", (str,))
    exclude_types: list = arg([], (list,))
    env_protection: float = arg(0.0, (float,))
    trainable: bool = arg(True, (bool,))
    seed: int | None = arg(None, (int, type(None)))
    use_econf_tebd: bool = arg(False, (bool,))
    use_tebd_bias: bool = arg(False, (bool,))
    use_loc_mapping: bool = arg(True, (bool,), doc="numbers are the same either way")
    add_chg_spin_ebd: bool = arg(False, (bool,))
    default_chg_spin: list | None = arg(None, (list, type(None)))


REPFLOW_ARGS = RepflowConfig.args()
DPA3_ARGS = DPA3Config.args()


def check_repflow(rf: dict, where: str) -> None:
    """Refuse what lamkit does not implement, and the combinations the reference rejects."""
    if rf["sequential_update"]:
        raise ConfigError(f"{where}/sequential_update: not supported; set it to false")
    if rf["a_compress_rate"] < 0:
        raise ConfigError(f"{where}/a_compress_rate: must be >= 0, got {rf['a_compress_rate']}")
    if rf["a_compress_rate"]:
        need = 2 * rf["a_compress_rate"]
        if (rf["a_dim"] * rf["a_compress_e_rate"]) % need:
            raise ConfigError(
                f"{where}/a_compress_rate: a_dim * a_compress_e_rate "
                f"({rf['a_dim']} * {rf['a_compress_e_rate']}) must be divisible by {need}"
            )
    if rf["n_multi_edge_message"] < 1:
        raise ConfigError(f"{where}/n_multi_edge_message: must be >= 1")
    if rf["use_dynamic_sel"] and not rf["smooth_edge_update"]:
        raise ConfigError(
            f"{where}/use_dynamic_sel: needs smooth_edge_update true (as in the reference)"
        )
    if rf["sel_reduce_factor"] <= 0:
        raise ConfigError(f"{where}/sel_reduce_factor: must be > 0")
    for rc in ("e_rcut", "a_rcut"):
        if rf[rc] <= 0:
            raise ConfigError(f"{where}/{rc}: must be > 0, got {rf[rc]}")
        if rf[f"{rc}_smth"] >= rf[rc]:
            raise ConfigError(
                f"{where}/{rc}_smth: must be below {rc} ({rf[rc]}), got {rf[f'{rc}_smth']}"
            )
    if rf["a_rcut"] > rf["e_rcut"]:
        raise ConfigError(
            f"{where}/a_rcut: {rf['a_rcut']} exceeds e_rcut {rf['e_rcut']} (angles use a "
            "subset of the edges)"
        )


def check_dpa3(conf: dict, where: str) -> None:
    """Refuse the top-level DPA-3 options lamkit does not implement."""
