"""Descriptors; importing this package registers every built-in descriptor."""

from . import se_e2_a  # noqa: F401  (registers se_e2_a / se_a)
from .base import DESCRIPTORS, Descriptor, build_descriptor

__all__ = ["DESCRIPTORS", "Descriptor", "build_descriptor"]
