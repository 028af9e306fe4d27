"""Atomic models: descriptor + fitting + output bias; forces and virials by autograd."""

from .atomic_model import AtomicModel
from .build import build_model, normalize_model_config
from .energy_model import EnergyModel
from .io import atomic_save, load_model, save_model

__all__ = [
    "AtomicModel",
    "EnergyModel",
    "atomic_save",
    "build_model",
    "load_model",
    "normalize_model_config",
    "save_model",
]
