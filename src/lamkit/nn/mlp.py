"""Dense layers, embedding nets and fitting nets with DeePMD-kit's layout and initialisation.

A layer computes ``y = act(x @ W + b)``; with ``resnet`` it adds ``x`` (or ``[x, x]`` when the
output is twice as wide), optionally scaled by a learned per-channel time step ``idt``. Weights
are stored as ``[in, out]`` so checkpoints of the reference map one to one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import did_you_mean
from . import silut

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "softplus": torch.nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "gelu": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_tf": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "silu": silut.silu,
    "linear": lambda x: x,
    "none": lambda x: x,
}

_DTYPES = {
    "float64": torch.float64,
    "double": torch.float64,
    "default": torch.float64,
    "float32": torch.float32,
    "single": torch.float32,
}


def activation(name: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` (case-insensitive; None means linear)."""
    key = "linear" if name is None else str(name).lower()
    if key.startswith(silut.PREFIXES):
        return silut.silut(key)
    if key not in _ACTIVATIONS:
        raise ConfigError(
            f"unknown activation_function '{name}'; known: {', '.join(sorted(_ACTIVATIONS))}."
            + did_you_mean(key, _ACTIVATIONS)
        )
    return _ACTIVATIONS[key]


def to_dtype(precision: str) -> torch.dtype:
    """torch dtype of a DeePMD-kit ``precision`` string ("float64", "float32", "default")."""
    key = str(precision).lower()
    if key not in _DTYPES:
        raise ConfigError(
            f"unknown precision '{precision}'; use one of float64, float32, default."
            + did_you_mean(key, _DTYPES)
        )
    return _DTYPES[key]


def make_generator(seed: int | None, *salt: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and a path of integers, so every sub-network of a
    model gets its own reproducible stream; ``seed=None`` draws from torch's global RNG."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        mixed = int(seed) & 0xFFFFFFFF
        for s in salt:
            mixed = (mixed * 1000003 + int(s) + 1) & 0xFFFFFFFFFFFF
        gen.manual_seed(mixed)
    return gen


class Dense(nn.Module):
    """One layer ``y = act(x W + b)`` with optional residual connection and time step."""

    def __init__(
        self,
        num_in: int,
        num_out: int,
        act: str | None = "tanh",
        resnet: bool = False,
        use_timestep: bool = False,
        bias: bool = True,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
        init: str = "default",
    ):
        super().__init__()
        self.num_in, self.num_out = num_in, num_out
        self.act_name = act
        self.act = activation(act)
        self.resnet = resnet and num_out in (num_in, 2 * num_in)
        self.use_timestep = use_timestep and num_out in (num_in, 2 * num_in)
        self.matrix = nn.Parameter(torch.empty(num_in, num_out, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(num_out, dtype=dtype)) if bias else None
        self.idt = nn.Parameter(torch.empty(num_out, dtype=dtype)) if self.use_timestep else None
        self.reset_parameters(generator, init)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None, init: str = "default"):
        if init == "final":
            self.matrix.zero_()
            if self.bias is not None:
                self.bias.zero_()
        elif init == "glorot":
            bound = math.sqrt(6.0 / (self.num_in + self.num_out))
            self.matrix.uniform_(-bound, bound, generator=generator)
            if self.bias is not None:
                self.bias.zero_()
        else:
            self.matrix.normal_(
                0.0, 1.0 / math.sqrt(self.num_in + self.num_out), generator=generator
            )
            if self.bias is not None:
                self.bias.normal_(0.0, 1.0, generator=generator)
        if self.idt is not None:
            self.idt.normal_(0.1, 0.001, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            y = self.act(torch.matmul(x, self.matrix) + self.bias)
        else:
            y = self.act(torch.matmul(x, self.matrix))
        if self.idt is not None:
            y = y * self.idt
        if self.resnet:
            if self.num_out == self.num_in:
                y = y + x
            else:  # y + [x, x] without materialising the concatenation
                y = (y.unflatten(-1, (2, self.num_in)) + x.unsqueeze(-2)).flatten(-2)
        return y


class EmbeddingNet(nn.Module):
    """A stack of residual ``Dense`` layers ``in -> neuron[0] -> ... -> neuron[-1]``; the output
    is the last hidden layer (no linear head)."""

    def __init__(
        self,
        num_in: int,
        neuron: list[int],
        act: str = "tanh",
        resnet_dt: bool = False,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
        bias: bool = True,
    ):
        super().__init__()
        sizes = [num_in, *neuron]
        self.layers = nn.ModuleList(
            Dense(
                a,
                b,
                act,
                resnet=True,
                use_timestep=resnet_dt,
                bias=bias,
                dtype=dtype,
                generator=generator,
            )
            for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.dim_out = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class FittingNet(EmbeddingNet):
    """``EmbeddingNet(in, neuron)`` followed by a linear head ``neuron[-1] -> num_out``."""

    def __init__(
        self,
        num_in: int,
        num_out: int,
        neuron: list[int],
        act: str = "tanh",
        resnet_dt: bool = True,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
        bias_out: bool = True,
    ):
        super().__init__(num_in, neuron, act, resnet_dt, dtype, generator)
        last = neuron[-1] if neuron else num_in
        self.layers.append(
            Dense(
                last, num_out, None, resnet=False, bias=bias_out, dtype=dtype, generator=generator
            )
        )
        self.dim_out = num_out
