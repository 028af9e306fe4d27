"""The ``silut:T`` and ``silu`` activations: the eager shortcut (no tail computed when no element
reaches the threshold) and SiLU's own second derivative give the values and gradients of the
plain formula exactly and its second derivatives to rounding; third derivatives (the Hessian
loss) are exact too; captured graphs (make_fx) keep both branches."""

from __future__ import annotations

import math

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from lamkit.nn.mlp import activation


def plain(x: torch.Tensor, t: float) -> torch.Tensor:
    sig = 1.0 / (1.0 + math.exp(-t))
    slope = sig + t * sig * (1.0 - sig)
    tail = torch.tanh(slope * (x - t)) + t * sig
    return torch.where(x >= t, tail, torch.nn.functional.silu(x))


def derivatives(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad((g * torch.linspace(0.5, 2, g.numel()).reshape(g.shape)).sum(), x)
    return y.detach(), g.detach(), h


@pytest.mark.parametrize("t,scale", [(3.0, 1.0), (3.0, 4.0), (10.0, 1.0), (10.0, 8.0)])
def test_silut_equals_the_two_branch_formula(t, scale):
    x = torch.randn(4, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = x * scale
    fn = activation(f"silut:{t}")
    got, want = derivatives(fn, x), derivatives(lambda v: plain(v, t), x)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)  # values
    torch.testing.assert_close(got[1], want[1], rtol=1e-14, atol=1e-16)  # first derivatives
    torch.testing.assert_close(got[2], want[2], rtol=1e-13, atol=1e-15)  # our own second
    # continuity of value and slope at the threshold
    edge = torch.tensor([t - 1e-9, t + 1e-9], dtype=torch.float64)
    y, g, _ = derivatives(fn, edge)
    assert abs(float(y[1] - y[0])) < 1e-8 and abs(float(g[1] - g[0])) < 1e-7


def test_captured_graph_keeps_the_tail():
    fn = activation("silut:3.0")
    graph = make_fx(fn)(torch.zeros(3, dtype=torch.float64))  # no element over the threshold
    x = torch.tensor([-1.0, 2.0, 5.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(graph(x), plain(x, 3.0), rtol=0, atol=0)
    assert "tanh" in graph.code


def test_silu_third_derivative():
    from lamkit.nn.silut import silu

    x = torch.randn(9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x.requires_grad_(True)

    def third(fn):
        (g,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad((g * x).sum(), x, create_graph=True)
        return torch.autograd.grad(h.sum(), x)[0]

    torch.testing.assert_close(third(silu), third(torch.nn.functional.silu), rtol=1e-12, atol=0)
    assert torch.autograd.gradgradcheck(silu, (x,))
