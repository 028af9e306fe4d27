"""Fitting nets; importing this package registers the built-in fittings."""

from . import energy  # noqa: F401
from .base import FITTINGS, InvariantFitting, build_fitting

__all__ = ["FITTINGS", "InvariantFitting", "build_fitting"]
