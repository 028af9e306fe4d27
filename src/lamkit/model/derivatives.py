"""Forces, virials and the Hessian by automatic differentiation through the extended (ghost)
atoms (the Hessian: see :mod:`lamkit.model.hessian`)."""

from __future__ import annotations

import torch


def forces_and_virials(
    energy: torch.Tensor,
    atom_energy: torch.Tensor,
    ext_coord: torch.Tensor,
    mapping: torch.Tensor,
    nloc: int,
    do_virial: bool = True,
    do_atomic_virial: bool = False,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Forces and virials from ``energy`` [nf, 1] differentiable w.r.t. ``ext_coord``.

    ``F^ext = -dE/dR^ext``; local forces add the forces on all images of an atom. The virial is
    ``W = sum_k F^ext_k (x) R^ext_k`` (element (a, b) = F_a R_b, flattened row-major); the atomic
    virial adds DeePMD-kit's zero-sum correction ``+d(sum_i R_i e_i)/dR^ext`` (local R held
    fixed), giving ``W_k = -sum_i de_i/dR_k (x) (R_k - R_i)``, so that per-atom
    values match the reference.
    """
    nf, nall, _ = ext_coord.shape
    need_graph = create_graph or do_atomic_virial
    grad = torch.autograd.grad(
        [energy.sum()], [ext_coord], create_graph=create_graph, retain_graph=need_graph or None
    )[0]
    ext_force = -grad
    idx3 = mapping.unsqueeze(-1).expand(-1, -1, 3)
    force = ext_force.new_zeros(nf, nloc, 3).scatter_add(1, idx3, ext_force)
    out = {"force": force, "extended_force": ext_force}
    if do_virial or do_atomic_virial:
        ext_vir = ext_force.unsqueeze(-1) * ext_coord.unsqueeze(-2)  # [nf, nall, 3, 3]
        out["virial"] = ext_vir.sum(1).reshape(nf, 9)
        if do_atomic_virial:
            loc = ext_coord[:, :nloc].detach()
            ce = (loc * atom_energy).sum(1)  # [nf, 3]
            corr = []
            for a in range(3):
                g = torch.autograd.grad(
                    [ce[:, a].sum()], [ext_coord], retain_graph=True, create_graph=create_graph
                )[0]
                corr.append(g.unsqueeze(-1))
            ext_vir = ext_vir + torch.cat(corr, dim=-1)
            idx9 = mapping.unsqueeze(-1).expand(-1, -1, 9)
            out["atom_virial"] = ext_vir.new_zeros(nf, nloc, 9).scatter_add(
                1, idx9, ext_vir.reshape(nf, nall, 9)
            )
    return out


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
