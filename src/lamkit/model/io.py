"""Saving and loading models: lamkit checkpoints, frozen models and DeePMD-kit checkpoints.

File layout (a ``torch.save`` dict, tensors and plain Python only):

* ``format: "lamkit"``, ``version: 1``, ``kind: "checkpoint" | "frozen"``;
* ``model_config``: normalised model config (``sel`` resolved), enough to rebuild the model;
* ``model_state``: the model's ``state_dict``;
* checkpoints add ``optimizer``, ``step``, ``lr``, ``train_config``, ``sampler`` and ``rng``.

Writes are atomic: the file is written next to its destination and renamed over it.
This module does not import the training code, so a frozen model loads with the model alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ..errors import ModelFileError
from .atomic_model import AtomicModel
from .build import build_model

FORMAT = "lamkit"
VERSION = 1


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def model_payload(model: AtomicModel, kind: str = "frozen", **extra) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model_config": model.config,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def save_model(model: AtomicModel, path: str | Path, **metadata) -> None:
    """Write a frozen (inference-only) model file."""
    atomic_save(model_payload(model, "frozen", metadata=metadata), path)


def read_file(path: str | Path) -> dict:
    """Load a model/checkpoint file (a lamkit checkpoint folder resolves its ``checkpoint``)."""
    path = Path(path)
    if path.is_dir():
        pointer = path / "checkpoint"
        if not pointer.exists():
            raise ModelFileError(f"{path}: a folder without a 'checkpoint' file")
        path = path / pointer.read_text().strip()
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{path}: cannot be read as a model file ({exc})") from exc


def choose_head(model_config: dict, head: str | None, where: str = "model") -> str:
    """The branch of a multi-task model config to use: ``head``, else the model's default
    (set by replay fine-tuning); errors list the branches."""
    from ..config.multitask import resolve_branch

    heads = list(model_config["model_dict"])
    if head is None:
        head = model_config.get("default_head") or resolve_branch(model_config["model_dict"], None)
        if head is None:
            raise ModelFileError(f"{where}: a multi-task model; choose a head from {heads}")
    head = resolve_branch(model_config["model_dict"], head, ignore_case=True) or head
    if head not in heads:
        from ..registry import did_you_mean

        raise ModelFileError(
            f"{where}: no head '{head}'; available: {heads}." + did_you_mean(head, heads)
        )
    return head


def model_from_payload(obj: dict, where: str = "model", head: str | None = None) -> AtomicModel:
    from ..interop.deepmd import is_deepmd_checkpoint, load_deepmd_checkpoint

    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version", 0) > VERSION:
            raise ModelFileError(f"{where}: written by a newer lamkit (version {obj['version']})")
        conf, state = obj["model_config"], obj["model_state"]
        if "model_dict" in conf:
            head = choose_head(conf, head, where)
            conf = conf["model_dict"][head]
            state = {k[len(head) + 1 :]: v for k, v in state.items() if k.startswith(f"{head}.")}
        model = build_model(conf)
        model.load_state_dict(state)
        return model
    if is_deepmd_checkpoint(obj):
        return load_deepmd_checkpoint(obj, head=head)
    raise ModelFileError(
        f"{where}: neither a lamkit model/checkpoint nor a DeePMD-kit v3 PyTorch checkpoint"
    )


def load_model(path: str | Path, head: str | None = None) -> AtomicModel:
    """Any model file lamkit understands, in eval mode: an ``EnergyModel``, or for property,
    dipole and polar fittings an ``AtomicModel``."""
    model = model_from_payload(read_file(path), str(path), head=head)
    return model.eval()
