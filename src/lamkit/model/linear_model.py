"""Linear combination of DP energy models and pair tables (the reference's ``linear_ener``
model, e.g. a DPA-1 model plus a D3 dispersion table, or two DP models).

Per atom, ``E = sum_k w_k (E_k + b_k) + b``: model 0 is a DP model (its bias
``dp_out_bias``); the others, in the input's order (``members``), are pair tables
(``pair_tables.<i>``) and further DP models (``dp_models.<i>``, :class:`LinearMember`), each
with its own ``out_bias``; ``b`` is the combination's ``out_bias`` (the one training statistics
set, as in the reference; every DP member gets its own descriptor statistics) and the weights
``w_k`` come from ``weights`` ("sum": all 1, "mean": all 1/n, or a list). The neighbour
list is built once for the largest cutoff and ``sel`` (mixed types, sorted by distance); each
member keeps its neighbours within its own
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


class LinearMember(EnergyModel):
    """A DP model after the first of a ``linear_ener`` combination: the reference's
    DPAtomicModel at ``models.<k>`` (its names have no ``atomic_model.`` level)."""

    def __init__(self, descriptor, fitting, type_map, atom_exclude_types=(), config=None):
        super().__init__(descriptor, fitting, type_map, atom_exclude_types, config)
        del self.min_nbor_dist  # the combination keeps it

    REF_NAMES = RefNames(
        names=(("out_bias", "out_bias"), ("out_std", "out_std")),
        children=(("descriptor", "descriptor"), ("fitting", "fitting_net")),
    )


class LinearEnergyModel(EnergyModel):
    """DP energy models plus pair tables, weighted."""

    def __init__(
        self, descriptor, fitting, type_map, atom_exclude_types=(), config=None, members=()
    ):
        super().__init__(descriptor, fitting, type_map, atom_exclude_types, config)
        self.dp_models = nn.ModuleList(members)
        tables = self.config.get("pair_tables", [])
        self.order = list(self.config.get("members") or ["pairtab"] * len(tables))
        if self.order.count("dp") != len(self.dp_models):
            raise ValueError(f"linear_ener: {len(self.dp_models)} DP members for {self.order}")
        self.pair_tables = nn.ModuleList(
            PairTable(t["tab_file"], t["rcut"], self.ntypes) for t in tables
        )
        self.table_sel = [int(t["sel"]) for t in tables]
        for table in self.pair_tables:
            table.register_buffer("out_bias", torch.zeros(self.ntypes, 1, dtype=torch.float64))
        self.register_buffer("dp_out_bias", torch.zeros(self.ntypes, 1, dtype=torch.float64))
        n = 1 + len(self.order)
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
        members = [m.descriptor.rcut for m in self.dp_models]
        return max([self.descriptor.rcut, *members, *(t.rcut for t in self.pair_tables)])

    @property
    def sel(self) -> list[int]:
        members = [sum(m.descriptor.sel) for m in self.dp_models]
        return [max([sum(self.descriptor.sel), *members, *self.table_sel])]

    @property
    def mixed_types(self) -> bool:
        return True

    def neighbor_builder(self, cache: bool = False) -> NeighborBuilder:
        return NeighborBuilder(self.rcut, self.sel, True, cache=cache)

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
        rr = pair_distances(ext_coord, nlist).detach()
        dp_nl = member_nlist(rr, nlist, self.descriptor.rcut, sum(self.descriptor.sel))
        dp_atom, mask = super().atomic_outputs(
            ext_coord, ext_atype, dp_nl, mapping, fparam, aparam, chunking, descriptor_inputs
        )
        atype = ext_atype[:, : nlist.shape[1]].clamp(min=0)
        atom = self.weights[0] * dp_atom
        tables, dps = iter(zip(self.pair_tables, self.table_sel)), iter(self.dp_models)
        for w, kind in zip(self.weights[1:], self.order):
            if kind == "pairtab":
                table, nsel = next(tables)
                nl = member_nlist(rr, nlist, table.rcut, nsel)
                atom = atom + w * (table(ext_coord, ext_atype, nl) + table.out_bias[atype])
            else:  # a DP member: its own list, descriptor, fitting and bias
                member = next(dps)
                nl = member_nlist(rr, nlist, member.descriptor.rcut, sum(member.descriptor.sel))
                e, _ = member.atomic_outputs(
                    ext_coord, ext_atype, nl, mapping, fparam, aparam, chunking
                )
                atom = atom + w * e
        atom = atom + self.out_bias[atype]
        return atom * mask.unsqueeze(-1).to(atom.dtype), mask

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = (*EnergyModel.TYPE_ROWS, TypeRows("dp_out_bias"))

    @property
    def REF_NAMES(self) -> RefNames:  # the members' places depend on their number
        """The reference's LinearEnergyAtomicModel: models.0 is the DP model, models.<k> the
        pair table pair_tables.<k-1>; the combination's bias is out_bias, the members' out_std
        are not used."""
        places, count = [], {"pairtab": 0, "dp": 0}
        for i, kind in enumerate(self.order, 1):
            name = "pair_tables" if kind == "pairtab" else "dp_models"
            places.append((f"{name}.{count[kind]}", f"atomic_model.models.{i}"))
            count[kind] += 1
        return RefNames(
            names=(*EnergyModel.REF_NAMES.names, ("dp_out_bias", "atomic_model.models.0.out_bias")),
            ignore=("atomic_model.models.*.out_std",),
            children=(
                ("descriptor", "atomic_model.models.0.descriptor"),
                ("fitting", "atomic_model.models.0.fitting_net"),
                *places,
            ),
        )
