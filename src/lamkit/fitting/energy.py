"""Energy fitting: one number per atom, summed to the total energy."""

from __future__ import annotations

from ..config.schema import Arg
from ..errors import ConfigError
from .base import COMMON_ARGS, FITTINGS, InvariantFitting
from .output_def import OutputDef


@FITTINGS.register("ener", "energy")
class EnergyFitting(InvariantFitting):
    ARGS = (*COMMON_ARGS, Arg("atom_ener", (list,), []))
    var_name = "energy"

    def __init__(self, ntypes: int, dim_descrpt: int, mixed_types: bool, atom_ener=(), **kw):
        if atom_ener and any(a is not None for a in atom_ener):
            raise ConfigError(
                "model/fitting_net/atom_ener: vacuum-energy removal is not supported yet; "
                "use model/preset_out_bias instead"
            )
        super().__init__(ntypes, dim_descrpt, 1, mixed_types, **kw)

    def output_def(self) -> OutputDef:
        return OutputDef(
            "energy", (1,), "atom_energy", "energy", "energy", "atom_ener",
            r_differentiable=True,
            kind="energy",
        )
