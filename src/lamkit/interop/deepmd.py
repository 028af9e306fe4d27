"""DeePMD-kit v3 PyTorch checkpoints (``model.ckpt-*.pt`` written by ``dp --pt train``).

Such a file is a ``torch.save`` of ``{"model": state_dict, "optimizer": ...}``; the state dict
has ``_extra_state.model_params`` (the normalised model config) and parameters named
``model.<head>.atomic_model.{descriptor,fitting_net}...``. We rebuild the same architecture in
lamkit from the config and translate parameter names with per-component rules.

Importing this module registers the format's reader (``"deepmd"``) with
:mod:`lamkit.model.io`, which imports it on first use: ``load_model`` reads these files.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..config.multitask import choose_head
from ..errors import ModelFileError
from ..model import AtomicModel, build_model
from ..model.io import ModelReader, register_reader

# Descriptor blocks: (reference prefix, lamkit prefix). A block keeps its statistics as
# ``mean``/``stddev`` and its embedding nets under ``filter_layers`` (per neighbour-type nets in
# se_e2_a, one type-embedded net elsewhere) and ``filter_layers_strip`` (strip mode).
_BLOCKS: list[tuple[str, str]] = [
    ("descriptor.sea.", "descriptor."),  # se_e2_a
    ("descriptor.seat.", "descriptor."),  # se_e3 (per type-pair nets, as se_e2_a's rules)
    ("descriptor.se_atten.", "descriptor."),  # dpa1 / se_atten / se_atten_v2
    ("descriptor.se_ttebd.", "descriptor."),  # se_e3_tebd
    ("descriptor.repinit_three_body.", "descriptor.repinit_three_body."),  # dpa2 (before repinit.)
    ("descriptor.repinit.", "descriptor.repinit."),  # dpa2
    ("descriptor.repformers.", "descriptor.repformers."),  # dpa2
    ("descriptor.repflows.", "descriptor.repflows."),  # dpa3
]
_STAT_RULES: list[tuple[str, str]] = [(r"^mean$", "davg"), (r"^stddev$", "dstd")]
# (pattern, template) within one block, after its prefix
_BLOCK_RULES: list[tuple[str, str]] = [
    *_STAT_RULES,
    (r"^filter_layers\.networks\.0\.layers\.(\d+)\.(matrix|bias|idt)$", r"embedding.layers.\1.\2"),
    (
        r"^filter_layers_strip\.networks\.0\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"embedding_strip.layers.\1.\2",
    ),
    # DPA-1 attention layers
    (
        r"^dpa1_attention\.attention_layers\.(\d+)\.attention_layer\."
        r"(in_proj|out_proj)\.(matrix|bias)$",
        r"attention.\1.\2.\3",
    ),
    (
        r"^dpa1_attention\.attention_layers\.(\d+)\.attn_layer_norm\.matrix$",
        r"attention.\1.norm.weight",
    ),
    (
        r"^dpa1_attention\.attention_layers\.(\d+)\.attn_layer_norm\.bias$",
        r"attention.\1.norm.bias",
    ),
    (r"^type_embd_data$", "type_embd_data"),
    # repformer layers: every name is lamkit's, but the g2 layer norm's scale
    (r"^layers\.(\d+)\.attn2_lm\.matrix$", r"layers.\1.attn2_lm.weight"),
    (r"^((?:g2_embd|layers)\..*)$", r"\1"),
    # repflow blocks (dpa3): every name is lamkit's
    (r"^((?:edge_embd|angle_embd)\..*)$", r"\1"),
]
# se_e2_a: one net per (centre, neighbour) type pair or per neighbour type
_SEA_RULES: list[tuple[str, str]] = [
    *_STAT_RULES,
    (
        r"^filter_layers\.networks\.(\d+)\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"embeddings.\1.layers.\2.\3",
    ),
]
# (pattern, template) for names below "atomic_model." outside the descriptor blocks
_RULES: list[tuple[str, str]] = [
    (r"^out_bias$", "out_bias"),
    (r"^out_std$", "out_std"),
    # se_e2_r keeps its statistics and per neighbour-type nets outside a block
    (r"^descriptor\.mean$", "descriptor.davg"),
    (r"^descriptor\.stddev$", "descriptor.dstd"),
    (
        r"^descriptor\.filter_layers\.networks\.(\d+)\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"descriptor.embeddings.\1.layers.\2.\3",
    ),
    (
        r"^descriptor\.type_embedding\.embedding\.embedding_net\.layers\.(\d+)\."
        r"(matrix|bias|idt)$",
        r"descriptor.type_embedding.net.layers.\1.\2",
    ),
    # DPA-2 glue between repinit and the repformers
    (r"^descriptor\.(g1_shape_tranform|tebd_transform)\.(matrix|bias)$", r"descriptor.\1.\2"),
    (
        r"^fitting_net\.filter_layers\.networks\.(\d+)\.layers\.(\d+)\.(matrix|bias|idt)$",
        r"fitting.nets.\1.layers.\2.\3",
    ),
    (r"^fitting_net\.bias_atom_e$", "fitting.bias_atom"),
    (
        r"^fitting_net\.(fparam_avg|fparam_inv_std|aparam_avg|aparam_inv_std|case_embd)$",
        r"fitting.\1",
    ),
]
# reference entries with no lamkit counterpart (duplicates, compression tables, ...)
_IGNORED = [
    r"\._networks\.",
    r"\.compress_(info|data)\.",
    # compression tables of the three-body blocks (se_e3_tebd has no such buffer here)
    r"^descriptor\.(se_ttebd|repinit_three_body)\.type_embd_data$",
]


# a DP model with a pair table (DPZBLModel): models.0 is the DP model, models.1 the table
_ZBL_RULES: list[tuple[str, str | None]] = [
    (r"^models\.1\.(tab_info|tab_data)$", r"pair_table.\1"),
    (r"^models\.1\.out_bias$", "tab_out_bias"),
]
# linear_ener: models.0 is the DP model, models.<k> the pair tables
_LINEAR_RULES: list[tuple[str, str | None]] = [
    (r"^models\.(\d+)\.(tab_info|tab_data|out_bias)$", "pair_tables.{}.{}"),
]


# both: the combination's bias is lamkit's out_bias (set by training statistics), the DP
# member's is dp_out_bias; the members' out_std are not used by energy models
_COMBINED_RULES: list[tuple[str, str | None]] = [
    (r"^models\.0\.out_bias$", "dp_out_bias"),
    (r"^models\.\d+\.out_std$", None),
    (r"^(out_bias|out_std)$", r"\1"),
]


def _combined_name(name: str, kind: str) -> str | None:
    rules = _COMBINED_RULES + (_ZBL_RULES if kind == "zbl" else _LINEAR_RULES)
    for pattern, template in rules:
        match = re.match(pattern, name)
        if match is None:
            continue
        if template is None:
            return None
        if kind == "linear" and "{}" in template:
            return template.format(int(match.group(1)) - 1, match.group(2))
        return re.sub(pattern, template, name)
    raise KeyError(name)


def translate_name(name: str, kind: str | None = None) -> str | None:
    """lamkit state-dict name of a reference name below ``atomic_model.`` (None: not used);
    ``kind``: "zbl" (a DP model with a pair table, ``use_srtab``) or "linear"
    (``linear_ener``) for the names of a combined model.

    Raises ``KeyError`` for a name that no rule knows.
    """
    if kind is not None:
        if not name.startswith("models.0.") or name in ("models.0.out_bias", "models.0.out_std"):
            return _combined_name(name, kind)
        name = name[len("models.0.") :]
    if any(re.search(p, name) for p in _IGNORED):
        return None
    sub = re.match(r"^descriptor\.descrpt_list\.(\d+)\.", name)
    if sub:  # hybrid: each sub-descriptor's names, below descrpt_list.<i>
        own = translate_name("descriptor." + name[sub.end() :])
        return None if own is None else f"descriptor.descrpt_list.{sub.group(1)}.{own[11:]}"
    for ref_prefix, own_prefix in _BLOCKS:
        if name.startswith(ref_prefix):
            rest = name[len(ref_prefix) :]
            per_type = ref_prefix in ("descriptor.sea.", "descriptor.seat.")
            rules = _SEA_RULES if per_type else _BLOCK_RULES
            for pattern, template in rules:
                if re.match(pattern, rest):
                    return own_prefix + re.sub(pattern, template, rest)
            raise KeyError(name)
    for pattern, template in _RULES:
        if re.match(pattern, name):
            return re.sub(pattern, template, name)
    raise KeyError(name)


def _load(path: str | Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not readable"
        raise ModelFileError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from exc


def is_deepmd_checkpoint(obj) -> bool:
    """True for a loaded dict that looks like a DeePMD-kit v3 PyTorch checkpoint."""
    sd = obj.get("model") if isinstance(obj, dict) else None
    return isinstance(sd, dict) and "_extra_state" in sd and "model_params" in sd["_extra_state"]


def load_deepmd_checkpoint(path_or_obj, head: str | None = None) -> AtomicModel:
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
    if "model_dict" in params:
        head = choose_head(params, head, str(where))  # aliases, as the reference reads them
        params = params["model_dict"][head]
    else:
        head = "Default"
    model = build_model(dict(params))
    kind = "zbl" if params.get("use_srtab") else None
    kind = "linear" if params.get("type") == "linear_ener" else kind
    prefix = f"model.{head}."
    state = {}
    for name, value in sd.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if rest.startswith("backbone_model."):  # a spin model wraps a standard one
            rest = rest[len("backbone_model.") :]
        if rest == "min_nbor_dist":
            state["min_nbor_dist"] = value
            continue
        if not rest.startswith("atomic_model."):
            continue
        try:
            own = translate_name(rest[len("atomic_model.") :], kind)
        except KeyError:
            raise ModelFileError(
                f"{where}: parameter '{name}' has no lamkit counterpart yet"
            ) from None
        if own is not None:
            state[own] = value
    _reshape_stats(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    missing = [k for k in missing if own[k].numel() > 0]  # empty fparam/aparam buffers
    if unexpected or missing:
        raise ModelFileError(f"{where}: missing {missing}, unexpected {unexpected}")
    return model


def _reshape_stats(state: dict, model: AtomicModel) -> None:
    """Reference layouts differ from lamkit's in a few buffers; convert them here: the output
    bias/std ``[1, ntypes, odim]`` and every block's davg/dstd ``[ntypes, nnei, 4]`` (the same
    in every slot; lamkit keeps ``[ntypes, 4]``)."""
    for key in [k for k in state if k.endswith(("out_bias", "out_std"))]:
        if state[key].dim() == 3:
            state[key] = state[key][0]
    for key in [k for k in state if k.endswith((".davg", ".dstd"))]:
        full = state[key]
        if full.dim() != 3:
            continue
        state[key] = full[:, 0, :].clone()
        if not torch.allclose(full, state[key].unsqueeze(1).expand_as(full)):
            raise ModelFileError(f"{key}: per-slot statistics differ between slots")


def _read(obj: dict, where: str, head: str | None) -> AtomicModel:
    return load_deepmd_checkpoint(obj, head=head)


def _params(obj: dict) -> dict:
    return obj["model"]["_extra_state"]["model_params"]


def _step(obj: dict) -> int | None:
    return obj["model"]["_extra_state"].get("train_infos", {}).get("step")


# "deepmd": the name ``lam convert --to`` uses for the format
register_reader(ModelReader("deepmd", is_deepmd_checkpoint, _read, _params, _step))
