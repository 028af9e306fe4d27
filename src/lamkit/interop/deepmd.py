"""DeePMD-kit v3 PyTorch checkpoints (``model.ckpt-*.pt`` written by ``dp --pt train``).

Such a file is a ``torch.save`` of ``{"model": state_dict, "optimizer": ...}``; the state dict
has ``_extra_state.model_params`` (the normalised model config) and parameters named
``model.<head>.atomic_model.{descriptor,fitting_net}...``. We rebuild the same architecture in
lamkit from the config and translate parameter names with per-component rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..model import EnergyModel, build_model

# (reference name pattern, lamkit name template); applied to names below "atomic_model."
_RULES: list[tuple[str, str]] = [
    (r"^out_bias$", "out_bias"),
    (r"^out_std$", "out_std"),
    (r"^descriptor\.sea\.mean$", "descriptor.davg"),
    (r"^descriptor\.sea\.stddev$", "descriptor.dstd"),
    (
        r"^descriptor\.sea\.filter_layers\.networks\.(\d+)\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"descriptor.embeddings.\1.layers.\2.\3",
    ),
    (
        r"^fitting_net\.filter_layers\.networks\.(\d+)\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"fitting.nets.\1.layers.\2.\3",
    ),
    (r"^fitting_net\.bias_atom_e$", "fitting.bias_atom"),
    (r"^fitting_net\.(fparam_avg|fparam_inv_std|aparam_avg|aparam_inv_std)$", r"fitting.\1"),
    # se_e3_tebd (reference DescrptSeTTebd: block "se_ttebd" + its own type embedding)
    (r"^descriptor\.se_ttebd\.mean$", "descriptor.davg"),
    (r"^descriptor\.se_ttebd\.stddev$", "descriptor.dstd"),
    (
        r"^descriptor\.se_ttebd\.filter_layers\.networks\.0\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"descriptor.embedding.layers.\1.\2",
    ),
    (
        r"^descriptor\.se_ttebd\.filter_layers_strip\.networks\.0\.layers\.(\d+)\."
        r"(matrix|bias|idt)$",
        r"descriptor.embedding_strip.layers.\1.\2",
    ),
    (
        r"^descriptor\.type_embedding\.embedding\.embedding_net\.layers\.(\d+)\."
        r"(matrix|bias|idt)$",
        r"descriptor.type_embedding.net.layers.\1.\2",
    ),
    # DPA-1 / se_atten / se_atten_v2 (mean/stddev are [ntypes, nnei, 4] like se_e2_a; the type
    # embedding rule above is shared)
    (r"^descriptor\.se_atten\.mean$", "descriptor.davg"),
    (r"^descriptor\.se_atten\.stddev$", "descriptor.dstd"),
    (
        r"^descriptor\.se_atten\.filter_layers\.networks\.0\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"descriptor.embedding.layers.\1.\2",
    ),
    (
        r"^descriptor\.se_atten\.filter_layers_strip\.networks\.0\.layers\.(\d+)\."
        r"(matrix|bias|idt)$",
        r"descriptor.embedding_strip.layers.\1.\2",
    ),
    (
        r"^descriptor\.se_atten\.dpa1_attention\.attention_layers\.(\d+)\.attention_layer\."
        r"(in_proj|out_proj)\.(matrix|bias)$",
        r"descriptor.attention.\1.\2.\3",
    ),
    (
        r"^descriptor\.se_atten\.dpa1_attention\.attention_layers\.(\d+)\.attn_layer_norm\."
        r"matrix$",
        r"descriptor.attention.\1.norm.weight",
    ),
    (
        r"^descriptor\.se_atten\.dpa1_attention\.attention_layers\.(\d+)\.attn_layer_norm\."
        r"bias$",
        r"descriptor.attention.\1.norm.bias",
    ),
    (r"^descriptor\.se_atten\.type_embd_data$", "descriptor.type_embd_data"),
]
# reference entries with no lamkit counterpart (duplicates, compression tables, ...)
_IGNORED = [
    r"\._networks\.",
    r"\.compress_(info|data)\.",
    r"^fitting_net\.case_embd$",
    r"^descriptor\.se_ttebd\.type_embd_data$",  # se_e3_tebd compression table
]


def _load(path: str | Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not readable"
        raise ModelFileError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from exc


def is_deepmd_checkpoint(obj) -> bool:
    """True for a loaded dict that looks like a DeePMD-kit v3 PyTorch checkpoint."""
    sd = obj.get("model") if isinstance(obj, dict) else None
    return isinstance(sd, dict) and "_extra_state" in sd and "model_params" in sd["_extra_state"]


def _heads(params: dict) -> list[str]:
    return list(params["model_dict"]) if "model_dict" in params else ["Default"]


def load_deepmd_checkpoint(path_or_obj, head: str | None = None) -> EnergyModel:
    """A lamkit model holding the weights of a DeePMD-kit v3 checkpoint.

    Args:
        path_or_obj: the checkpoint file, or its already-loaded dict.
        head: the branch of a multi-task checkpoint (required there).
    """
    obj = _load(path_or_obj) if isinstance(path_or_obj, (str, Path)) else path_or_obj
    where = path_or_obj if isinstance(path_or_obj, (str, Path)) else "checkpoint"
    if not is_deepmd_checkpoint(obj):
        raise ModelFileError(f"{where}: not a DeePMD-kit v3 PyTorch checkpoint")
    sd = obj["model"]
    params = sd["_extra_state"]["model_params"]
    heads = _heads(params)
    if "model_dict" in params:
        if head is None:
            raise ModelFileError(f"{where}: multi-task checkpoint; choose a head from {heads}")
        if head not in heads:
            raise ModelFileError(f"{where}: no head '{head}'; available: {heads}")
        params = params["model_dict"][head]
    else:
        head = "Default"
    model = build_model(dict(params))
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
        if any(re.search(p, rest) for p in _IGNORED):
            continue
        for pattern, template in _RULES:
            if re.match(pattern, rest):
                state[re.sub(pattern, template, rest)] = value
                break
        else:
            raise ModelFileError(f"{where}: parameter '{name}' has no lamkit counterpart yet")
    _reshape_stats(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    missing = [k for k in missing if own[k].numel() > 0]  # empty fparam/aparam buffers
    if unexpected or missing:
        raise ModelFileError(f"{where}: missing {missing}, unexpected {unexpected}")
    return model


def _reshape_stats(state: dict, model: EnergyModel) -> None:
    """Reference layouts differ from lamkit's in a few buffers; convert them here."""
    for key in ("out_bias", "out_std"):
        if key in state and state[key].dim() == 3:
            state[key] = state[key][0]
    for key in ("descriptor.davg", "descriptor.dstd"):
        if key in state and state[key].dim() == 3:
            full = state[key]
            state[key] = full[:, 0, :].clone()
            if not torch.allclose(full, state[key].unsqueeze(1).expand_as(full)):
                raise ModelFileError(f"{key}: per-slot statistics differ between slots")
