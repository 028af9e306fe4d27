"""A frame's total charge and spin multiplicity as DPA-3 input (``add_chg_spin_ebd``).

Each frame carries ``charge_spin = [charge, spin]`` (integers: charge in [-100, 99], spin in
[0, 99]); both index an embedding table of ``n_dim`` columns, the two rows are mixed by one
linear layer and the activation, and the result is added to every atom's type embedding before
the repflow layers (the reference's DPA-3; its OpenLAM molecule model DPA3-Omol-Large uses it).
``default_chg_spin`` is used for frames without the input.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...nn.mlp import Dense, activation
from ...nn.params import RefNames
from ...nn.type_embedding import TypeEmbedNet

CHARGES = (-100, 99)
SPINS = (0, 99)


class IndexEmbedNet(TypeEmbedNet):
    """An embedding table indexed by a number, not by atom type (no rows follow a type map)."""

    TYPE_ROWS = ()


class ChargeSpinEmbedding(nn.Module):
    def __init__(self, dim: int, act: str, default, dtype, generators, where: str):
        super().__init__()
        if default is not None and (not isinstance(default, (list, tuple)) or len(default) != 2):
            raise ConfigError(f"{where}/default_chg_spin: expected [charge, spin], got {default}")
        self.chg_embedding = IndexEmbedNet(200, dim, False, dtype, generators[0])
        self.spin_embedding = IndexEmbedNet(100, dim, False, dtype, generators[1])
        self.mix_cs_mlp = Dense(2 * dim, dim, None, dtype=dtype, generator=generators[2])
        self.act = activation(act)
        self.default = None if default is None else [float(x) for x in default]

    def forward(self, charge_spin: torch.Tensor | None, nf: int) -> torch.Tensor:
        """``charge_spin`` [nf, 2] (or None: the default) -> [nf, 1, dim] to add to the atoms'
        type embeddings."""
        weight = self.mix_cs_mlp.matrix
        if charge_spin is None:
            if self.default is None:
                raise ValueError(
                    "this DPA-3 model takes each frame's charge and spin (add_chg_spin_ebd) "
                    "and has no default_chg_spin: pass charge_spin=[charge, spin] per frame"
                )
            charge_spin = torch.tensor([self.default] * nf, device=weight.device)
        cs = charge_spin.reshape(nf, 2).to(weight.device)
        charge, spin = cs[:, 0].to(torch.int64), cs[:, 1].to(torch.int64)
        for what, v, (lo, hi) in (("charge", charge, CHARGES), ("spin", spin, SPINS)):
            if bool((v < lo).any() or (v > hi).any()):
                raise ValueError(f"{what} must lie in [{lo}, {hi}]; got {v.tolist()}")
        rows = torch.cat([self.chg_embedding(charge + 100), self.spin_embedding(spin)], dim=-1)
        return self.act(self.mix_cs_mlp(rows)).unsqueeze(1)

    # --- declarations (lamkit.nn.params): the reference keeps these at the descriptor level --
    REF_NAMES = RefNames(names=(("mix_cs_mlp.*", "mix_cs_mlp.*"),))
