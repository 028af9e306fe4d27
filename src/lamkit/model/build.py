"""Model config (the ``model`` section of input.json) and model construction."""

from __future__ import annotations

import copy

from ..config.schema import REQUIRED, Arg, normalize
from ..descriptor import DESCRIPTORS, build_descriptor
from ..errors import ConfigError
from ..fitting import FITTINGS, build_fitting
from .atomic_model import AtomicModel
from .energy_model import EnergyModel
from .linear_model import LinearEnergyModel, LinearMember
from .spin import SpinEnergyModel, backbone_config, normalize_spin
from .zbl_model import ZBLEnergyModel

MODEL_ARGS = (
    Arg("type_map", (list,), REQUIRED, doc='element names, e.g. ["O", "H"]'),
    Arg("descriptor", (dict, str), REQUIRED),
    Arg("fitting_net", (dict,), REQUIRED),
    Arg("type", (str,), "standard"),
    Arg("data_stat_nbatch", (int,), 10),
    Arg("data_stat_protect", (float,), 1e-2),
    Arg("data_bias_nsample", (int,), 10),
    Arg("pair_exclude_types", (list,), []),
    Arg("atom_exclude_types", (list,), []),
    Arg("preset_out_bias", (dict, type(None)), None),
    Arg("finetune_head", (str, type(None)), None),
    Arg("hessian_mode", (bool,), False, doc="also output the Hessian (set by start_pref_h)"),
    Arg("spin", (dict, type(None)), None, doc="magnetic types (lamkit.model.spin)"),
    # written by the reference into checkpoints; accepted and kept, not used
    Arg("srtab_add_bias", (bool,), True),
    Arg("info", (dict, type(None)), None),
    Arg("model_branch_alias", (list,), []),
    Arg("bridging_method", (str,), "None"),
    Arg("bridging_r_inner", (float,), 0.5),
    Arg("bridging_r_outer", (float,), 0.8),
    Arg("use_srtab", (str, type(None)), None),
    Arg("smin_alpha", (float, type(None)), None),
    Arg("sw_rmin", (float, type(None)), None),
    Arg("sw_rmax", (float, type(None)), None),
)


def normalize_model_config(config: dict, path: str = "model") -> dict:
    """Validated model config with defaults; descriptor and fitting sections normalised too."""
    if config.get("type") == "linear_ener":
        return _normalize_linear(config, path)
    conf = normalize(config, MODEL_ARGS, path)
    if not conf["hessian_mode"]:  # written only by Hessian runs, as the reference does
        del conf["hessian_mode"]
    if conf["spin"] is None:
        del conf["spin"]
    if conf["type"] != "standard":
        raise ConfigError(
            f"{path}/type: only 'standard' models are supported, got '{conf['type']}'"
        )
    if conf["use_srtab"]:
        for key in ("smin_alpha", "sw_rmin", "sw_rmax"):
            if conf[key] is None:
                raise ConfigError(f"{path}/{key}: required with use_srtab")
        if not conf["sw_rmin"] < conf["sw_rmax"]:
            raise ConfigError(f"{path}/sw_rmax: must be larger than sw_rmin")
    if not conf["type_map"] or not all(isinstance(t, str) for t in conf["type_map"]):
        raise ConfigError(f"{path}/type_map: expected a non-empty list of element names")
    if len(set(conf["type_map"])) != len(conf["type_map"]):
        raise ConfigError(f"{path}/type_map: duplicate element names in {conf['type_map']}")
    if "spin" in conf:
        conf["spin"] = normalize_spin(conf["spin"], conf["type_map"], f"{path}/spin")
    desc = conf["descriptor"]
    if isinstance(desc, str):
        raise ConfigError(f"{path}/descriptor: shared descriptors ('{desc}') need multi-task mode")
    dtype = desc.get("type", "se_e2_a")
    dconf = DESCRIPTORS.get(dtype).normalize_config(desc, f"{path}/descriptor")
    conf["descriptor"] = {**dconf, "type": dtype}
    fit = conf["fitting_net"]
    ftype = fit.get("type", "ener")
    fconf = FITTINGS.get(ftype).normalize_config(fit, f"{path}/fitting_net")
    conf["fitting_net"] = {**fconf, "type": ftype}
    return conf


def _flatten_linear(conf: dict, path: str) -> dict:
    """The reference's ``models`` list as the first DP model's config plus ``pair_tables``,
    ``dp_models`` (the further DP models) and ``members`` (their kinds in the list's order)."""
    models = conf.pop("models")
    if not isinstance(models, list) or not models or "descriptor" not in models[0]:
        raise ConfigError(f"{path}/models/0: the first model must be a DP model (descriptor)")
    tables, dps, order = [], [], []
    for i, sub in enumerate(models[1:], 1):
        kind = sub.get("type", "standard")
        if kind == "standard" and "descriptor" in sub:
            if sub.get("type_map", conf.get("type_map")) != conf.get("type_map"):
                raise ConfigError(f"{path}/models/{i}/type_map: must equal {path}/type_map")
            dps.append({**sub, "type_map": conf.get("type_map")})
            order.append("dp")
            continue
        if kind != "pairtab":
            raise ConfigError(
                f"{path}/models/{i}/type: a DP model (with a descriptor) or a pair table "
                f"('pairtab') may follow the first model, got '{kind}'"
            )
        unknown = set(sub) - {"type", "tab_file", "rcut", "sel", "type_map"}
        if unknown:
            raise ConfigError(f"{path}/models/{i}: unsupported keys {sorted(unknown)}")
        tables.append(
            {
                "tab_file": sub["tab_file"],
                "rcut": float(sub["rcut"]),
                "sel": int(sub["sel"] if isinstance(sub["sel"], int) else sum(sub["sel"])),
            }
        )
        order.append("pairtab")
    dp = {k: v for k, v in models[0].items() if not k.startswith("_")}
    if dp.pop("type_map", conf.get("type_map")) != conf.get("type_map"):
        raise ConfigError(f"{path}/models/0/type_map: must equal {path}/type_map")
    return {**conf, **dp, "pair_tables": tables, "dp_models": dps, "members": order}


