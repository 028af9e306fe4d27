"""``DeepPot``: DeePMD-kit's Python inference API (``deepmd.infer.DeepPot``) on lamkit models.

Inputs and outputs are numpy arrays with the reference's shapes, so scripts written for
DeePMD-kit run unchanged::

    dp = DeepPot("model.pt")
    e, f, v = dp.eval(coords, cells, atom_types)          # [nf, 1], [nf, natoms, 3], [nf, 9]
    e, f, v, ae, av = dp.eval(coords, cells, atom_types, atomic=True)

Units: Å, eV, eV/Å; the virial (eV) is ``W = -sum_k dE/dR_k (x) R_k``, row-major.
Frames are evaluated in chunks whose total atom count stays under a budget, so neighbour data
and autograd graphs are only ever built for one chunk at a time. Frames larger than
``chunk_atoms`` (default 1024, or ``$LAMKIT_CHUNK_ATOMS``) are themselves evaluated in slices
of centre atoms with activation checkpointing (:mod:`lamkit.nn.chunking`): the same numbers,
with per-pair and per-triplet intermediates held for one slice at a time, so a 20,000-atom
water box with DPA-2 small takes a few GB instead of ~30 GB.

This module is the energy interface; the machinery every interface shares is in
:mod:`.deep_eval` (``DeepEval``, the model kind) and :mod:`.budget` (``AtomBudget``), spin
models' evaluation in :mod:`.spin_eval`, the other kinds' interfaces in :mod:`.deep_property`.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import keys
from ..model import AtomicModel
from ..model.hessian import has_hessian
from .batch import BatchOutput, atoms_inputs, evaluate_batch
from .budget import (
    DEFAULT_BATCH_ATOMS,
    DEFAULT_CHUNK_ATOMS,
    MAX_BATCH_ATOMS,
    AtomBudget,
    default_chunk_atoms,
)
from .budget import is_oom as _is_oom
from .deep_eval import DeepEval, check_kind, model_kind
from .spin_eval import eval_spin

# names that lived here before the split, for their importers
__all__ = [
    "DEFAULT_BATCH_ATOMS",
    "DEFAULT_CHUNK_ATOMS",
    "MAX_BATCH_ATOMS",
    "AtomBudget",
    "DeepEval",
    "DeepPot",
    "_is_oom",
    "check_kind",
    "default_chunk_atoms",
    "model_kind",
]


class DeepPot(DeepEval):
    """Energy, forces and virials from a model file, with ``deepmd.infer.DeepPot``'s interface
    (constructor arguments: see :class:`DeepEval`)."""

    def _check_model(self, model: AtomicModel) -> None:
        check_kind(model, "energy", "DeepPot")

    @property
    def has_hessian(self) -> bool:
        """Whether ``eval`` also returns the Hessian (a model trained with ``start_pref_h``)."""
        return has_hessian(self.model)

    def get_has_hessian(self) -> bool:
        return self.has_hessian

    @property
    def has_spin(self) -> bool:
        """Whether ``eval`` takes atomic spins and also returns magnetic forces (a spin model,
        :mod:`lamkit.infer.spin_eval`)."""
        return bool(getattr(self.model, "extra_inputs", ()))

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
        """Energy, force and virial of ``nframes`` configurations of ``natoms`` atoms.

        Args:
            coords: [nf, natoms*3] or [nf, natoms, 3], Å.
            cells: [nf, 9] cell vectors as rows (Å), or None for non-periodic systems.
            atom_types: [natoms] indices into ``get_type_map()``; [nf, natoms] with
                ``mixed_type=True``. ``-1`` marks a virtual (padding) atom.
            atomic: also return per-atom energies and virials.
            fparam: [nf, nfp] or [nfp].  aparam: [nf, natoms, nap], [natoms, nap] or [nap].

        Returns:
            energy [nf, 1] eV, force [nf, natoms, 3] eV/Å, virial [nf, 9] eV and, if
            ``atomic``, atom_energy [nf, natoms, 1] and atom_virial [nf, natoms, 9]; last, for
            a Hessian model (:attr:`has_hessian`), hessian [nf, 3 natoms, 3 natoms] eV/Å^2.
        """
        spin = kwargs.pop("spin", None) if self.has_spin else None
        for name, value in kwargs.items():
            if value is not None:
                raise ValueError(f"DeepPot.eval: '{name}' is not supported by lamkit models")
        if self.has_spin:  # spin models: force_mag and mask_mag follow (lamkit.infer.spin_eval)
            return eval_spin(self, coords, cells, atom_types, spin, atomic, fparam, aparam,
                             mixed_type)
        coords, cells, atype, fparam, aparam = self._standard_input(
            coords, cells, atom_types, fparam, aparam, mixed_type
        )
        names = [keys.ENERGY, keys.FORCE, keys.VIRIAL]
        if atomic:
            names += [keys.ATOM_ENERGY, keys.ATOM_VIRIAL]
        if self.has_hessian:
            names.append(keys.HESSIAN)
        empty = {
            keys.HESSIAN: (0, 0),
            keys.ENERGY: (1,),
            keys.FORCE: (0, 3),
            keys.VIRIAL: (9,),
            keys.ATOM_ENERGY: (0, 1),
            keys.ATOM_VIRIAL: (0, 9),
        }
        out = self._evaluate(
            coords,
            cells,
            atype,
            fparam,
            aparam,
            names,
            empty,
            do_force=True,
            do_virial=True,
            do_atomic_virial=atomic,
        )
        return tuple(out[n] for n in names)

    def eval_atoms(self, atoms_list, *, chunk_atoms: int | None = None) -> BatchOutput:
        """Energies, forces, virials and stresses of ASE Atoms of any sizes, in one model
        evaluation of all their atoms concatenated (block-diagonal neighbour lists, see
        :mod:`lamkit.infer.batch`).

        Structures with any periodic direction are evaluated in their (fully periodic) cell,
        like :class:`~lamkit.infer.LamCalculator`; others without a cell (their stress row is
        NaN). ``chunk_atoms``: slice the evaluation into this many centre atoms (exact; see
        :mod:`lamkit.nn.chunking`); default: this DeepPot's ``chunk_atoms`` rule applied to
        the total atom count.

        Returns a :class:`~lamkit.infer.batch.BatchOutput`: energy [n] eV, forces (list of
        [n_i, 3] eV/Å), virial [n, 3, 3] eV, stress [n, 6] eV/Å^3 (ASE Voigt order).
        """
        if self.get_dim_fparam() and not self.has_default_fparam():
            raise ValueError(
                f"DeepPot.eval_atoms: this model needs {self.get_dim_fparam()} frame "
                "parameters per structure; batched evaluation does not take them (use eval)"
            )
        if self.get_dim_aparam():
            raise ValueError(
                f"DeepPot.eval_atoms: this model needs {self.get_dim_aparam()} atomic "
                "parameters per atom; batched evaluation does not take them (use eval)"
            )
        type_dict = {name: i for i, name in enumerate(self.get_type_map())}
        coords, cells, atypes = atoms_inputs(atoms_list, type_dict)
        total = sum(len(c) for c in coords)
        chunk = self.budget.chunk(total) if chunk_atoms is None else (chunk_atoms or None)
        if getattr(self, "_batch_nl", None) is None:
            from vesin import NeighborList

            self._batch_nl = NeighborList(cutoff=float(self.model.rcut), full_list=True)
        with torch.no_grad():
            return evaluate_batch(
                self.model,
                coords,
                cells,
                atypes,
                device=self.device,
                chunk_atoms=chunk,
                nl=self._batch_nl,
            )
