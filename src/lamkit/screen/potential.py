"""The potential of a screening: what it is, what it is called, which elements it knows.

:func:`resolve` accepts what :func:`lamkit.relax.relax` accepts (a model file, a DeepPot, an
AtomicModel, a LamkitPotential / AsePotential, an ASE calculator) plus two names: ``"emt"``
(ASE's EMT calculator) and ``"ase:module.Class"`` (any ASE calculator class, built without
arguments).  It returns a :class:`Resolved`: a picklable ``spec`` that a Dask worker turns
back into a potential (a file path stays a path: each worker loads the model once and keeps it,
see :func:`relaxer_for`), a name (the default model name), the type map (None when the
potential does not declare one) and an identity (hashed into the resume key: a model file is
identified by its content, a model object by its weights, a calculator by its class and
parameters).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ScreenConfig, ScreenError


@dataclass
class Resolved:
    """A potential ready to use: ``spec`` (picklable), ``name``, ``type_map``, ``identity``."""

    spec: Any
    name: str
    type_map: list[str] | None
    identity: dict
    local: Any = None  # the potential object built here (lamkit.relax potential)


def _calculator_from_name(text: str):
    """An ASE calculator for "emt" or "ase:module.Class"; None if ``text`` is neither."""
    low = text.strip().lower()
    if low == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if low.startswith("ase:"):
        target = text.strip()[4:]
        module, _, cls = target.replace(":", ".").rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls)()
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise ScreenError(
                f"potential '{text}': cannot build ASE calculator {target}: {exc}"
            ) from None
    return None


def calculator_elements(calc: Any) -> list[str] | None:
    """Elements an ASE calculator declares: ``calc.type_map`` if present; ASE's EMT knows its
    parameter table; None otherwise."""
    tm = getattr(calc, "type_map", None)
    if tm:
        return [str(t) for t in tm]
    from ase.calculators.emt import EMT

    if isinstance(calc, EMT):
        from ase.calculators.emt import parameters

        return sorted(parameters)
    return None


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _weights_digest(module: Any) -> str:
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _calc_identity(calc: Any) -> dict:
    cls = type(calc)
    params = getattr(calc, "parameters", {}) or {}
    return {
        "kind": "ase-calculator",
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "parameters": json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
    }


def resolve(potential: Any, config: ScreenConfig, build: bool = True) -> Resolved:
    """What ``potential`` is (see the module docstring).  ``build``: also build the lamkit.relax
    potential here (``Resolved.local``); needed for the type map of a model file."""
    from ase.calculators.calculator import BaseCalculator

    from ..relax import AsePotential, LamkitPotential, as_potential

    if isinstance(potential, (str, Path)):
        calc = _calculator_from_name(str(potential)) if not Path(potential).exists() else None
        if calc is not None:
            name = str(calc.name).lower()
            return Resolved(calc, name, calculator_elements(calc), _calc_identity(calc))
        path = Path(potential)
        if not path.is_file():
            raise ScreenError(
                f"potential: no model file '{potential}' (give a lamkit / DeePMD-kit v3 model "
                "file, 'emt' or 'ase:module.Class')"
            )
        local = _build(str(path), config) if build else None
        return Resolved(
            str(path.resolve()),
            path.stem,
            None if local is None else list(local.type_map),
            {"kind": "model-file", "sha256": _file_digest(path), "head": config.head},
            local,
        )
    if isinstance(potential, AsePotential):
        potential = potential.calc
    if isinstance(potential, BaseCalculator):
        return Resolved(
            potential,
            str(getattr(potential, "name", type(potential).__name__)).lower(),
            calculator_elements(potential),
            _calc_identity(potential),
        )
    try:
        local = as_potential(potential, dtype=config.dtype, device=config.device, head=config.head)
    except (TypeError, ValueError) as exc:
        raise ScreenError(f"potential: {exc}") from None
    if isinstance(local, LamkitPotential):
        ident = {"kind": "lamkit-model", "weights": _weights_digest(local.model)}
        return Resolved(local, "lamkit-model", list(local.type_map), ident, local)
    tm = getattr(local, "type_map", None)
    return Resolved(
        local,
        type(local).__name__.lower(),
        None if tm is None else list(tm),
        {"kind": "potential", "class": type(local).__qualname__},
        local,
    )


def _build(path: str, config: ScreenConfig):
    from ..errors import LamkitError
    from ..relax import LamkitPotential

    try:
        return LamkitPotential(path, dtype=config.dtype, device=config.device, head=config.head)
    except LamkitError as exc:
        raise ScreenError(f"potential '{path}': {exc}") from None
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise ScreenError(f"potential '{path}': cannot load the model: {exc}") from None


# A worker process keeps its relaxers (with their loaded models) between shards.
_RELAXERS: dict[str, Any] = {}


def relaxer_for(spec: Any, relax_kwargs: dict, local: Any = None):
    """A :class:`lamkit.relax.Relaxer` for ``spec`` and settings, cached in this process by
    model path (or object identity) and settings: a worker loads each model once."""
    from ..relax import Relaxer

    who = spec if isinstance(spec, str) else f"object-{id(spec)}"
    key = json.dumps([who, relax_kwargs], sort_keys=True, default=str)
    hit = _RELAXERS.get(key)
    if hit is None:
        if len(_RELAXERS) >= 4:
            _RELAXERS.clear()
        hit = Relaxer(local if local is not None else spec, **relax_kwargs)
        _RELAXERS[key] = (hit, spec)  # the spec is kept alive: its id() stays unique
        return hit
    return hit[0]