def _normalize_linear(config: dict, path: str) -> dict:
    """A ``linear_ener`` config: a DP model (normalised as a standard one), further DP models
    and pair tables."""
    conf = dict(config)
    if "models" in conf:
        conf = _flatten_linear(conf, path)
    conf.pop("type")
    tables = conf.pop("pair_tables", [])
    dps = conf.pop("dp_models", [])
    order = conf.pop("members", None) or ["pairtab"] * len(tables)
    weights = conf.pop("weights", "mean")
    n = 1 + len(order)
    if weights not in ("sum", "mean") and not (isinstance(weights, list) and len(weights) == n):
        raise ConfigError(f"{path}/weights: 'sum', 'mean' or a list of {n} numbers")
    norm = normalize_model_config(conf, path)
    index = [i for i, kind in enumerate(order, 1) if kind == "dp"]
    dps = [normalize_model_config(c, f"{path}/models/{i}") for c, i in zip(dps, index)]
    norm.update(type="linear_ener", weights=weights, pair_tables=tables)
    if dps:
        norm.update(dp_models=dps, members=order)
    return norm


def build_model(config: dict) -> AtomicModel:
    """An untrained model from a model config (normalised here if needed)."""
    conf = normalize_model_config(copy.deepcopy(config))
    if "spin" in conf:
        return build_spin_model(conf)
    type_map = conf["type_map"]
    dconf = dict(conf["descriptor"])
    if conf["pair_exclude_types"] and "exclude_types" in dconf and not dconf["exclude_types"]:
        dconf["exclude_types"] = conf["pair_exclude_types"]
    cls = DESCRIPTORS.get(dconf.get("type", "se_e2_a"))
    for path, _ in cls.neighbor_selections(dconf):
        value = dconf
        for key in path:
            value = value[key]
        if isinstance(value, str):
            raise ConfigError(
                f"model/descriptor/{'/'.join(path)}: '{value}' must be resolved from the "
                "training data first (lam train does this)"
            )
    descriptor, fitting = _parts(conf, dconf)
    # energy models carry the EnergyModel name (the forward is AtomicModel's for every kind)
    model_cls = EnergyModel if fitting.output_def().kind == "energy" else AtomicModel
    if conf["type"] == "linear_ener":
        _check_linear_member(model_cls, descriptor, 0)
        members = []
        for k, sub in enumerate(conf.get("dp_models", [])):
            d, f = _parts(sub, dict(sub["descriptor"]))
            kind = EnergyModel if f.output_def().kind == "energy" else AtomicModel
            _check_linear_member(kind, d, k + 1)
            members.append(LinearMember(d, f, type_map, sub["atom_exclude_types"], config=sub))
        return LinearEnergyModel(
            descriptor, fitting, type_map, conf["atom_exclude_types"], conf, members
        )
    if conf["use_srtab"]:
        if model_cls is not EnergyModel:
            raise ConfigError("model/use_srtab: needs an energy fitting (fitting_net/type 'ener')")
        if not descriptor.mixed_types:
            raise ConfigError(
                "model/use_srtab: needs a mixed-type descriptor (se_atten, dpa2, dpa3, ...), "
                f"as the reference; '{dconf.get('type', 'se_e2_a')}' keeps types apart"
            )
        model_cls = ZBLEnergyModel
    return model_cls(descriptor, fitting, type_map, conf["atom_exclude_types"], config=conf)


def _parts(conf: dict, dconf: dict):
    """The descriptor and fitting of a normalised DP model config."""
    descriptor = build_descriptor(dconf, conf["type_map"])
    fitting = build_fitting(
        conf["fitting_net"],
        len(conf["type_map"]),
        descriptor.dim_out,
        descriptor.mixed_types,
        embedding_width=descriptor.dim_emb if descriptor.has_rot_mat else None,
    )
    return descriptor, fitting


def _check_linear_member(model_cls, descriptor, k: int) -> None:
    if model_cls is not EnergyModel or not descriptor.mixed_types:
        raise ConfigError(
            f"model/models/{k}: linear_ener needs energy models with a mixed-type "
            "descriptor (se_atten, dpa2, dpa3, ...), as the reference"
        )


def build_spin_model(conf: dict) -> SpinEnergyModel:
    """A :class:`SpinEnergyModel` from a normalised model config with a ``spin`` section."""
    for key in ("use_srtab",):
        if conf.get(key):
            raise ConfigError(f"model/{key}: not available together with model/spin")
    if conf.get("type", "standard") != "standard":
        raise ConfigError(f"model/type: '{conf['type']}' cannot be combined with model/spin")
    if conf["fitting_net"].get("type", "ener") not in ("ener", "energy"):
        raise ConfigError("model/spin: needs an energy fitting (fitting_net/type 'ener')")
    base = build_model(backbone_config(conf))
    return SpinEnergyModel(
        base.descriptor,
        base.fitting,
        base.type_map,
        base.atom_exclude_types,
        config=conf,
    )
