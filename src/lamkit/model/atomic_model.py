"""The standard DP model: descriptor + fitting + per-type output statistics.

:class:`AtomicModel` is the one path that every fitting goes through. The fitting's
:class:`~lamkit.fitting.OutputDef` says what it predicts: the model runs the descriptor and the
fitting (passing the descriptor's ``rot_mat`` to equivariant fittings), applies the output
statistics ``out_bias``/``out_std`` the way the fitting defines (energy: ``+ bias``; property:
``* std + bias``; dipole: nothing; polar: diagonal shift), zeroes virtual and excluded atoms,
and reduces over atoms: the sum, or for intensive outputs the mean over the real atoms.

The one ``forward`` also gives forces and virials, by automatic differentiation, exactly when
the output definition is ``r_differentiable`` (the energy); :class:`~lamkit.model.EnergyModel`
is only the name energy models carry (old checkpoints, ``isinstance`` checks).

Inputs are the keys of :mod:`lamkit.keys`; neighbour data (mapping,
shift, nlist) is built by :class:`lamkit.geometry.NeighborBuilder` outside the model.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .. import keys
from ..descriptor import Descriptor
from ..fitting import OutputDef
from ..geometry.env import gather_rows
from ..geometry.neighbor import NeighborBuilder
from ..nn.chunking import Chunking, map_rows
from ..nn.params import RefNames, TypeRows
from .derivatives import forces_and_virials, has_hessian, local_hessian


def wrapped_coord(coord: torch.Tensor, cell: torch.Tensor, wrap: torch.Tensor) -> torch.Tensor:
    """Atoms moved into the cell as the reference's ``normalize_coord`` computes them:
    ``(coord @ inv(cell) + wrap) @ cell`` with ``wrap`` the integer offsets (coord [nf, n, 3]
    Å, cell [nf, 3, 3] rows are cell vectors, wrap [nf, n, 3]); ``frac + wrap`` is bitwise the
    reference's ``remainder(frac, 1)``."""
    return torch.matmul(torch.matmul(coord, torch.linalg.inv(cell)) + wrap, cell)


