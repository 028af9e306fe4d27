"""The standard DP energy model: the name of an :class:`~lamkit.model.atomic_model.AtomicModel`
whose fitting predicts the energy.

The model has no forward of its own: :meth:`AtomicModel.forward` gives forces and virials
because the energy fitting's output definition is ``r_differentiable``. The class stays for
``isinstance`` checks (energy models versus property, dipole... models) and so that
checkpoints and frozen models pickled with it load unchanged.
"""

from __future__ import annotations

from .atomic_model import AtomicModel


class EnergyModel(AtomicModel):
    """Energy, forces and virials of atomic configurations.

    ``out_bias`` [ntypes, 1] is the per-type energy shift fitted by least squares on the
    training labels; the fitting net learns the remainder. Everything else, forward included,
    is :class:`AtomicModel`'s.
    """
