"""The standard DP energy model: an :class:`~lamkit.model.atomic_model.AtomicModel` whose
energy output also gives forces and virials by automatic differentiation.

Inputs are the keys of :mod:`lamkit.keys`; neighbour data (mapping, shift, nlist) is built by
:class:`lamkit.geometry.NeighborBuilder` outside the model so the model stays a pure function
of tensors (friendly to ``torch.compile`` and export).
"""

from __future__ import annotations

import torch

from .. import keys
from ..nn.chunking import Chunking
from .atomic_model import AtomicModel
from .derivatives import forces_and_virials, has_hessian, local_hessian


class EnergyModel(AtomicModel):
    """Energy, forces and virials of atomic configurations.

    ``out_bias`` [ntypes, 1] is the per-type energy shift fitted by least squares on the
    training labels; the fitting net learns the remainder. Descriptor, fitting, statistics and
    the per-atom outputs are :class:`AtomicModel`'s.
    """

    def forward(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None,
        nbr: dict[str, torch.Tensor],
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        do_force: bool = True,
        do_virial: bool = True,
        do_atomic_virial: bool = False,
        create_graph: bool = False,
        chunk_atoms: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predictions for coord [nf, nloc, 3] Å, atype [nf, nloc], box [nf, 9] Å or None.

        Returns energy [nf, 1], atom_energy [nf, nloc, 1], mask [nf, nloc] and, as asked,
        force [nf, nloc, 3], virial [nf, 9], atom_virial [nf, nloc, 9]; a Hessian model
        (:mod:`lamkit.model.hessian`) also returns force and hessian [nf, 3 nloc, 3 nloc].

        ``chunk_atoms``: when ``nf * nloc`` exceeds it, the atom-local blocks (descriptor
        blocks, repformer layers, fitting) run on slices of at most this many centre atoms
        under activation checkpointing (:mod:`lamkit.nn.chunking`): the same results with the
        memory of one slice's pair tensors, for about one extra forward pass of time (one per
        backward pass). None (the default, used in training) evaluates everything at once.
        """
        nloc = coord.shape[1]
        # geometry in float64 whatever the input precision, as the reference does
        coord = coord.detach().to(torch.float64)
        box = None if box is None else box.to(torch.float64)
        ext_coord, ext_atype = self.extend(coord, atype, box, nbr)
        hessian = has_hessian(self)
        do_force = do_force or hessian
        ext_coord = ext_coord.detach().requires_grad_(do_force or do_virial)
        chunking = Chunking.start(chunk_atoms)
        with torch.enable_grad():
            atom_e, mask = self.atomic_outputs(
                ext_coord,
                ext_atype,
                nbr[keys.NLIST],
                nbr[keys.MAPPING],
                fparam,
                aparam,
                chunking=chunking,
            )
            energy = atom_e.sum(1)
            out = {keys.ENERGY: energy, keys.ATOM_ENERGY: atom_e, keys.MASK: mask}
            if do_force or do_virial:
                out.update(
                    forces_and_virials(
                        energy,
                        atom_e,
                        ext_coord,
                        nbr[keys.MAPPING],
                        nloc,
                        do_virial=do_virial,
                        do_atomic_virial=do_atomic_virial,
                        create_graph=create_graph or hessian,
                    )
                )
            if hessian:
                out[keys.HESSIAN] = local_hessian(
                    out[keys.FORCE], ext_coord, nbr[keys.MAPPING], create_graph
                )
        return out

    def evaluate(self, coord, atype, box=None, fparam=None, aparam=None, **kw):
        """Convenience: build neighbour data and run ``forward`` (inputs as torch tensors)."""
        nbr = self.neighbor_builder()(coord, atype, box)
        nbr = {k: v.to(coord.device) for k, v in nbr.items()}
        return self.forward(coord, atype, box, nbr, fparam, aparam, **kw)
