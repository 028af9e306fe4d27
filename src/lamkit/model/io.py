"""Saving and loading models: lamkit checkpoints, frozen models and DeePMD-kit checkpoints.

File layout (a ``torch.save`` dict, tensors and plain Python only):

* ``format: "lamkit"``, ``version: 1``, ``kind: "checkpoint" | "frozen"``;
* ``model_config``: normalised model config (``sel`` resolved), enough to rebuild the model;
* ``model_state``: the model's ``state_dict``;
* checkpoints add ``optimizer``, ``step``, ``lr``, ``train_config``, ``sampler`` and ``rng``.

Writes are atomic: the file is written next to its destination and renamed over it.
This module does not import the training code, so a frozen model loads with the model alone.

Readers by file format: :func:`model_from_payload` (and so :func:`load_model`) asks each
registered :class:`ModelReader` whether it knows a loaded file (``sniff``) and lets the first
that does build the model (``load``); ``lam freeze``, ``lam convert`` and fine-tuning also ask
the reader for the stored model section (``config``) and training step (``step``), so none of
them tells the formats apart itself. This module registers the ``lamkit`` format (checkpoints
and frozen models); :mod:`lamkit.interop.deepmd` the ``deepmd`` one (DeePMD-kit v3 ``.pt``
checkpoints). Formats that live above the model package register themselves when their
module is imported (``register_reader``); the built-in ones are named in ``BUILTIN_READERS``
by module path, and :func:`model_readers` imports those modules on first use with
``importlib``. So ``load_model`` reads a DeePMD-kit v3 checkpoint without the caller importing
``lamkit.interop``, while the model package never imports the interop package (which builds on
it): the dependency runs one way, interop -> model.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.multitask import choose_head
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


@dataclass(frozen=True)
class ModelReader:
    """One model-file format, for a file already loaded with ``torch.load`` (``obj``):
    ``sniff(obj)`` is True for a file of the format; ``load(obj, where, head)`` builds its model
    (``where`` names the file in errors, ``head`` the branch of a multi-task model);
    ``config(obj)`` is its model section as stored (with ``model_dict`` for a multi-task
    model); ``step(obj)`` the training step it was saved at (None if unknown)."""

    name: str
    sniff: Callable[[object], bool]
    load: Callable[[dict, str, str | None], AtomicModel]
    config: Callable[[dict], dict]
    step: Callable[[dict], int | None]


_READERS: dict[str, ModelReader] = {}
# built-in formats read by modules above this package: format -> module that registers it
BUILTIN_READERS = {"deepmd": "lamkit.interop.deepmd"}


def register_reader(reader: ModelReader) -> ModelReader:
    """Add (or replace) the reader of the file format ``reader.name``; readers are tried in
    the order of their first registration."""
    _READERS[reader.name] = reader
    return reader


def model_readers() -> list[ModelReader]:
    """Every reader, the built-in ones imported (and so registered) on first use."""
    for name, module in BUILTIN_READERS.items():
        if name not in _READERS:
            importlib.import_module(module)
    return list(_READERS.values())


def reader_of(obj, where: str | None = None) -> ModelReader | None:
    """The reader of a loaded model file: None if no reader knows it, or with ``where`` (the
    file's name) a ``ModelFileError``."""
    reader = next((r for r in model_readers() if r.sniff(obj)), None)
    if reader is None and where is not None:
        raise ModelFileError(
            f"{where}: neither a lamkit model/checkpoint nor a DeePMD-kit v3 PyTorch checkpoint"
        )
    return reader


def is_lamkit_file(obj) -> bool:
    """True for a loaded lamkit checkpoint or frozen model."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _load_lamkit(obj: dict, where: str, head: str | None) -> AtomicModel:
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


register_reader(
    ModelReader(
        FORMAT,
        sniff=is_lamkit_file,
        load=_load_lamkit,
        config=lambda obj: obj.get("model_config", {}),
        step=lambda obj: obj.get("step"),
    )
)


def model_from_payload(obj: dict, where: str = "model", head: str | None = None) -> AtomicModel:
    """The model of a loaded model file of any registered format."""
    return reader_of(obj, where).load(obj, where, head)


def load_model(path: str | Path, head: str | None = None) -> AtomicModel:
    """Any model file lamkit understands, in eval mode: an ``EnergyModel``, or for property,
    dipole and polar fittings an ``AtomicModel``."""
    model = model_from_payload(read_file(path), str(path), head=head)
    return model.eval()
