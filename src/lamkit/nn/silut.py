"""SiLU with a tanh tail (DeePMD-kit's ``silut:THRESHOLD`` / ``custom_silu:THRESHOLD``
activation, DPA-3's default in the reference's examples): ``x sigmoid(x)`` below the threshold
``t``, above it ``tanh(s (x - t)) + silu(t)`` with ``s = silu'(t)``, so the value and the slope
are continuous at ``t`` and the output stays bounded.

Eagerly, the tail is computed only when some element reaches the threshold (rare for DPA-3's
``silut:10``): the values and every derivative are the same, and the activation of the large
angle tensors costs one pass instead of seven. Captured graphs always take both branches."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import ConfigError
from .tracing import capturing

PREFIXES = ("silut", "custom_silu")


def silut(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation named ``silut`` (threshold 3) or ``silut:T`` (also ``custom_silu``)."""
    _, sep, tail = name.partition(":")
    try:
        threshold = float(tail) if sep else 3.0
    except ValueError:
        raise ConfigError(f"activation_function '{name}': the threshold must be a number") from None
    sig = 1.0 / (1.0 + math.exp(-threshold))
    slope = sig + threshold * sig * (1.0 - sig)
    const = threshold * sig

    def fn(x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.silu(x)
        over = x >= threshold
        if not capturing() and not bool(over.any()):
            return y
        return torch.where(over, torch.tanh(slope * (x - threshold)) + const, y)

    return fn
