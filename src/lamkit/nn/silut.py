"""SiLU with a tanh tail (DeePMD-kit's ``silut:THRESHOLD`` / ``custom_silu:THRESHOLD``
activation, DPA-3's default in the reference's examples): ``x sigmoid(x)`` below the threshold
``t``, above it ``tanh(s (x - t)) + silu(t)`` with ``s = silu'(t)``, so the value and the slope
are continuous at ``t`` and the output stays bounded.

Eagerly on the CPU, the tail is computed only when some element reaches the threshold (rare
for DPA-3's ``silut:10``): the values and every derivative are the same, and the activation of
the large angle tensors costs one pass instead of seven. Captured graphs always take both branches.

:func:`silu` is SiLU whose second derivative (the force loss's double backward, where DPA-3
spends most of its time on the angle tensors) is one short chain of in-place passes instead of
autograd's generic formula; higher derivatives (the Hessian loss) stay exact."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import ConfigError
from .tracing import capturing

PREFIXES = ("silut", "custom_silu")


class _SiluGrad(torch.autograd.Function):
    """``g * silu'(x)`` (``aten::silu_backward``) with its own derivatives."""

    @staticmethod
    def forward(ctx, g, x):
        ctx.save_for_backward(g, x)
        return torch.ops.aten.silu_backward(g, x)

    @staticmethod
    def backward(ctx, gg):
        g, x = ctx.saved_tensors
        s = torch.sigmoid(x)
        # d/dg = silu'(x) gg;  d/dx = g gg silu''(x),  silu'' = s (1 - s) (2 + x (1 - 2 s))
        if torch.is_grad_enabled():  # a higher derivative follows: keep every op recorded
            d_x = g * gg * s * (1 - s) * (2 + x * (1 - 2 * s))
        else:
            d_x = (1 - 2 * s).mul_(x).add_(2).mul_(s).mul_(1 - s).mul_(g).mul_(gg)
        return _SiluGrad.apply(gg, x), d_x


class _Silu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.silu(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _SiluGrad.apply(g, x)


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU; eagerly with the cheap second derivative (see the module docstring)."""
    if capturing():
        return torch.nn.functional.silu(x)
    return _Silu.apply(x)


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
        y = silu(x)
        over = x >= threshold
        # the check costs a device synchronisation, worth it on the CPU only
        if x.device.type == "cpu" and not capturing() and not bool(over.any()):
            return y
        return torch.where(over, torch.tanh(slope * (x - threshold)) + const, y)

    return fn
