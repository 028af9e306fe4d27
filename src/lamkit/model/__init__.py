"""Atomic models: descriptor + fitting + output bias; forces and virials by autograd."""

from .build import build_model, normalize_model_config
from .energy_model import EnergyModel

__all__ = ["EnergyModel", "build_model", "normalize_model_config"]
