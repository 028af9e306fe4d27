"""The standard DP energy model: descriptor + fitting + per-type output bias.

Inputs are the keys of :mod:`lamkit.keys`; neighbour data (mapping, shift, nlist) is built by
:class:`lamkit.geometry.NeighborBuilder` outside the model so the model stays a pure function
of tensors (friendly to ``torch.compile`` and export).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from ..descriptor import Descriptor
from ..geometry.neighbor import NeighborBuilder
from .derivatives import forces_and_virials


class EnergyModel(nn.Module):
    """Energy, forces and virials of atomic configurations.

    ``out_bias`` [ntypes, 1] is the per-type energy shift fitted by least squares on the
    training labels; the fitting net learns the remainder.
    """

    output_name = "energy"

    def __init__(
        self,
        descriptor: Descriptor,
        fitting: nn.Module,
        type_map: list[str],
        atom_exclude_types=(),
        config: dict | None = None,
    ):
        super().__init__()
        self.descriptor = descriptor
        self.fitting = fitting
        self.type_map = list(type_map)
        self.ntypes = len(type_map)
        self.atom_exclude_types = list(atom_exclude_types)
        self.config = dict(config or {})
        odim = getattr(fitting, "dim_out", 1)
        self.register_buffer("out_bias", torch.zeros(self.ntypes, odim, dtype=torch.float64))
        self.register_buffer("out_std", torch.ones(self.ntypes, odim, dtype=torch.float64))
        self.register_buffer("min_nbor_dist", torch.tensor(-1.0, dtype=torch.float64))

    # --- what callers need to know ----------------------------------------------------------
    @property
    def rcut(self) -> float:
        return self.descriptor.rcut

    @property
    def sel(self) -> list[int]:
        return self.descriptor.sel

    @property
    def mixed_types(self) -> bool:
        return self.descriptor.mixed_types

    @property
    def dtype(self) -> torch.dtype:
        return self.out_bias.dtype

    def neighbor_builder(self, cache: bool = False) -> NeighborBuilder:
        return NeighborBuilder(self.rcut, self.sel, self.mixed_types, cache=cache)

    # --- forward ----------------------------------------------------------------------------
    def extend(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None,
        nbr: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``extended_coord = coord[mapping] + shift @ cell`` and ``extended_atype``."""
        mapping = nbr[keys.MAPPING]
        idx = mapping.unsqueeze(-1).expand(-1, -1, 3)
        ext = torch.gather(coord, 1, idx)
        if box is not None:
            cell = box.reshape(-1, 3, 3).to(coord.dtype)
            ext = ext + torch.bmm(nbr[keys.SHIFT].to(coord.dtype), cell)
        return ext, torch.gather(atype, 1, mapping)

    def atomic_outputs(self, ext_coord, ext_atype, nlist, mapping, fparam=None, aparam=None):
        nloc = nlist.shape[1]
        atype = ext_atype[:, :nloc]
        desc = self.descriptor(ext_coord, ext_atype, nlist, mapping)
        out = self.fitting(desc[keys.DESCRIPTOR], atype, fparam, aparam)
        atom = out[self.fitting.var_name].to(torch.float64)
        at = atype.clamp(min=0)
        mask = atype >= 0
        for t in self.atom_exclude_types:
            mask = mask & (atype != t)
        atom = (atom + self.out_bias[at]) * mask.unsqueeze(-1).to(atom.dtype)
        return atom, mask

    def forward(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None,
        nbr: dict[str, torch.Tensor],
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        do_force: bool = True,
        do_virial: bool = True,
        do_atomic_virial: bool = False,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Predictions for coord [nf, nloc, 3] Å, atype [nf, nloc], box [nf, 9] Å or None.

        Returns energy [nf, 1], atom_energy [nf, nloc, 1], mask [nf, nloc] and, as asked,
        force [nf, nloc, 3], virial [nf, 9], atom_virial [nf, nloc, 9].
        """
        nloc = coord.shape[1]
        # geometry in float64 whatever the input precision, as the reference does
        coord = coord.detach().to(torch.float64)
        box = None if box is None else box.to(torch.float64)
        ext_coord, ext_atype = self.extend(coord, atype, box, nbr)
        ext_coord = ext_coord.detach().requires_grad_(do_force or do_virial)
        with torch.enable_grad():
            atom_e, mask = self.atomic_outputs(
                ext_coord, ext_atype, nbr[keys.NLIST], nbr[keys.MAPPING], fparam, aparam
            )
            energy = atom_e.sum(1)
            out = {keys.ENERGY: energy, keys.ATOM_ENERGY: atom_e, keys.MASK: mask}
            if do_force or do_virial:
                out.update(
                    forces_and_virials(
                        energy,
                        atom_e,
                        ext_coord,
                        nbr[keys.MAPPING],
                        nloc,
                        do_virial=do_virial,
                        do_atomic_virial=do_atomic_virial,
                        create_graph=create_graph,
                    )
                )
        return out

    def evaluate(self, coord, atype, box=None, fparam=None, aparam=None, **kw):
        """Convenience: build neighbour data and run ``forward`` (inputs as torch tensors)."""
        nbr = self.neighbor_builder()(coord, atype, box)
        nbr = {k: v.to(coord.device) for k, v in nbr.items()}
        return self.forward(coord, atype, box, nbr, fparam, aparam, **kw)
