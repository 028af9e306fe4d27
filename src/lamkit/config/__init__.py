"""Typed, validated configs; reading DeePMD-kit v3 input files (JSON or YAML)."""

from .input import load_input, normalize_input
from .schema import REQUIRED, Arg, normalize

__all__ = ["REQUIRED", "Arg", "load_input", "normalize", "normalize_input"]
