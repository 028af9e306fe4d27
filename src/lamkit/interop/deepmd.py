"""DeePMD-kit v3 PyTorch checkpoints (``model.ckpt-*.pt`` written by ``dp --pt train``).

Such a file is a ``torch.save`` of ``{"model": state_dict, "optimizer": ...}``; the state dict
has ``_extra_state.model_params`` (the normalised model config) and parameters named
``model.<head>.atomic_model.{descriptor,fitting_net}...``. We rebuild the same architecture in
lamkit from the config; each component of it declares its reference names
(:mod:`lamkit.nn.params`), which :func:`reference_names` composes into the name map.

Importing this module registers the format's reader (``"deepmd"``) with
:mod:`lamkit.model.io`, which imports it on first use: ``load_model`` reads these files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config.multitask import choose_head
from ..errors import ModelFileError
from ..model import AtomicModel, build_model
from ..model.io import ModelReader, register_reader
from ..nn.params import ReferenceLayout, reference_layout


def reference_names(model: torch.nn.Module) -> ReferenceLayout:
    """The DeePMD-kit names (below ``model.<head>.``) of ``model``'s tensors, composed from
    the declarations of its components (``REF_NAMES``, see :mod:`lamkit.nn.params`)."""
    return reference_layout(model)


def beside_atomic_model(rest: str) -> bool:
    """True for an entry of the reference model outside its atomic model (a spin model's
    ``backbone_model`` wraps a standard one): lamkit maps ``min_nbor_dist`` there and leaves
    the rest alone."""
    if rest.startswith("backbone_model."):
        rest = rest[len("backbone_model.") :]
    return not rest.startswith("atomic_model.")


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
    layout = reference_names(model)
    names = layout.to_own()
    prefix = f"model.{head}."
    state = {}
    for name, value in sd.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        own = names.get(rest)
        if own is not None:
            state[own] = value
        elif not (layout.ignored(rest) or beside_atomic_model(rest)):
            raise ModelFileError(f"{where}: parameter '{name}' has no lamkit counterpart yet")
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
