"""The Hessian of the energy with respect to the local coordinates, for Hessian training.

``H[f, 3i + a, 3j + b] = d2E_f / dx_{i,a} dx_{j,b}`` [nf, 3 nloc, 3 nloc] eV/Å^2, the output
DeePMD-kit 3.2 calls ``hessian`` (``energy_derv_r_derv_r``). The energy is a function of the
extended (ghost) coordinates; every periodic image ``k`` of atom ``i`` moves with it
(``dR^ext_k / dx_i = 1``), so derivatives with respect to the images are summed onto their
local atom, on both axes, exactly as the forces are.

A model computes it once :func:`enable_hessian` has switched it on (the ``ener`` loss does so
when ``start_pref_h`` or ``limit_pref_h`` is non-zero); the switch is the model config's
``hessian_mode``, kept in checkpoints and frozen models like the reference's.
"""

from __future__ import annotations

import torch

HESSIAN_MODE = "hessian_mode"  # model config key (the reference's name)


def local_hessian(
    force: torch.Tensor,
    ext_coord: torch.Tensor,
    mapping: torch.Tensor,
    create_graph: bool = False,
) -> torch.Tensor:
    """``-dF/dx`` [nf, 3 nloc, 3 nloc] from local forces [nf, nloc, 3] that are differentiable
    (built with ``create_graph=True``) with respect to ``ext_coord`` [nf, nall, 3];
    ``mapping`` [nf, nall] is the local atom of each extended atom.

    One backward pass per row (3 nloc of them, each over all frames at once: frames do not
    interact). ``create_graph``: keep the graph, so that a loss on the Hessian can be
    differentiated with respect to the model parameters (training)."""
    nf, nloc, _ = force.shape
    flat = force.reshape(nf, 3 * nloc)
    idx3 = mapping.unsqueeze(-1).expand(-1, -1, 3)
    rows = []
    for c in range(3 * nloc):
        (grad,) = torch.autograd.grad(
            [flat[:, c].sum()],
            [ext_coord],
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
        )
        if grad is None:  # this force component does not depend on any coordinate
            rows.append(flat.new_zeros(nf, 3 * nloc))
            continue
        row = grad.new_zeros(nf, nloc, 3).scatter_add(1, idx3, grad)
        rows.append(-row.reshape(nf, 3 * nloc))
    return torch.stack(rows, dim=1)


def has_hessian(model) -> bool:
    """Whether ``model`` outputs the Hessian (its config's ``hessian_mode``)."""
    return bool(getattr(model, "config", {}).get(HESSIAN_MODE, False))


def enable_hessian(model, on: bool = True) -> None:
    """Make an energy model output ``hessian`` from now on (or stop, with ``on=False``).

    The switch is written into ``model.config`` (in place: the trainer saves that dict), so
    checkpoints and frozen models of the run reload as Hessian models."""
    from ..errors import ConfigError

    output_def = getattr(model, "output_def", None)
    if on and not getattr(output_def, "r_differentiable", False):
        raise ConfigError(
            "loss/start_pref_h: Hessian supervision needs an energy model "
            f"(fitting_net/type 'ener'); this is a {type(model).__name__}"
        )
    model.config[HESSIAN_MODE] = bool(on)
