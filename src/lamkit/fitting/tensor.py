"""Equivariant fittings: atomic dipoles and polarizabilities from the descriptor's rotation
matrix (DeePMD-kit ``deepmd/pt/model/task/dipole.py``, ``polarizability.py``).

With ``G_i = rot_mat_i`` [M1, 3] (the descriptor's equivariant embedding, M1 =
``embedding_width``) and ``o_i`` the fitting net output of atom i:

* dipole: ``o_i`` [M1], ``mu_i = o_i^T G_i`` [3];
* polar, ``fit_diag``: ``o_i`` [M1] scaled by ``scale[t_i]``, ``alpha_i = G_i^T diag(o_i) G_i``;
  otherwise ``o_i`` [M1, M1] scaled, symmetrised ``O = (o + o^T)/2``, ``alpha_i = G_i^T O G_i``.

Both rotate with the structure (``mu -> Q mu``, ``alpha -> Q alpha Q^T``). The model sums them
over atoms to ``global_dipole``/``global_polar``. A dipole takes no output bias; a polar with
``shift_diag`` adds ``scale[t_i] * mean(diag(out_bias[t_i])) * I``.

``sel_type`` is accepted for TensorFlow-era inputs and ignored, as in the reference's PyTorch
backend: select atoms with ``model/atom_exclude_types``.
"""

from __future__ import annotations

import torch

from ..config.schema import Arg
from ..errors import ConfigError
from .base import COMMON_ARGS, FITTINGS, InvariantFitting
from .output_def import OutputDef

_SEL_TYPE = (int, list, type(None))


class _RotatedFitting(InvariantFitting):
    """An invariant fitting whose output is contracted with the descriptor's ``rot_mat``."""

    uses_rot_mat = True

    def __init__(self, ntypes, dim_descrpt, net_dim, mixed_types, embedding_width, **kw):
        kw.pop("sel_type", None)
        kw.pop("r_differentiable", None)
        kw.pop("c_differentiable", None)
        super().__init__(ntypes, dim_descrpt, net_dim, mixed_types, **kw)
        self.embedding_width = int(embedding_width)

    def _rows(self, desc, atype, fparam, aparam, rot_mat):
        if rot_mat is None:
            raise ValueError(f"{type(self).__name__}: needs the descriptor's rot_mat")
        out = super().forward(desc, atype, fparam, aparam)[self.var_name]
        nf, nloc, _ = desc.shape
        g = rot_mat.to(self.dtype).reshape(nf * nloc, self.embedding_width, 3)
        return out.reshape(nf * nloc, -1), g


@FITTINGS.register("dipole")
class DipoleFitting(_RotatedFitting):
    ARGS = (
        *COMMON_ARGS,
        Arg("sel_type", _SEL_TYPE, None, aliases=("dipole_type",)),
        Arg("r_differentiable", (bool,), True),
        Arg("c_differentiable", (bool,), True),
    )
    var_name = "dipole"

    def __init__(self, ntypes, dim_descrpt, mixed_types, embedding_width, **kw):
        super().__init__(ntypes, dim_descrpt, embedding_width, mixed_types, embedding_width, **kw)

    def output_def(self) -> OutputDef:
        return OutputDef(
            "dipole",
            (3,),
            "dipole",
            "global_dipole",
            "dipole",
            "atomic_dipole",
            rank=1,
            kind="dipole",
        )

    def apply_out_stat(self, atom, atype, out_bias, out_std):
        return atom  # the reference applies no bias to dipoles

    def forward(self, desc, atype, fparam=None, aparam=None, rot_mat=None):
        out, g = self._rows(desc, atype, fparam, aparam, rot_mat)
        mu = torch.bmm(out.unsqueeze(1), g).squeeze(1)
        return {self.var_name: mu.reshape(*desc.shape[:2], 3)}


@FITTINGS.register("polar", "polarizability")
class PolarFitting(_RotatedFitting):
    ARGS = (
        *COMMON_ARGS,
        Arg("fit_diag", (bool,), True),
        Arg("scale", (float, list), 1.0),
        Arg("shift_diag", (bool,), True),
        Arg("sel_type", _SEL_TYPE, None, aliases=("pol_type",)),
    )
    var_name = "polar"

    def __init__(
        self,
        ntypes,
        dim_descrpt,
        mixed_types,
        embedding_width,
        fit_diag=True,
        scale=1.0,
        shift_diag=True,
        **kw,
    ):
        m1 = int(embedding_width)
        super().__init__(ntypes, dim_descrpt, m1 if fit_diag else m1 * m1, mixed_types, m1, **kw)
        if isinstance(scale, list):
            if len(scale) != ntypes:
                raise ConfigError(
                    f"model/fitting_net/scale: expected one value per type ({ntypes}), "
                    f"got {len(scale)}"
                )
            values = [float(s) for s in scale]
        else:
            values = [float(scale)] * ntypes
        self.fit_diag, self.shift_diag = fit_diag, shift_diag
        # not in the state dict: the reference rebuilds it from the config as well
        self.register_buffer(
            "scale", torch.tensor(values, dtype=self.dtype).reshape(ntypes, 1), persistent=False
        )

    def output_def(self) -> OutputDef:
        return OutputDef(
            "polar",
            (3, 3),
            "polar",
            "global_polar",
            "polarizability",
            "atomic_polarizability",
            rank=2,
            kind="polar",
        )

    def apply_out_stat(self, atom, atype, out_bias, out_std):
        if not self.shift_diag:
            return atom
        at = atype.clamp(min=0)
        shift = out_bias.reshape(-1, 3, 3).diagonal(dim1=-2, dim2=-1).mean(-1)  # [ntypes]
        shift = shift[at] * self.scale.to(atom.dtype)[at, 0]  # [nf, nloc]
        eye = torch.eye(3, dtype=atom.dtype, device=atom.device).reshape(9)
        return atom + shift.unsqueeze(-1) * eye

    def forward(self, desc, atype, fparam=None, aparam=None, rot_mat=None):
        out, g = self._rows(desc, atype, fparam, aparam, rot_mat)
        out = out * self.scale[atype.clamp(min=0)].reshape(-1, 1)
        m1 = self.embedding_width
        if self.fit_diag:
            og = out.unsqueeze(-1) * g  # diag(o) G: [n, M1, 3]
        else:
            o = out.reshape(-1, m1, m1)
            og = torch.bmm((o + o.transpose(1, 2)) / 2, g)
        alpha = torch.bmm(g.transpose(1, 2), og)
        return {self.var_name: alpha.reshape(*desc.shape[:2], 3, 3)}
