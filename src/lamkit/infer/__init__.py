"""Inference: DeePMD-kit's ``DeepPot``/``DeepProperty``/``DeepDipole``/``DeepPolar`` APIs, an
ASE calculator, model ensembles (``Ensemble``, ``lam model-devi``), ``show`` and ``freeze``."""

from .batch import BatchOutput
from .budget import AtomBudget
from .calculator import DP, LamCalculator
from .deep_eval import DeepEval
from .deep_pot import DeepPot
from .deep_property import DeepDipole, DeepDOS, DeepPolar, DeepProperty, open_model
from .ensemble import Ensemble, EnsembleCalculator, EnsembleOutput
from .freeze import freeze
from .show import describe_model, format_description, parameter_counts

__all__ = [
    "DP",
    "AtomBudget",
    "BatchOutput",
    "DeepDOS",
    "DeepDipole",
    "DeepEval",
    "DeepPolar",
    "DeepPot",
    "DeepProperty",
    "Ensemble",
    "EnsembleCalculator",
    "EnsembleOutput",
    "LamCalculator",
    "describe_model",
    "format_description",
    "freeze",
    "open_model",
    "parameter_counts",
]
