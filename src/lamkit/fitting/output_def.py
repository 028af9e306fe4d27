"""Output definitions: what a fitting net predicts and how the model treats it.

One model path serves every fitting (DeePMD-kit's ``OutputVariableDef`` idea): the fitting
declares its per-atom output shape, whether the model reduces it over atoms (summed, or
averaged over the real atoms when ``intensive``), whether forces and virials follow from it by
autograd (energy only: :meth:`lamkit.model.AtomicModel.forward` computes them exactly then),
the kind of model it makes (``kind``: which inference interface, test and exports apply), and
under which keys the model returns the per-atom and the reduced values and the data provides
their labels.

==========  ========  ===============  ================  =========================  =============
fitting     kind      atom_key         global_key        labels (global / atomic)   reduction
==========  ========  ===============  ================  =========================  =============
ener        energy    atom_energy      energy            energy / atom_ener         sum, + forces
property    property  atom_<name>      <name>            <name> / atom_<name>       sum or mean
population  property  population       total_population  total_population / -       sum
dipole      dipole    dipole           global_dipole     dipole / atomic_dipole     sum
polar       polar     polar            global_polar      polarizability / atomic_…  sum
dos         dos       atom_dos         dos               dos / atom_dos             sum
==========  ========  ===============  ================  =========================  =============
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("energy", "property", "dipole", "polar", "dos")


@dataclass(frozen=True)
class OutputDef:
    """The output variable of a fitting net.

    ``shape`` is per atom (``(1,)`` energy, ``(task_dim,)`` property, ``(3,)`` dipole,
    ``(3, 3)`` polarizability). ``intensive`` outputs are reduced by the mean over the real
    (unmasked) atoms of a frame instead of the sum. ``r_differentiable`` outputs get forces
    and virials by automatic differentiation. ``rank`` says how the output turns when the
    structure is rotated by ``Q``: 0 not at all, 1 as a vector (``v -> Q v``), 2 as a
    rank-2 tensor (``T -> Q T Q^T``). ``kind`` is the kind of model the output makes
    (:data:`KINDS`): it picks the inference interface (``DeepPot`` for "energy",
    ``DeepProperty``, ``DeepDipole``, ``DeepPolar``, ``DeepDOS``), the test metrics and the
    export formats; nothing guesses it from output names or fitting classes.
    """

    name: str
    shape: tuple[int, ...]
    atom_key: str
    global_key: str
    label: str
    atom_label: str | None = None
    reducible: bool = True
    intensive: bool = False
    r_differentiable: bool = False
    rank: int = 0
    kind: str = "property"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"OutputDef.kind: expected one of {KINDS}, got {self.kind!r}")

    @property
    def size(self) -> int:
        """Numbers per atom (the width of ``out_bias``/``out_std``)."""
        return math.prod(self.shape)
