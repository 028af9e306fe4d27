"""Descriptors; importing this package registers every built-in descriptor."""

from . import (
    dpa1,  # noqa: F401
    dpa2,  # noqa: F401  (registers dpa2)
    dpa3,  # noqa: F401  (registers dpa3)
    hybrid,  # noqa: F401  (registers hybrid)
    se_e2_a,  # noqa: F401  (registers se_e2_a / se_a)
    se_e2_r,  # noqa: F401  (registers se_e2_r / se_r)
    se_e3,  # noqa: F401  (registers se_e3 / se_at / se_a_3be / se_t)
    se_e3_tebd,  # noqa: F401
)
from .base import DESCRIPTORS, Descriptor, build_descriptor

__all__ = ["DESCRIPTORS", "Descriptor", "build_descriptor"]
