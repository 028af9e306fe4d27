"""Population fitting ``type: "population"``: the alpha and beta electron populations of every
atom (DeePMD-kit 3.2 ``deepmd/pt/model/task/population.py``, ``model/population_model.py``,
``examples/population``).

An invariant fitting with two outputs per atom (alpha, beta) and no output statistics: the
reference's population atomic model applies no bias, so the net's value is the prediction
(the fitting's own ``bias_atom`` stays zero). The reference's output is per atom only
(``population`` [nf, nloc, 2], not reducible); lamkit also returns the frame totals
``total_population`` [nf, 2] (sum over the real atoms). Label: ``set.*/atomic_population.npy``
[nf, natoms*2] (read by the ``population`` loss). ``numb_aparam``, ``numb_fparam`` and
``dim_case_embd`` work as for the energy fitting.
"""

from __future__ import annotations

from .base import FITTINGS, InvariantFitting
from .output_def import OutputDef


@FITTINGS.register("population")
class PopulationFitting(InvariantFitting):
    var_name = "population"

    def __init__(self, ntypes: int, dim_descrpt: int, mixed_types: bool, **kw):
        super().__init__(ntypes, dim_descrpt, 2, mixed_types, **kw)

    def output_def(self) -> OutputDef:
        # no global label: the output statistics find nothing to fit and stay unused
        return OutputDef(
            "population",
            (2,),
            "population",
            "total_population",
            "total_population",
            reducible=False,
            kind="property",  # evaluated with DeepProperty (per-atom outputs, frame totals)
        )

    def apply_out_stat(self, atom, atype, out_bias, out_std):
        """No statistics: the population model of the reference adds no bias."""
        return atom
