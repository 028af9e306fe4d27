"""The inference path of the repformer g2 attention (``SmoothAttentionWeights``: in-place
softmax and a hand-written backward, used in eval mode) against the plain autograd ops of the
training path: first and second derivatives of the function itself, and whole-model energies,
forces and virials with attention weights large enough to matter."""

from __future__ import annotations

import pytest
import torch

from lamkit.descriptor.dpa2.repformer_layer import SmoothAttentionWeights
from lamkit.testing import standard_system
from lamkit.testing.factories import make_dpa2
from lamkit.testing.physics import _compare, predict

pytestmark = pytest.mark.usefixtures("one_thread")


def plain(a, pre, shift, post):
    return torch.softmax(torch.addcmul(shift, a, pre), dim=-1)[..., : post.shape[-1]] * post


def inputs(extra_column: bool, seed=0):
    gen = torch.Generator().manual_seed(seed)
    nf, nloc, nnei, nh = 2, 3, 5, 2
    nk = nnei + int(extra_column)

    def rnd(*shape, scale=1.0):
        x = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        return x.requires_grad_(True)

    return (
        rnd(nf, nloc, nnei, nh, nk, scale=3.0),
        rnd(nf, nloc, nnei, 1, nk),
        rnd(nf, nloc, nnei, 1, nk, scale=5.0),
        rnd(nf, nloc, nnei, 1, nnei),
    )


@pytest.mark.parametrize("extra_column", [False, True])
def test_first_and_second_derivatives(extra_column):
    args = inputs(extra_column)
    assert torch.autograd.gradcheck(SmoothAttentionWeights.apply, args)
    assert torch.autograd.gradgradcheck(SmoothAttentionWeights.apply, args)


@pytest.mark.parametrize("extra_column", [False, True])
def test_matches_plain_ops(extra_column):
    args = inputs(extra_column, seed=1)
    fused = SmoothAttentionWeights.apply(*args)
    ref = plain(*args)
    torch.testing.assert_close(fused, ref, rtol=1e-13, atol=1e-15)
    gout = torch.randn(fused.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    g_fused = torch.autograd.grad(fused, args, gout)
    g_ref = torch.autograd.grad(ref, args, gout)
    for name, x, y in zip(("a", "pre", "shift", "post"), g_fused, g_ref):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-13, msg=f"gradient of {name}")


def test_softmax_is_stable_for_large_logits():
    a, pre, shift, post = (x.detach() for x in inputs(True, seed=3))
    a[0, 0, 0, 0, 0] = 1e4  # exp overflows without the row maximum
    out = SmoothAttentionWeights.apply(a, pre.abs() + 1.0, shift, post)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, plain(a, pre.abs() + 1.0, shift, post), rtol=1e-13, atol=0)


@pytest.mark.parametrize("update_h2", [False, True])
def test_eval_mode_model_equals_training_mode(update_h2):
    """Eval mode (inference path) and training mode (plain ops) give the same energies,
    forces and virials; residual weights of 0.5 make the attention a large part of them."""
    model = make_dpa2(
        update_g2_has_attn=True, update_h2=update_h2, update_residual=0.5, update_g1_has_attn=True
    )
    system = standard_system("cubic", 2, model.descriptor.rcut, seed=4)
    train = predict(model.train(), system)
    evaluated = predict(model.eval(), system)
    _compare("eval vs train mode", evaluated, train, 1e-12, 1e-13)
    # and the attention really contributes: switching it off changes the forces
    for layer in model.descriptor.repformers.layers:
        if layer.g2_residual:
            torch.nn.init.zeros_(layer.g2_residual[-1])
    changed = predict(model, system)
    assert abs(changed["force"] - evaluated["force"]).max() > 1e-6
