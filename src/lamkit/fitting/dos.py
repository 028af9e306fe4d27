"""DOS fitting ``type: "dos"``: the electronic density of states on ``numb_dos`` energy grid
points per atom, summed over atoms to the frame's DOS (DeePMD-kit 3.2
``deepmd/pt/model/task/dos.py``, ``model/dos_model.py``).

The fitting is an invariant fitting with ``numb_dos`` outputs; the atomic model adds the
per-type ``out_bias`` (from the ``atom_dos``/``dos`` labels before training, as for every
non-energy output) and does not scale by ``out_std``. Outputs: ``atom_dos`` [nf, nloc,
numb_dos] and ``dos`` [nf, numb_dos]; labels ``set.*/dos.npy`` [nf, numb_dos] and
``set.*/atom_dos.npy`` [nf, natoms*numb_dos]. The reference schema has no ``exclude_types``
or ``use_aparam_as_mask`` for this fitting, and ``precision`` defaults to float64.
"""

from __future__ import annotations

from ..config.schema import Arg
from ..errors import ConfigError
from .base import COMMON_ARGS, FITTINGS, InvariantFitting
from .output_def import OutputDef

_DROPPED = ("use_aparam_as_mask", "exclude_types", "precision")
DOS_ARGS = (
    *(a for a in COMMON_ARGS if a.name not in _DROPPED),
    Arg("precision", (str,), "float64"),
    Arg("numb_dos", (int,), 300, doc="energy grid points of the DOS (NEDOS in VASP)"),
)


@FITTINGS.register("dos")
class DOSFitting(InvariantFitting):
    ARGS = DOS_ARGS
    var_name = "dos"

    def __init__(self, ntypes: int, dim_descrpt: int, mixed_types: bool, numb_dos=300, **kw):
        if numb_dos < 1:
            raise ConfigError(f"model/fitting_net/numb_dos: expected >= 1, got {numb_dos}")
        super().__init__(ntypes, dim_descrpt, numb_dos, mixed_types, **kw)
        self.numb_dos = numb_dos

    def output_def(self) -> OutputDef:
        return OutputDef(
            "dos", (self.numb_dos,), "atom_dos", "dos", "dos", "atom_dos", kind="dos"
        )
