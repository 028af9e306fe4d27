"""Linear combination of a DP energy model and pair tables (the reference's ``linear_ener``
model, e.g. a DPA-1 model plus a D3 dispersion table).

Per atom, ``E = sum_k w_k (E_k + b_k) + b``: model 0 is the DP model (its bias
``dp_out_bias``), the others are pair tables (``pair_tables.<k-1>``, each with its own
``out_bias``), ``b`` is the combination's ``out_bias`` (the one training statistics set, as
in the reference) and the weights ``w_k`` come from ``weights`` ("sum": all 1, "mean": all
1/n, or a list). The neighbour list is built once for the largest cutoff and
``sel`` (mixed types, sorted by distance); each member keeps its neighbours within its own
cutoff, the nearest ``sel`` of them, as the reference does.
"""

from __future__ import annotations

import torch
from torch import nn

from ..geometry.neighbor import NeighborBuilder
from ..nn.params import RefNames, TypeRows
from .energy_model import EnergyModel
from .pair_tab import PairTable, pair_distances


def member_nlist(rr: torch.Tensor, nlist: torch.Tensor, rcut: float, nsel: int) -> torch.Tensor:
    """The distance-sorted neighbour list cut to ``rcut`` and ``nsel`` slots (-1 padded)."""
    nl = torch.where((nlist >= 0) & (rr <= rcut), nlist, -1)
    if nl.shape[-1] >= nsel:
        return nl[..., :nsel]
    pad = nl.new_full((*nl.shape[:-1], nsel - nl.shape[-1]), -1)
    return torch.cat([nl, pad], dim=-1)


class LinearEnergyModel(EnergyModel):
    """A DP energy model plus pair tables, weighted."""

    def __init__(self, descriptor, fitting, type_map, atom_exclude_types=(), config=None):
        super().__init__(descriptor, fitting, type_map, atom_exclude_types, config)
        tables = self.config.get("pair_tables", [])
        self.pair_tables = nn.ModuleList(
            PairTable(t["tab_file"], t["rcut"], self.ntypes) for t in tables
        )
        self.table_sel = [int(t["sel"]) for t in tables]
        for table in self.pair_tables:
            table.register_buffer("out_bias", torch.zeros(self.ntypes, 1, dtype=torch.float64))
        self.register_buffer("dp_out_bias", torch.zeros(self.ntypes, 1, dtype=torch.float64))
        n = 1 + len(tables)
        weights = self.config.get("weights", "mean")
        if weights == "sum":
            weights = [1.0] * n
        elif weights == "mean":
            weights = [1.0 / n] * n
        self.weights = [float(w) for w in weights]

    @property
    def fitting_out_bias(self) -> torch.Tensor:
        return self.dp_out_bias

    @property
    def rcut(self) -> float:
        return max([self.descriptor.rcut, *(t.rcut for t in self.pair_tables)])

    @property
    def sel(self) -> list[int]:
        return [max([sum(self.descriptor.sel), *self.table_sel])]

    @property
    def mixed_types(self) -> bool:
        return True

    def neighbor_builder(self, cache: bool = False) -> NeighborBuilder:
        return NeighborBuilder(self.rcut, self.sel, True, cache=cache)

    def atomic_outputs(self, ext_coord, ext_atype, nlist, mapping, fparam=None, aparam=None):
        rr = pair_distances(ext_coord, nlist).detach()
        dp_nl = member_nlist(rr, nlist, self.descriptor.rcut, sum(self.descriptor.sel))
        dp_atom, mask = super().atomic_outputs(
            ext_coord, ext_atype, dp_nl, mapping, fparam, aparam
        )
        atype = ext_atype[:, : nlist.shape[1]].clamp(min=0)
        atom = self.weights[0] * dp_atom
        for w, table, nsel in zip(self.weights[1:], self.pair_tables, self.table_sel):
            nl = member_nlist(rr, nlist, table.rcut, nsel)
            atom = atom + w * (table(ext_coord, ext_atype, nl) + table.out_bias[atype])
        atom = atom + self.out_bias[atype]
        return atom * mask.unsqueeze(-1).to(atom.dtype), mask

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = (*EnergyModel.TYPE_ROWS, TypeRows("dp_out_bias"))

    @property
    def REF_NAMES(self) -> RefNames:  # the members' places depend on their number
        """The reference's LinearEnergyAtomicModel: models.0 is the DP model, models.<k> the
        pair table pair_tables.<k-1>; the combination's bias is out_bias, the members' out_std
        are not used."""
        tables = [(f"pair_tables.{k}", f"atomic_model.models.{k + 1}")
                  for k in range(len(self.pair_tables))]
        return RefNames(
            names=(*EnergyModel.REF_NAMES.names, ("dp_out_bias", "atomic_model.models.0.out_bias")),
            ignore=("atomic_model.models.*.out_std",),
            children=(
                ("descriptor", "atomic_model.models.0.descriptor"),
                ("fitting", "atomic_model.models.0.fitting_net"),
                *tables,
            ),
        )
