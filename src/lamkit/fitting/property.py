"""Property fitting: ``task_dim`` numbers per atom, summed or averaged to a per-frame property.

DeePMD-kit 3.1+ semantics (``deepmd/pt/model/task/property.py`` and
``atomic_model/property_atomic_model.py``): the fitting net output is a *normalised* value, and
the atomic property is ``y_i = out_i * out_std[t_i] + out_bias[t_i]``, with the statistics
computed from the labels before training (:mod:`lamkit.model.out_stat`):

* ``distinguish_types`` (default true): ``out_bias`` [ntypes, task_dim] by least squares of the
  labels on the type counts (on the type fractions for intensive properties), ``out_std`` the
  standard deviation of the residual, the same for every type;
* otherwise the label mean and std (per atom for extensive properties), the same for every
  type; ``y_i = out_i * out_std[0] + out_bias[0]``.

The per-frame property is the sum over atoms, or the mean over the real atoms of the frame
when ``intensive``. The label file is ``set.*/<property_name>.npy`` ``[nframes, task_dim]``.
"""

from __future__ import annotations

import re

from ..config.schema import Arg
from ..errors import ConfigError
from .base import COMMON_ARGS, FITTINGS, InvariantFitting
from .output_def import OutputDef

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
RESERVED_NAMES = ("energy", "force", "virial", "coord", "box", "type", "mask", "natoms")


@FITTINGS.register("property")
class PropertyFitting(InvariantFitting):
    ARGS = (
        *COMMON_ARGS,
        Arg("task_dim", (int,), 1, doc="numbers per frame (columns of the label file)"),
        Arg("intensive", (bool,), False, doc="reduce by the mean over atoms, not the sum"),
        Arg("property_name", (str,), "property", doc="label file <property_name>.npy"),
        Arg("distinguish_types", (bool,), True),
        Arg("bias_method", (str,), "normal", choices=("normal", "no_bias")),  # v3.0 inputs
    )

    def __init__(
        self,
        ntypes: int,
        dim_descrpt: int,
        mixed_types: bool,
        task_dim: int = 1,
        intensive: bool = False,
        property_name: str = "property",
        distinguish_types: bool = True,
        bias_method: str = "normal",
        **kw,
    ):
        if task_dim < 1:
            raise ConfigError(f"model/fitting_net/task_dim: expected >= 1, got {task_dim}")
        if not _NAME.match(property_name) or property_name in RESERVED_NAMES:
            raise ConfigError(
                f"model/fitting_net/property_name: '{property_name}' cannot name a label file "
                f"(letters, digits, '_', '.', '-'; not one of {', '.join(RESERVED_NAMES)})"
            )
        if bias_method != "normal":
            raise ConfigError(
                "model/fitting_net/bias_method: 'no_bias' (DeePMD-kit v3.0 only) is not "
                "supported; property statistics follow v3.1+ (label mean and std)"
            )
        super().__init__(ntypes, dim_descrpt, task_dim, mixed_types, **kw)
        self.task_dim = task_dim
        self.intensive = intensive
        self.property_name = property_name
        self.distinguish_types = distinguish_types

    @property
    def var_name(self) -> str:  # type: ignore[override]
        return self.property_name

    def output_def(self) -> OutputDef:
        name = self.property_name
        return OutputDef(
            name,
            (self.task_dim,),
            f"atom_{name}",
            name,
            name,
            f"atom_{name}",
            intensive=self.intensive,
            kind="property",
        )

    def apply_out_stat(self, atom, atype, out_bias, out_std):
        """``out * out_std + out_bias``, per type or with type 0's row for every atom."""
        if self.distinguish_types:
            at = atype.clamp(min=0)
            return atom * out_std[at] + out_bias[at]
        return atom * out_std[0] + out_bias[0]
