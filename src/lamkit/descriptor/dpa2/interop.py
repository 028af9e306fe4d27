"""Load a DeePMD-kit v3 PyTorch DPA-2 energy checkpoint into lamkit modules (DescrptDPA2 +
EnergyFitting inside EnergyModel), by translating parameter names.

This is kept inside the dpa2 package until DPA-2 is registered; the same rules belong in
:mod:`lamkit.interop.deepmd` afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .dpa2 import DescrptDPA2

_D = r"^descriptor\."
RULES: list[tuple[str, str]] = [
    (r"^out_bias$", "out_bias"),
    (r"^out_std$", "out_std"),
    (_D + r"(repinit|repinit_three_body|repformers)\.mean$", r"descriptor.\1.davg"),
    (_D + r"(repinit|repinit_three_body|repformers)\.stddev$", r"descriptor.\1.dstd"),
    (
        _D + r"(repinit|repinit_three_body)\.filter_layers\.networks\.0\.layers\.(\d+)\."
        r"(matrix|bias|idt)$",
        r"descriptor.\1.embedding.layers.\2.\3",
    ),
    (
        _D + r"(repinit|repinit_three_body)\.filter_layers_strip\.networks\.0\.layers\.(\d+)\."
        r"(matrix|bias|idt)$",
        r"descriptor.\1.embedding_strip.layers.\2.\3",
    ),
    (_D + r"repinit\.type_embd_data$", "descriptor.repinit.type_embd_data"),
    (
        _D + r"type_embedding\.embedding\.embedding_net\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"descriptor.type_embedding.net.layers.\1.\2",
    ),
    (_D + r"(g1_shape_tranform|tebd_transform)\.(matrix|bias)$", r"descriptor.\1.\2"),
    (
        _D + r"repformers\.layers\.(\d+)\.attn2_lm\.matrix$",
        r"descriptor.repformers.layers.\1.attn2_lm.weight",
    ),
    (_D + r"repformers\.(.*)$", r"descriptor.repformers.\1"),
    (
        r"^fitting_net\.filter_layers\.networks\.(\d+)\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"fitting.nets.\1.layers.\2.\3",
    ),
    (r"^fitting_net\.bias_atom_e$", "fitting.bias_atom"),
    (r"^fitting_net\.(fparam_avg|fparam_inv_std|aparam_avg|aparam_inv_std)$", r"fitting.\1"),
]
IGNORED = [
    r"\._networks\.",
    r"\.compress_(info|data)\.",
    r"^fitting_net\.case_embd$",
    r"^descriptor\.repinit_three_body\.type_embd_data$",
]
_DESC_KEYS = (
    "concat_output_tebd",
    "precision",
    "smooth",
    "exclude_types",
    "env_protection",
    "trainable",
    "seed",
    "add_tebd_to_repinit_out",
    "use_econf_tebd",
    "use_tebd_bias",
)
_FIT_KEYS = (
    "neuron",
    "activation_function",
    "resnet_dt",
    "precision",
    "numb_fparam",
    "numb_aparam",
    "trainable",
    "rcond",
    "seed",
)


def build_from_params(params: dict):
    """EnergyModel(DescrptDPA2, EnergyFitting) from a reference ``model_params`` dict."""
    from ...fitting.energy import EnergyFitting
    from ...model.energy_model import EnergyModel

    type_map = list(params["type_map"])
    d = params["descriptor"]
    if d.get("type") != "dpa2":
        raise ValueError(f"not a dpa2 descriptor: {d.get('type')}")
    desc = DescrptDPA2(
        len(type_map),
        dict(d["repinit"]),
        dict(d["repformer"]),
        **{k: d[k] for k in _DESC_KEYS if k in d},
    )
    f = params.get("fitting_net", {})
    fit = EnergyFitting(len(type_map), desc.dim_out, True, **{k: f[k] for k in _FIT_KEYS if k in f})
    return EnergyModel(desc, fit, type_map, config=params)


def translate_state(sd: dict, head: str = "Default") -> dict:
    prefix = f"model.{head}."
    state = {}
    for name, value in sd.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if rest == "min_nbor_dist":
            state["min_nbor_dist"] = value
            continue
        if not rest.startswith("atomic_model."):
            continue
        rest = rest[len("atomic_model.") :]
        if any(re.search(p, rest) for p in IGNORED):
            continue
        for pattern, template in RULES:
            if re.match(pattern, rest):
                state[re.sub(pattern, template, rest)] = value
                break
        else:
            raise KeyError(f"reference parameter '{name}' has no lamkit counterpart")
    for key in list(state):
        v = state[key]
        if key in ("out_bias", "out_std") and v.dim() == 3:
            state[key] = v[0]
        elif key.endswith((".davg", ".dstd")) and v.dim() == 3:
            per_type = v[:, 0, :].clone()
            if not torch.allclose(v, per_type.unsqueeze(1).expand_as(v)):
                raise ValueError(f"{key}: per-slot statistics differ between slots")
            state[key] = per_type
    return state


def load_reference_checkpoint(path: str | Path, head: str = "Default"):
    """A lamkit EnergyModel with the weights of a ``dp --pt train`` DPA-2 checkpoint."""
    obj = torch.load(str(path), map_location="cpu", weights_only=False)
    sd = obj["model"]
    params = sd["_extra_state"]["model_params"]
    if "model_dict" in params:
        params = params["model_dict"][head]
    model = build_from_params(dict(params))
    missing, unexpected = model.load_state_dict(translate_state(sd, head), strict=False)
    own = model.state_dict()
    missing = [k for k in missing if own[k].numel() > 0]
    if missing or unexpected:
        raise ValueError(f"missing {missing}, unexpected {unexpected}")
    return model
