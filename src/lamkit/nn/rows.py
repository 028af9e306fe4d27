"""Row selection ``x[index]`` and its adjoint (rows added back by index) as two custom
operators that are each other's derivative.

Neighbour features are gathered with these (:func:`lamkit.geometry.env.gather_rows`). In eager
mode they are ``index_select`` and ``index_add_``; as opaque operators they also stay those
ATen kernels inside compiled graphs (:mod:`lamkit.infer.compiled`), where Inductor would
otherwise generate an atomic scatter-add for the backward that is several times slower on CPU.
Both directions are differentiable to any order (force training differentiates the backward).
"""

from __future__ import annotations

import torch


@torch.library.custom_op("lamkit::take_rows", mutates_args=())
def take_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for x [n, d] and index [m] (int64, 0 <= index < n): [m, d]."""
    return x.index_select(0, index)


@take_rows.register_fake
def _(x, index):
    return x.new_empty(index.shape[0], x.shape[1])


@torch.library.custom_op("lamkit::put_rows", mutates_args=())
def put_rows(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Rows of src [m, d] added into a zero [n, d] at ``index`` [m]: the adjoint of
    :func:`take_rows`."""
    return src.new_zeros(n, src.shape[1]).index_add_(0, index, src)


@put_rows.register_fake
def _(src, index, n):
    return src.new_empty(n, src.shape[1])


def _take_setup(ctx, inputs, output):
    x, index = inputs
    ctx.save_for_backward(index)
    ctx.n = x.shape[0]


def _take_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    return put_rows(grad.contiguous(), index, ctx.n), None


def _put_setup(ctx, inputs, output):
    _, index, _ = inputs
    ctx.save_for_backward(index)


def _put_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    return take_rows(grad.contiguous(), index), None, None


take_rows.register_autograd(_take_backward, setup_context=_take_setup)
put_rows.register_autograd(_put_backward, setup_context=_put_setup)