class AtomicModel(nn.Module):
    """Per-atom and reduced outputs of a fitting on top of a descriptor.

    Buffers: ``out_bias`` and ``out_std`` [ntypes, size] (``size`` numbers per atom, 9 for a
    polarizability), set from the training labels before training
    (:mod:`lamkit.model.out_stat`); ``min_nbor_dist`` (Å, -1 if unknown).
    """

    def __init__(
        self,
        descriptor: Descriptor,
        fitting: nn.Module,
        type_map: list[str],
        atom_exclude_types=(),
        config: dict | None = None,
    ):
        super().__init__()
        self.descriptor = descriptor
        self.fitting = fitting
        self.type_map = list(type_map)
        self.ntypes = len(type_map)
        self.atom_exclude_types = list(atom_exclude_types)
        self.config = dict(config or {})
        odim = self.output_def.size
        self.register_buffer("out_bias", torch.zeros(self.ntypes, odim, dtype=torch.float64))
        self.register_buffer("out_std", torch.ones(self.ntypes, odim, dtype=torch.float64))
        self.register_buffer("min_nbor_dist", torch.tensor(-1.0, dtype=torch.float64))

    # --- what callers need to know ----------------------------------------------------------
    @property
    def output_def(self) -> OutputDef:
        return self.fitting.output_def()

    @property
    def output_name(self) -> str:
        """Key of the reduced (per-frame) output: energy, <property_name>, global_dipole..."""
        return self.output_def.global_key

    @property
    def rcut(self) -> float:
        return self.descriptor.rcut

    @property
    def sel(self) -> list[int]:
        return self.descriptor.sel

    @property
    def mixed_types(self) -> bool:
        return self.descriptor.mixed_types

    @property
    def dtype(self) -> torch.dtype:
        return self.out_bias.dtype

    def neighbor_builder(self, cache: bool = False) -> NeighborBuilder:
        return NeighborBuilder(self.rcut, self.sel, self.mixed_types, cache=cache)

    @property
    def fitting_out_bias(self) -> torch.Tensor:
        """The bias applied to the fitting's output: ``out_bias`` (combined models that fit
        ``out_bias`` on top of their members give their DP member's own here)."""
        return self.out_bias

    # --- forward ----------------------------------------------------------------------------
    def extend(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None,
        nbr: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``extended_coord = coord[mapping] + shift @ cell`` and ``extended_atype``.

        With a cell, the local atoms are first wrapped as the reference's ``normalize_coord``
        does (fractional coordinates plus the integer wrap, times the cell), then the ghosts
        add their image translation: the same floating-point operations, so that the distances
        are the reference's to the last bit (see :func:`lamkit.geometry.env.smooth_switch`).
        """
        mapping = nbr[keys.MAPPING]
        if box is None:
            return gather_rows(coord, mapping), torch.gather(atype, 1, mapping)
        cell = box.reshape(-1, 3, 3).to(coord.dtype)
        shift = nbr[keys.SHIFT].to(coord.dtype)
        wrap = shift[:, : coord.shape[1]]  # locals come first: their shift is the wrap
        image = shift - gather_rows(wrap, mapping)
        ext = gather_rows(wrapped_coord(coord, cell, wrap), mapping) + torch.bmm(image, cell)
        return ext, torch.gather(atype, 1, mapping)

    def atomic_outputs(
        self,
        ext_coord,
        ext_atype,
        nlist,
        mapping,
        fparam=None,
        aparam=None,
        chunking: Chunking | None = None,
        descriptor_inputs: dict | None = None,
    ):
        """Per-atom outputs [nf, nloc, size] (float64, statistics applied, zero on virtual
        and excluded atoms) and the mask [nf, nloc] of the atoms that count.

        ``chunking``: evaluate the atom-local blocks in slices (:mod:`lamkit.nn.chunking`).
        ``descriptor_inputs``: further named inputs of the descriptor's forward (DPA-2's
        ``block_nlists``, ``ghost_exchange``)."""
        nloc = nlist.shape[1]
        atype = ext_atype[:, :nloc]
        dout = self.descriptor(
            ext_coord, ext_atype, nlist, mapping, chunking=chunking, **(descriptor_inputs or {})
        )
        desc = dout[keys.DESCRIPTOR]
        rot_mat = dout["rot_mat"] if self.fitting.uses_rot_mat else None
        name = self.fitting.var_name
        if aparam is not None:
            aparam = aparam.reshape(*atype.shape, -1)

        def fit(start, stop, d, t, ap, rot):  # per atom: chunked like the descriptor's blocks
            extra = {} if rot is None else {"rot_mat": rot}
            return self.fitting(d, t, fparam, ap, **extra)[name]

        atom = map_rows(fit, *atype.shape, desc, atype, aparam, rot_mat, chunking=chunking)
        atom = atom.to(torch.float64)
        atom = atom.reshape(*atype.shape, -1)
        mask = atype >= 0
        for t in self.atom_exclude_types:
            mask = mask & (atype != t)
        atom = self.fitting.apply_out_stat(atom, atype, self.fitting_out_bias, self.out_std)
        return atom * mask.unsqueeze(-1).to(atom.dtype), mask

    def reduce(self, atom: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-frame output [nf, size]: the sum over atoms, or for an intensive output the
        mean over the atoms that count (virtual and excluded atoms are left out)."""
        total = atom.sum(1)
        if not self.output_def.intensive:
            return total
        count = mask.sum(1, keepdim=True).clamp(min=1).to(total.dtype)
        return total / count

    def forward(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None,
        nbr: dict[str, torch.Tensor],
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        do_force: bool | None = None,
        do_virial: bool | None = None,
        do_atomic_virial: bool = False,
        create_graph: bool = False,
        chunk_atoms: int | None = None,
        charge_spin: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predictions for coord [nf, nloc, 3] Å, atype [nf, nloc], box [nf, 9] Å or None;
        ``charge_spin`` [nf, 2]: each frame's charge and spin, for models that take them
        (:attr:`frame_inputs`).

        Returns ``{global_key: [nf, *shape], atom_key: [nf, nloc, *shape], mask: [nf, nloc]}``
        with the keys of :attr:`output_def` (``energy``/``atom_energy``,
        ``band_prop``/``atom_band_prop``, ``global_dipole``/``dipole``, ...).

        Derivatives exactly when the output definition says so (``r_differentiable``: the
        energy): then, as asked, force [nf, nloc, 3], virial [nf, 9], atom_virial
        [nf, nloc, 9] (``do_force``/``do_virial`` default to True), and for a Hessian model
        (:mod:`lamkit.model.hessian`) also force and hessian [nf, 3 nloc, 3 nloc]. Other
        outputs ignore the derivative flags, so that every model takes the same call.

        ``chunk_atoms``: above this many atoms the atom-local blocks run on slices of centre
        atoms under activation checkpointing (:mod:`lamkit.nn.chunking`; same results, one
        slice's memory). None (the default, used in training): everything at once.
        """
        od = self.output_def
        nf, nloc = atype.shape
        # geometry in float64 whatever the input precision, as the reference does
        coord = coord.detach().to(torch.float64)
        box = None if box is None else box.to(torch.float64)
        ext_coord, ext_atype = self.extend(coord, atype, box, nbr)
        diff = od.r_differentiable
        hessian = diff and has_hessian(self)
        do_force = diff and (hessian or do_force is None or bool(do_force))
        do_virial = diff and (do_virial is None or bool(do_virial))
        if diff:
            ext_coord = ext_coord.detach().requires_grad_(do_force or do_virial)
        grad = torch.enable_grad() if diff else contextlib.nullcontext()
        with grad:
            atom, mask = self.atomic_outputs(
                ext_coord,
                ext_atype,
                nbr[keys.NLIST],
                nbr[keys.MAPPING],
                fparam,
                aparam,
                chunking=Chunking.start(chunk_atoms),
                descriptor_inputs=self._frame_kw(charge_spin),
            )
            reduced = self.reduce(atom, mask)
            total = {od.global_key: reduced.reshape(nf, *od.shape)}
            per_atom = {od.atom_key: atom.reshape(nf, nloc, *od.shape)}
            # key order as ever: the energy first, other outputs per atom first
            out = {**total, **per_atom} if diff else {**per_atom, **total}
            out[keys.MASK] = mask
            if do_force or do_virial:
                out.update(
                    forces_and_virials(
                        reduced,
                        atom,
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

    @property
    def frame_inputs(self) -> tuple[str, ...]:
        """Per-frame model inputs besides the geometry and fparam (DPA-3's ``charge_spin``)."""
        return tuple(getattr(self.descriptor, "frame_inputs", ()))

    def _frame_kw(self, charge_spin) -> dict | None:
        if "charge_spin" in self.frame_inputs:
            return {"charge_spin": charge_spin}
        if charge_spin is not None:
            raise ValueError("charge_spin: this model takes no per-frame charge and spin")
        return None

    def evaluate(self, coord, atype, box=None, fparam=None, aparam=None, **kw):
        """Convenience: build neighbour data and run ``forward`` (inputs as torch tensors)."""
        nbr = self.neighbor_builder()(coord, atype, box)
        nbr = {k: v.to(coord.device) for k, v in nbr.items()}
        return self.forward(coord, atype, box, nbr, fparam, aparam, **kw)

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = (TypeRows("out_bias"), TypeRows("out_std", "fresh"))
    REF_NAMES = RefNames(
        names=(
            ("min_nbor_dist", "min_nbor_dist"),
            ("out_bias", "atomic_model.out_bias"),
            ("out_std", "atomic_model.out_std"),
        ),
        children=(
            ("descriptor", "atomic_model.descriptor"),
            ("fitting", "atomic_model.fitting_net"),
        ),
    )
