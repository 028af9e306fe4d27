"""Writing DeePMD-kit v3 PyTorch checkpoints from lamkit models (``lam convert --to deepmd``).

The reference's own modules lay out the file: for each head we build the reference model from
the model config (``deepmd.pt.model.model.get_model``), walk its state dict and fill every entry
from the lamkit model through :func:`lamkit.interop.deepmd.reference_names`, the name map that
the reader uses, composed from the declarations of the model's components. So the written state
dict has exactly the names, shapes and dtypes the reference expects, and a name no component
declares is an error here instead of a file the reference cannot load. The file is
``{"model": state_dict, "optimizer": None}``, the state dict's ``_extra_state`` holding
``model_params`` and ``train_infos``, like ``dp --pt train``'s ``model.ckpt-*.pt`` (whose
optimizer state a converted model does not have).

Reference entries the components declare they ignore are filled as follows: ``._networks.``
duplicates from their ``.networks.`` twin, everything else (compression tables, ...) keeps the
value of the freshly built reference model (the model is uncompressed).
"""

from __future__ import annotations

import copy
import warnings

import torch

from ..errors import LamkitError, ModelFileError
from ..nn.params import ReferenceLayout
from .deepmd import beside_atomic_model, reference_names


def reference_params(config: dict) -> dict:
    """The model config as the reference's ``get_model`` takes it: lamkit's normalised config
    with every ``None`` entry removed (the reference then uses its own default, and some keys,
    like ``use_srtab``, change the model kind by their mere presence)."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    conf = clean(copy.deepcopy(config))
    conf.pop("shared_links", None)
    if conf.get("type") == "linear_ener":  # back to the reference's list of models
        tables = [{"type": "pairtab", **t} for t in conf.pop("pair_tables")]
        dps = conf.pop("dp_models", [])
        order = conf.pop("members", None) or ["pairtab"] * len(tables)
        top = {k: conf.pop(k) for k in ("type", "weights", "type_map")}
        conf["type_map"] = top["type_map"]
        pick = {"pairtab": iter(tables), "dp": iter(dps)}
        members = [next(pick[kind]) for kind in order]
        return {**top, "models": [conf, *members]}
    return conf


def _reference_model(params: dict, where: str) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from deepmd.pt.model.model import get_model
    except Exception as exc:  # noqa: BLE001 - a broken op library raises OSError/RuntimeError
        raise LamkitError(
            f"{where}: writing a DeePMD-kit checkpoint needs the deepmd-kit package "
            f"(pip install deepmd-kit), which lays out the file; import failed ({exc})"
        ) from None
    try:
        return get_model(copy.deepcopy(params))
    except Exception as exc:  # noqa: BLE001 - any refusal of the reference is reported
        raise ModelFileError(
            f"{where}: DeePMD-kit cannot build this model "
            f"({params.get('descriptor', {}).get('type')} + "
            f"{params.get('fitting_net', {}).get('type')}): {_first_line(exc)}"
        ) from None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _own_name(rest: str, layout: ReferenceLayout, names: dict[str, str]) -> str | None:
    """lamkit name for a reference name below ``model.<head>.`` (None: no lamkit tensor);
    raises ``KeyError`` for a name no component knows."""
    own = names.get(rest)
    if own is not None:
        return own
    if "._networks." in rest and layout.ignored(rest):  # an alias of the ".networks." entry
        return names.get(rest.replace("._networks.", ".networks."))
    if layout.ignored(rest) or beside_atomic_model(rest):
        return None
    raise KeyError(rest)


def _fit(value: torch.Tensor, like: torch.Tensor, name: str, where: str) -> torch.Tensor:
    """``value`` (lamkit layout) in the reference's shape and dtype (see ``_reshape_stats``)."""
    if value.shape != like.shape:
        if name.endswith(("out_bias", "out_std")) and like.dim() == value.dim() + 1:
            value = value.unsqueeze(0)
        elif name.endswith((".mean", ".stddev")) and like.dim() == value.dim() + 1:
            value = value.unsqueeze(1).expand(like.shape)
        if value.shape != like.shape:
            raise ModelFileError(
                f"{where}: '{name}' has shape {tuple(value.shape)} in lamkit, the reference "
                f"expects {tuple(like.shape)}"
            )
    return value.detach().to(device="cpu", dtype=like.dtype).clone()


def head_state(model: torch.nn.Module, params: dict, head: str, where: str) -> dict:
    """The reference state-dict entries ``model.<head>.*`` of one lamkit branch."""
    ref = _reference_model(params, where)
    own_state = model.state_dict()
    layout = reference_names(model)
    names = layout.to_own()
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    for rest, like in ref.state_dict().items():
        name = f"model.{head}.{rest}"
        try:
            own = _own_name(rest, layout, names)
        except KeyError:
            raise ModelFileError(
                f"{where}: the reference parameter '{rest}' has no lamkit counterpart; "
                "this model kind cannot be converted yet"
            ) from None
        if own is None:
            out[name] = like.detach().clone()
            continue
        if own not in own_state:
            raise ModelFileError(f"{where}: lamkit model has no '{own}' (reference '{rest}')")
        out[name] = _fit(own_state[own], like, rest, where)
        used.add(own)
    left = [k for k in own_state if k not in used and own_state[k].numel() > 0]
    if left:
        raise ModelFileError(
            f"{where}: lamkit tensors with no place in the DeePMD-kit model: {left[:5]}"
        )
    return out


def deepmd_checkpoint(
    branches: dict[str, torch.nn.Module],
    multi_task: bool,
    where: str = "model",
    params: dict | None = None,
    train_infos: dict | None = None,
) -> dict:
    """A DeePMD-kit v3 checkpoint dict (``{"model": state_dict, "optimizer": None}``) of
    lamkit models.

    Args:
        branches: ``{head: AtomicModel}``; one branch is written as head ``Default`` unless
            ``multi_task``.
        params: the reference ``model_params`` to record (default: from the models' configs).
        train_infos: the reference's ``{"lr", "step"}`` record (default: step 0).
    """
    if multi_task:
        heads = {h: reference_params(m.config) for h, m in branches.items()}
        params = params or {"model_dict": heads}
        heads = params["model_dict"]
    else:
        (model,) = branches.values()
        params = params or reference_params(model.config)
        branches, heads = {"Default": model}, {"Default": params}
    state: dict = {}
    for head, branch in branches.items():
        label = f"{where} (head {head})" if multi_task else where
        state.update(head_state(branch, heads[head], head, label))
    state["_extra_state"] = {
        "model_params": params,
        "train_infos": train_infos or {"lr": 0.0, "step": 0},
    }
    # dp train --init-model/--restart read "optimizer" unconditionally; None = a fresh optimizer
    return {"model": state, "optimizer": None}
