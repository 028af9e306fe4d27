"""Type-sorted networks without data-dependent shapes, for tracing (:mod:`.export_pt2`).

se_e2_a (``type_one_side=False``) and per-type fitting nets pick the rows of each atom type
with ``nonzero`` and run that type's network on them: shapes that depend on the atom types,
which ``torch.export`` cannot keep symbolic. Inside :func:`dense_type_selection` the model
instead runs every type's network on all rows and keeps each row's own result with
``torch.where``: the same numbers (row-wise networks; rounding of the matrix products may
differ in the last bit) with static shapes, for ``ntypes`` times the network work.
"""

from __future__ import annotations

import contextlib

import torch

from .. import keys
from ..descriptor.se_e2_a import SeA
from ..fitting.base import InvariantFitting


def _dense_se_a_rows(desc: SeA):
    def rows(ext_coord, ext_atype, nlist, start: int) -> dict[str, torch.Tensor]:
        nf, nloc, nnei = nlist.shape
        rr, atype = desc.normalized_env(ext_coord, ext_atype, nlist, start)
        rr = rr.reshape(nf * nloc, nnei, 4)
        flat = atype.reshape(-1, 1, 1)
        xyz = rr.new_zeros(nf * nloc, 4, desc.dim_emb)
        for ti in range(desc.ntypes):
            part = desc._block(rr, lambda tj, ti=ti: desc.embeddings[ti + desc.ntypes * tj])
            xyz = xyz + torch.where(flat == ti, part, 0.0)
        xyz = xyz / desc.nnei
        xyz_t = xyz.transpose(1, 2)
        out = torch.matmul(xyz_t, xyz[:, :, : desc.axis_neuron])
        return {
            keys.DESCRIPTOR: out.reshape(nf, nloc, desc.dim_out),
            "rot_mat": xyz_t[:, :, 1:4].reshape(nf, nloc, desc.dim_emb, 3),
        }

    return rows


def _dense_fitting_forward(fit: InvariantFitting):
    def forward(desc, atype, fparam=None, aparam=None) -> dict[str, torch.Tensor]:
        x = fit._inputs(desc, fparam, aparam)
        out = None
        for t, net in enumerate(fit.nets):
            part = torch.where((atype == t).unsqueeze(-1), net(x), 0.0)
            out = part if out is None else out + part
        out = out + fit.bias_atom[atype.clamp(min=0)]
        keep = atype >= 0
        for t in fit.exclude_types:
            keep = keep & (atype != t)
        return {fit.var_name: out * keep.unsqueeze(-1).to(out.dtype)}

    return forward


def supported(model) -> bool:
    """Whether :func:`dense_type_selection` covers every type-sorted part of ``model``."""
    desc, fit = model.descriptor, model.fitting
    desc_ok = desc.mixed_types or (type(desc) is SeA)
    fit_ok = getattr(fit, "mixed_types", True) or type(fit).forward is InvariantFitting.forward
    return desc_ok and fit_ok


@contextlib.contextmanager
def dense_type_selection(model):
    """Within the context, ``model``'s type-sorted descriptor/fitting run densely (see the
    module doc); the instance is restored afterwards."""
    desc, fit = model.descriptor, model.fitting
    patched = []
    if type(desc) is SeA and not desc.type_one_side:
        desc._rows = _dense_se_a_rows(desc)
        patched.append((desc, "_rows"))
    if not getattr(fit, "mixed_types", True) and isinstance(fit, InvariantFitting):
        fit.forward = _dense_fitting_forward(fit)
        patched.append((fit, "forward"))
    try:
        yield
    finally:
        for obj, name in patched:
            delattr(obj, name)
