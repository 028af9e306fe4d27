"""DP energy model with a short-range tabulated repulsion (the reference's DPZBLModel,
``use_srtab`` with ``smin_alpha``, ``sw_rmin``, ``sw_rmax``).

Per atom, ``E = (1 - w) (E_dp + b_dp) + w (E_tab + b_tab) + b``: ``E_dp + b_dp`` is the
standard model's atomic energy (its bias ``dp_out_bias``), ``E_tab`` the pair table's (half
the tabulated energies of the neighbours within the descriptor's cutoff), ``b_tab`` and ``b``
the per-type biases of the table (``tab_out_bias``) and of the combination (``out_bias``, the
one training statistics set, as in the reference). The weight
``w`` follows the softmin distance ``s = sum r e^(-r/a) / sum e^(-r/a)`` over the neighbours
(``a = smin_alpha``): 1 below ``sw_rmin``, 0 above ``sw_rmax``, and in between
``-6 u^5 + 15 u^4 - 10 u^3 + 1`` with ``u = (s - sw_rmin) / (sw_rmax - sw_rmin)``.

The table and the weight use the descriptor's neighbour list: the reference's set of
neighbours whenever no type's ``sel`` is saturated (lamkit checks that in its tests).
"""

from __future__ import annotations

import torch

from ..nn.params import RefNames, TypeRows
from .energy_model import EnergyModel
from .pair_tab import PairTable, pair_distances


def switch_weight(rr: torch.Tensor, valid: torch.Tensor, alpha: float, rmin: float,
                  rmax: float) -> torch.Tensor:
    """The table's weight w [nf, nloc] from the pair distances rr [nf, nloc, nnei]."""
    zero = torch.zeros_like(rr)
    ex = torch.exp(-rr / alpha)
    num = torch.where(valid, rr * ex, zero).sum(-1)
    den = torch.where(valid, ex, zero).sum(-1)
    sigma = num / den.clamp(min=1e-20)
    u = (sigma - rmin) / (rmax - rmin)
    smooth = -6 * u**5 + 15 * u**4 - 10 * u**3 + 1
    one = torch.ones_like(sigma)
    coef = torch.where(sigma < rmin, one, torch.where(sigma < rmax, smooth, 0.0 * one))
    return torch.where(sigma != 0, coef, 0.0 * one)


class ZBLEnergyModel(EnergyModel):
    """A standard energy model blended with a pair table at short range."""

    def __init__(self, descriptor, fitting, type_map, atom_exclude_types=(), config=None):
        super().__init__(descriptor, fitting, type_map, atom_exclude_types, config)
        conf = self.config
        self.smin_alpha = float(conf["smin_alpha"])
        self.sw_rmin = float(conf["sw_rmin"])
        self.sw_rmax = float(conf["sw_rmax"])
        self.pair_table = PairTable(conf["use_srtab"], descriptor.rcut, self.ntypes)
        self.register_buffer("tab_out_bias", torch.zeros(self.ntypes, 1, dtype=torch.float64))
        self.register_buffer("dp_out_bias", torch.zeros(self.ntypes, 1, dtype=torch.float64))

    @property
    def fitting_out_bias(self) -> torch.Tensor:
        return self.dp_out_bias

    def atomic_outputs(
        self,
        ext_coord,
        ext_atype,
        nlist,
        mapping,
        fparam=None,
        aparam=None,
        chunking=None,
        descriptor_inputs=None,
    ):
        dp_atom, mask = super().atomic_outputs(
            ext_coord, ext_atype, nlist, mapping, fparam, aparam, chunking, descriptor_inputs
        )
        nloc = nlist.shape[1]
        atype = ext_atype[:, :nloc].clamp(min=0)
        tab_atom = self.pair_table(ext_coord, ext_atype, nlist) + self.tab_out_bias[atype]
        valid = nlist >= 0
        w = switch_weight(
            pair_distances(ext_coord, nlist), valid, self.smin_alpha, self.sw_rmin, self.sw_rmax
        ).unsqueeze(-1)
        atom = (1 - w) * dp_atom + w * tab_atom + self.out_bias[atype]
        return atom * mask.unsqueeze(-1).to(atom.dtype), mask

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    # the reference's DPZBLModel: models.0 is the DP model, models.1 the table; the
    # combination's bias is out_bias, the members' out_std are not used
    TYPE_ROWS = (*EnergyModel.TYPE_ROWS, TypeRows("tab_out_bias"), TypeRows("dp_out_bias"))
    REF_NAMES = RefNames(
        names=(
            *EnergyModel.REF_NAMES.names,
            ("dp_out_bias", "atomic_model.models.0.out_bias"),
            ("tab_out_bias", "atomic_model.models.1.out_bias"),
        ),
        ignore=("atomic_model.models.*.out_std",),
        children=(
            ("descriptor", "atomic_model.models.0.descriptor"),
            ("fitting", "atomic_model.models.0.fitting_net"),
            ("pair_table", "atomic_model.models.1"),
        ),
    )
