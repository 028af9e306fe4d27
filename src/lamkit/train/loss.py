"""Losses: every loss type registered, and the loss of an input (:func:`build_loss`).

The losses live one per module and register themselves in :data:`.loss_registry.LOSSES`:
the energy loss ``ener`` in :mod:`.loss_energy`, ``property`` in :mod:`.loss_property`,
``tensor`` (dipole, polarizability) in :mod:`.loss_tensor`, ``dos`` in :mod:`.loss_dos`,
``population`` in :mod:`.loss_population` and ``ener_spin`` in :mod:`.loss_spin`. This module
imports them so that they register (and re-exports the energy loss's names).
"""

from __future__ import annotations

from ..errors import ConfigError
from .loss_dos import DOSLoss
from .loss_energy import ENER_ARGS, EnergyLoss, hessian_pair_mean
from .loss_population import PopulationLoss
from .loss_property import PropertyLoss
from .loss_registry import LOSSES
from .loss_spin import EnergySpinLoss
from .loss_tensor import TensorLoss

__all__ = [
    "DEFAULT_LOSS",
    "DOSLoss",
    "ENER_ARGS",
    "LOSSES",
    "EnergyLoss",
    "EnergySpinLoss",
    "PopulationLoss",
    "PropertyLoss",
    "TensorLoss",
    "build_loss",
    "hessian_pair_mean",
]

# the loss of each fitting type when the input's loss section names none
DEFAULT_LOSS = {
    "ener": "ener",
    "energy": "ener",
    "property": "property",
    "dos": "dos",
    "population": "population",
}


def build_loss(config: dict | None, start_lr: float, model_config: dict | None = None):
    """The loss of the input's ``loss`` section for a model of ``model_config`` (normalised
    or not); the loss type defaults to the one that fits the fitting type. Call the loss's
    ``attach(model)`` once the model exists (the property loss reads its statistics)."""
    conf = dict(config or {})
    ftype = ((model_config or {}).get("fitting_net") or {}).get("type", "ener")
    if "type" not in conf and (model_config or {}).get("spin"):
        conf["type"] = "ener_spin"  # spin models: energy, real and magnetic forces
    if "type" not in conf:
        if ftype not in DEFAULT_LOSS:
            raise ConfigError(
                f"loss/type: a '{ftype}' fitting needs an explicit loss section "
                '(e.g. {"type": "tensor", "pref": 1.0, "pref_atomic": 0.0})'
            )
        conf["type"] = DEFAULT_LOSS[ftype]
    cls = LOSSES.get(conf["type"])
    if model_config is not None and ftype not in cls.fitting_types:
        raise ConfigError(
            f"loss/type: '{conf['type']}' does not fit a model with fitting_net/type '{ftype}' "
            f"(use it with {', '.join(cls.fitting_types)})"
        )
    return cls(conf, start_lr, model_config)
