"""Inference for property, dipole and polarizability models, with the interfaces of
``deepmd.infer.DeepProperty``, ``DeepDipole`` and ``DeepPolar``::

    dp = DeepProperty("model.pt")
    (prop,) = dp.eval(coords, cells, atom_types)                       # [nf, task_dim]
    prop, atom_prop = dp.eval(coords, cells, atom_types, atomic=True)  # + [nf, natoms, task_dim]

    DeepDipole("dipole.pt").eval(coords, cells, atom_types)                # [nf, natoms, 3]
    DeepDipole("dipole.pt").eval(coords, cells, atom_types, atomic=False)  # [nf, 3]
    DeepPolar("polar.pt").eval(...)                                         # [nf, (natoms,) 9]

Inputs, chunking and the constructor arguments are those of
:class:`~lamkit.infer.deep_eval.DeepEval`. :func:`open_model` returns the interface that fits a
model file.
"""

from __future__ import annotations

import numpy as np

from .deep_eval import DeepEval, check_kind, model_kind
from .deep_pot import DeepPot


class DeepProperty(DeepEval):
    """Per-frame (and per-atom) properties of a ``property`` model."""

    def _check_model(self, model) -> None:
        check_kind(model, "property", "DeepProperty")

    def get_task_dim(self) -> int:
        return int(self.model.output_def.shape[0])

    @property
    def task_dim(self) -> int:
        return self.get_task_dim()

    def get_intensive(self) -> bool:
        return bool(self.model.output_def.intensive)

    def get_var_name(self) -> str:
        """The property name: the label file is ``<name>.npy``."""
        return self.model.output_def.name

    def eval(
        self,
        coords,
        cells,
        atom_types,
        atomic: bool = False,
        fparam=None,
        aparam=None,
        mixed_type: bool = False,
        **kwargs,
    ) -> tuple[np.ndarray, ...]:
        """``(property [nf, task_dim],)``, and ``atom_property [nf, natoms, task_dim]`` as
        second item if ``atomic``. Inputs as :meth:`DeepPot.eval`; virtual atoms (type -1)
        get zero atomic values and do not count in an intensive mean."""
        _no_extra(kwargs, "DeepProperty")
        coords, cells, atype, fparam, aparam = self._standard_input(
            coords, cells, atom_types, fparam, aparam, mixed_type
        )
        od = self.model.output_def
        names = [od.global_key] + ([od.atom_key] if atomic else [])
        empty = {od.global_key: od.shape, od.atom_key: (0, *od.shape)}
        out = self._evaluate(coords, cells, atype, fparam, aparam, names, empty)
        return tuple(out[n] for n in names)


class DeepTensor(DeepEval):
    """Atomic or global tensors (dipole: 3 numbers, polarizability: 9) of an equivariant
    model."""

    kind = ""

    def _check_model(self, model) -> None:
        check_kind(model, self.kind, type(self).__name__)

    @property
    def output_dim(self) -> int:
        return int(self.model.output_def.size)

    def get_sel_type(self) -> list[int]:
        """Types with atomic outputs (all but ``model/atom_exclude_types``)."""
        return [t for t in range(self.get_ntypes()) if t not in self.model.atom_exclude_types]

    def eval(
        self,
        coords,
        cells,
        atom_types,
        atomic: bool = True,
        fparam=None,
        aparam=None,
        mixed_type: bool = False,
        **kwargs,
    ) -> np.ndarray:
        """Atomic tensors [nf, natoms, output_dim] (zero for virtual and excluded atoms), or
        with ``atomic=False`` their sum [nf, output_dim]."""
        _no_extra(kwargs, type(self).__name__)
        coords, cells, atype, fparam, aparam = self._standard_input(
            coords, cells, atom_types, fparam, aparam, mixed_type
        )
        od = self.model.output_def
        name = od.atom_key if atomic else od.global_key
        empty = {od.global_key: od.shape, od.atom_key: (0, *od.shape)}
        out = self._evaluate(coords, cells, atype, fparam, aparam, [name], empty)[name]
        nf = atype.shape[0]
        return out.reshape(nf, atype.shape[1], -1) if atomic else out.reshape(nf, -1)


class DeepDipole(DeepTensor):
    kind = "dipole"


class DeepPolar(DeepTensor):
    kind = "polar"


class DeepDOS(DeepProperty):
    """Density of states of a ``dos`` model (``deepmd.infer.DeepDOS``): ``eval`` returns
    ``(dos [nf, numb_dos],)`` and with ``atomic`` also ``atom_dos [nf, natoms, numb_dos]``."""

    def _check_model(self, model) -> None:
        check_kind(model, "dos", "DeepDOS")

    def get_numb_dos(self) -> int:
        return self.get_task_dim()

    @property
    def numb_dos(self) -> int:
        return self.get_numb_dos()


INTERFACES = {
    "energy": DeepPot,
    "property": DeepProperty,
    "dipole": DeepDipole,
    "polar": DeepPolar,
    "dos": DeepDOS,
}


def open_model(model_file, **kwargs) -> DeepEval:
    """The inference interface that fits the model: DeepPot, DeepProperty, DeepDipole,
    DeepPolar or DeepDOS (``kwargs``: see :class:`DeepEval`)."""
    from ..model import AtomicModel, load_model

    model = model_file
    if not isinstance(model_file, AtomicModel):
        model = load_model(model_file, head=kwargs.pop("head", None))
        model.requires_grad_(False)
    dp = INTERFACES[model_kind(model)](model, **kwargs)
    if model is not model_file:
        dp.model_file = str(model_file)
    return dp


def _no_extra(kwargs: dict, who: str) -> None:
    for name, value in kwargs.items():
        if value is not None:
            raise ValueError(f"{who}.eval: '{name}' is not supported by lamkit models")
