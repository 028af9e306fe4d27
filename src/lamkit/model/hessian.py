"""The Hessian of the energy with respect to the local coordinates, for Hessian training.

``H[f, 3i + a, 3j + b] = d2E_f / dx_{i,a} dx_{j,b}`` [nf, 3 nloc, 3 nloc] eV/Å^2, the output
DeePMD-kit 3.2 calls ``hessian`` (``energy_derv_r_derv_r``). The energy is a function of the
extended (ghost) coordinates; every periodic image ``k`` of atom ``i`` moves with it
(``dR^ext_k / dx_i = 1``), so derivatives with respect to the images are summed onto their
local atom, on both axes, exactly as the forces are.

A model computes it once :func:`enable_hessian` has switched it on (the ``ener`` loss does so
when ``start_pref_h`` or ``limit_pref_h`` is non-zero); the switch is the model config's
``hessian_mode``, kept in checkpoints and frozen models like the reference's.

The computation (:func:`local_hessian`, :func:`has_hessian`) lives with the forces in
:mod:`lamkit.model.derivatives`, which :class:`~lamkit.model.EnergyModel` builds on; this module
holds the switch, which checks that a model is an ``EnergyModel``.
"""

from __future__ import annotations

from ..errors import ConfigError
from .derivatives import HESSIAN_MODE, has_hessian, local_hessian
from .energy_model import EnergyModel

__all__ = ["HESSIAN_MODE", "enable_hessian", "has_hessian", "local_hessian"]


def enable_hessian(model, on: bool = True) -> None:
    """Make an energy model output ``hessian`` from now on (or stop, with ``on=False``).

    The switch is written into ``model.config`` (in place: the trainer saves that dict), so
    checkpoints and frozen models of the run reload as Hessian models."""
    if on and not isinstance(model, EnergyModel):
        raise ConfigError(
            "loss/start_pref_h: Hessian supervision needs an energy model "
            f"(fitting_net/type 'ener'); this is a {type(model).__name__}"
        )
    model.config[HESSIAN_MODE] = bool(on)
