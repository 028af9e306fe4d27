"""Fitting nets; importing this package registers the built-in fittings."""

from . import dos, energy, population, property, tensor  # noqa: F401
from .base import FITTINGS, InvariantFitting, build_fitting
from .output_def import OutputDef

__all__ = ["FITTINGS", "InvariantFitting", "OutputDef", "build_fitting"]
