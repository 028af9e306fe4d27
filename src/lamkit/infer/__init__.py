"""Inference: DeePMD-kit's ``DeepPot`` API, an ASE calculator, ``show`` and ``freeze``."""

from .calculator import DP, LamCalculator
from .deep_pot import AtomBudget, DeepPot
from .freeze import freeze
from .show import describe_model, format_description, parameter_counts

__all__ = [
    "DP",
    "AtomBudget",
    "DeepPot",
    "LamCalculator",
    "describe_model",
    "format_description",
    "freeze",
    "parameter_counts",
]
