"""DPA-3 config: the keys of DeePMD-kit 3.2's ``dpa3`` descriptor and its ``repflow`` section,
defaults included (the single source of them), and the options lamkit refuses."""

from __future__ import annotations

from ...config.schema import REQUIRED, Arg
from ...errors import ConfigError

_SEL_DOC = "neighbour slots (one number, all types), or 'auto' / 'auto:factor'"

REPFLOW_ARGS = (
    Arg("n_dim", (int,), 128, doc="node (atom) feature width"),
    Arg("e_dim", (int,), 64, doc="edge feature width"),
    Arg("a_dim", (int,), 64, doc="angle feature width"),
    Arg("nlayers", (int,), 6, doc="number of repflow layers"),
    Arg("e_rcut", (float,), REQUIRED, doc="edge cutoff (Å), also the model's"),
    Arg("e_rcut_smth", (float,), REQUIRED, doc="where the edge switching function starts (Å)"),
    Arg("e_sel", (int, str), REQUIRED, doc=_SEL_DOC),
    Arg("a_rcut", (float,), REQUIRED, doc="angle cutoff (Å), at most e_rcut"),
    Arg("a_rcut_smth", (float,), REQUIRED, doc="where the angle switching function starts (Å)"),
    Arg("a_sel", (int, str), REQUIRED, doc=_SEL_DOC),
    Arg("a_compress_rate", (int,), 0, doc="0: no compression of the angle inputs"),
    Arg("a_compress_e_rate", (int,), 1),
    Arg("a_compress_use_split", (bool,), False),
    Arg("n_multi_edge_message", (int,), 1),
    Arg("axis_neuron", (int,), 4),
    Arg("fix_stat_std", (float,), 0.3, doc="non-zero: constant normalisation std"),
    Arg("skip_stat", (bool,), False, doc="deprecated: forces fix_stat_std 0.3"),
    Arg("update_angle", (bool,), True),
    Arg("update_style", (str,), "res_residual", choices=("res_avg", "res_incr", "res_residual")),
    Arg("update_residual", (float,), 0.1),
    Arg("update_residual_init", (str,), "const", choices=("norm", "const")),
    Arg("optim_update", (bool,), True, doc="the same numbers, computed by split matrices"),
    Arg("smooth_edge_update", (bool,), False),
    Arg("edge_init_use_dist", (bool,), False, aliases=("edge_use_dist",)),
    Arg("use_exp_switch", (bool,), False, aliases=("use_env_envelope",)),
    Arg("use_dynamic_sel", (bool,), False),
    Arg("sel_reduce_factor", (float,), 10.0),
    Arg("sequential_update", (bool,), False),
)
DPA3_ARGS = (
    Arg("repflow", (dict,), REQUIRED, sub=REPFLOW_ARGS),
    Arg("concat_output_tebd", (bool,), False),
    Arg("activation_function", (str,), "silu"),
    Arg("precision", (str,), "default"),
    Arg("exclude_types", (list,), []),
    Arg("env_protection", (float,), 0.0),
    Arg("trainable", (bool,), True),
    Arg("seed", (int, type(None)), None),
    Arg("use_econf_tebd", (bool,), False),
    Arg("use_tebd_bias", (bool,), False),
    Arg("use_loc_mapping", (bool,), True, doc="numbers are the same either way"),
    Arg("add_chg_spin_ebd", (bool,), False),
    Arg("default_chg_spin", (list, type(None)), None),
)


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
    if rf["e_rcut_smth"] >= rf["e_rcut"] or rf["a_rcut_smth"] >= rf["a_rcut"]:
        raise ConfigError(f"{where}: e_rcut_smth/a_rcut_smth must be below e_rcut/a_rcut")
    if rf["a_rcut"] > rf["e_rcut"]:
        raise ConfigError(
            f"{where}/a_rcut: {rf['a_rcut']} exceeds e_rcut {rf['e_rcut']} (angles use a "
            "subset of the edges)"
        )


def check_dpa3(conf: dict, where: str) -> None:
    """Refuse the top-level DPA-3 options lamkit does not implement."""
