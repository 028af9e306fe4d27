"""Mixed-size batched evaluation: many structures of any sizes in one model call.

All atoms of all structures are concatenated into a single frame (``nf = 1``) whose neighbour
list is block diagonal: every structure gets its own neighbour data from
:func:`lamkit.geometry.neighbor.build_frame_neighbors` (with its own cell, or none), and the
pieces are joined with offset indices::

    extended atoms = [locals of structure 0, 1, ..., n-1,  ghosts of structure 0, 1, ...]
    mapping[ghost] = concatenated index of the local atom it is an image of
    ext_coord      = coord_all[mapping] + shift @ cell_of_the_owner_structure

No neighbour list ever crosses from one structure into another, so the model sees exactly the
environments it would see for each structure alone, and one forward and one backward pass give
every structure's energy, forces and virial:

* energy of structure s: the sum of its atoms' energies,
* forces: ``-dE/dR_ext`` added back onto the local atoms (``mapping``),
* virial of s: ``W_s = sum_k F_k (x) R_k`` over the extended atoms k owned by s (the gradient
  of the total energy w.r.t. the atoms of s is the gradient of E_s, as the blocks are
  independent), element (a, b) = F_a R_b as in :mod:`lamkit.model.derivatives`.

One exception: type-mixed descriptors (DPA-1, DPA-2...) give empty neighbour slots the type of
extended atom 0, as the reference does; with non-zero ``davg`` statistics that changes the
result, so for such models the structures are evaluated in one call per type of their first
atom (``_call_groups``), which keeps every structure's result exactly its own.

Units: Å, eV, eV/Å; stress in ASE's Voigt order (xx, yy, zz, yz, xz, xy), eV/Å^3, from the
symmetrised virial: ``stress = -(W + W^T) / (2 V)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from vesin import NeighborList

from ..geometry.neighbor import build_frame_neighbors
from ..model.atomic_model import AtomicModel, wrapped_coord
from ..nn.chunking import Chunking

VOIGT = [0, 4, 8, 5, 2, 1]  # flat 3x3 indices of xx, yy, zz, yz, xz, xy


@dataclass
class BatchOutput:
    """Per-structure results of one batched evaluation (float64 numpy).

    energy [n] eV; forces: one [n_i, 3] array per structure, eV/Å; virial [n, 3, 3] eV
    (``W = sum_k F_k (x) R_k``, not symmetrised); stress [n, 6] eV/Å^3 in ASE's Voigt order
    (xx, yy, zz, yz, xz, xy), NaN rows for non-periodic structures.
    """

    energy: np.ndarray
    forces: list[np.ndarray]
    virial: np.ndarray
    stress: np.ndarray

    def __len__(self) -> int:
        return len(self.energy)


@dataclass
class BatchNeighbors:
    """Block-diagonal neighbour data of concatenated structures (numpy int64).

    mapping [nall]: concatenated local index each extended atom is an image of (locals first);
    shift [nall, 3]: integer cell translation (in the owner's cell) of each extended atom;
    nlist [ntot, nnei]: extended neighbour indices, -1 padded; owner [nall]: structure index.
    """

    mapping: np.ndarray
    shift: np.ndarray
    nlist: np.ndarray
    owner: np.ndarray


def batch_neighbors(
    coords: list[np.ndarray],
    cells: list[np.ndarray | None],
    atypes: list[np.ndarray],
    rcut: float,
    sel: list[int],
    mixed_types: bool,
    nl: NeighborList | None = None,
) -> BatchNeighbors:
    """Neighbour data of structures ``coords[i]`` [n_i, 3] Å with types ``atypes[i]`` [n_i] in
    cells ``cells[i]`` [3, 3] (rows are cell vectors) or None (non-periodic), joined into one
    block-diagonal frame (see the module docstring). ``nl``: a vesin list to reuse."""
    nl = nl or NeighborList(cutoff=float(rcut), full_list=True)
    sizes = np.array([len(c) for c in coords], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    ntot = int(sizes.sum())
    frames = [
        build_frame_neighbors(c, t, cell, rcut, sel, mixed_types, nl) if len(c) else None
        for c, t, cell in zip(coords, atypes, cells)
    ]
    nghost = np.array(
        [0 if f is None else len(f.mapping) - n for f, n in zip(frames, sizes)], dtype=np.int64
    )
    gstarts = ntot + np.concatenate([[0], np.cumsum(nghost)[:-1]]).astype(np.int64)
    nnei = int(sum(sel))
    nlists, loc_shift, ghost_map, ghost_shift = [], [], [], []
    for k, f in enumerate(frames):
        if f is None:
            continue
        n = int(sizes[k])
        nlist = f.nlist
        # local neighbours move by the structure's start, ghosts into the global ghost block
        moved = np.where(nlist < n, nlist + starts[k], nlist - n + gstarts[k])
        nlists.append(np.where(nlist < 0, -1, moved))
        loc_shift.append(f.shift[:n])
        ghost_map.append(f.mapping[n:] + starts[k])
        ghost_shift.append(f.shift[n:])
    empty_i, empty_s = np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    mapping = np.concatenate([np.arange(ntot, dtype=np.int64), *ghost_map, empty_i])
    shift = np.concatenate([*loc_shift, *ghost_shift, empty_s]).astype(np.int64)
    nlist = np.concatenate(nlists) if nlists else np.zeros((0, nnei), dtype=np.int64)
    struct_of_local = np.repeat(np.arange(len(coords), dtype=np.int64), sizes)
    owner = struct_of_local[mapping] if len(mapping) else empty_i
    return BatchNeighbors(mapping=mapping, shift=shift, nlist=nlist, owner=owner)


def evaluate_batch(
    model: AtomicModel,
    coords: list[np.ndarray],
    cells: list[np.ndarray | None],
    atypes: list[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    chunk_atoms: int | None = None,
    nl: NeighborList | None = None,
) -> BatchOutput:
    """Energies, forces, virials and stresses of structures of any sizes in one model call.

    Args:
        model: an energy model (:class:`~lamkit.model.EnergyModel`).
        coords: per structure [n_i, 3] Å.  cells: per structure [3, 3] Å (rows are cell
            vectors; the structure is treated as fully periodic) or None (non-periodic).
        atypes: per structure [n_i] int type indices into ``model.type_map``.
        device: where the model lives.  chunk_atoms: slice the atom-local blocks into this many
            centre atoms (exact, see :mod:`lamkit.nn.chunking`); None: whole.
        nl: a vesin neighbour list to reuse (cutoff ``model.rcut``).
    """
    nstruct = len(coords)
    coords = [np.asarray(c, dtype=np.float64).reshape(-1, 3) for c in coords]
    atypes = [np.asarray(t, dtype=np.int64).reshape(-1) for t in atypes]
    cells = [None if c is None else np.asarray(c, dtype=np.float64).reshape(3, 3) for c in cells]
    for k, (c, t) in enumerate(zip(coords, atypes)):
        if len(t) != len(c):
            raise ValueError(f"structure {k}: {len(c)} coordinates but {len(t)} atom types")
        if not np.all(np.isfinite(c)):
            raise ValueError(f"structure {k}: coordinates contain NaN or infinite values")
        if cells[k] is not None and not np.all(np.isfinite(cells[k])):
            raise ValueError(f"structure {k}: the cell contains NaN or infinite values")
    sizes = np.array([len(c) for c in coords], dtype=np.int64)
    energy = np.zeros(nstruct)
    virial = np.zeros((nstruct, 3, 3))
    forces = [np.zeros((n, 3)) for n in sizes]
    for group in _call_groups(model, atypes):
        e, f, v = _model_call(
            model,
            [coords[k] for k in group],
            [cells[k] for k in group],
            [atypes[k] for k in group],
            device,
            chunk_atoms,
            nl,
        )
        energy[group], virial[group] = e, v
        for k, fk in zip(group, np.split(f, np.cumsum(sizes[group])[:-1])):
            forces[k] = fk
    stress = np.full((nstruct, 6), np.nan)
    for k, cell in enumerate(cells):
        if cell is not None:
            w = virial[k]
            vol = abs(np.linalg.det(cell))
            stress[k] = (-0.5 * (w + w.T) / vol).reshape(9)[VOIGT]
    return BatchOutput(energy=energy, forces=forces, virial=virial, stress=stress)


def _call_groups(model: AtomicModel, atypes: list[np.ndarray]) -> list[list[int]]:
    """Structures evaluated together: all (with atoms) in one call, unless the model reads
    the type of extended atom 0 in empty neighbour slots. Type-mixed descriptors do that (the
    reference's convention), which only matters when their ``davg`` statistics are non-zero
    (e.g. ``se_atten_v2``, or ``set_davg_zero: false``): then a structure must be in a call
    whose first atom has the type of its own first atom, so structures are grouped by it."""
    nonempty = [k for k, t in enumerate(atypes) if len(t)]
    if not nonempty:
        return []
    if not model.mixed_types or not _nonzero_davg(model):
        return [nonempty]
    groups: dict[int, list[int]] = {}
    for k in nonempty:
        groups.setdefault(int(atypes[k][0]), []).append(k)
    return list(groups.values())


def _nonzero_davg(model: AtomicModel) -> bool:
    return any(
        bool(buf.any())
        for name, buf in model.descriptor.named_buffers()
        if name.rsplit(".", 1)[-1] == "davg"
    )


def _extended_coord(coords, cells, nb: BatchNeighbors, cell_arr: np.ndarray) -> np.ndarray:
    """``coord[mapping] + shift @ cell`` with every periodic structure's atoms first wrapped as
    :meth:`AtomicModel.extend` does (the same floating-point operations, so that a structure
    gives the same numbers here as alone)."""
    sizes = [len(c) for c in coords]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    local = np.concatenate(coords).astype(np.float64)
    for k, cell in enumerate(cells):
        if cell is None or not sizes[k]:
            continue
        a, b = starts[k], starts[k + 1]
        wrapped = wrapped_coord(
            torch.from_numpy(local[a:b])[None],
            torch.from_numpy(np.asarray(cell, dtype=np.float64).reshape(1, 3, 3)),
            torch.from_numpy(nb.shift[a:b].astype(np.float64))[None],
        )
        local[a:b] = wrapped[0].numpy()
    image = nb.shift - nb.shift[nb.mapping]
    return local[nb.mapping] + np.einsum("ka,kab->kb", image, cell_arr[nb.owner])


def _model_call(model, coords, cells, atypes, device, chunk_atoms, nl):
    """One forward and backward pass over all structures: energy [n], force [ntot, 3],
    virial [n, 3, 3] (float64 numpy)."""
    nstruct = len(coords)
    nb = batch_neighbors(coords, cells, atypes, model.rcut, model.sel, model.mixed_types, nl)
    coord_all = np.concatenate(coords)
    cell_arr = np.stack([np.zeros((3, 3)) if c is None else c for c in cells])
    # extended coordinates in float64 (as EnergyModel.forward): the cell term is a constant of
    # the backward pass, forces and virials come from the gradient w.r.t. ext_coord itself
    ext_np = _extended_coord(coords, cells, nb, cell_arr)
    atype_all = np.concatenate(atypes)
    dev = torch.device(device)
    ext = torch.from_numpy(ext_np).to(dev).requires_grad_(True)
    ext_atype = torch.from_numpy(atype_all[nb.mapping]).to(dev)
    nlist = torch.from_numpy(nb.nlist).to(dev)
    mapping = torch.from_numpy(nb.mapping).to(dev)
    owner = torch.from_numpy(nb.owner).to(dev)
    ntot = len(coord_all)
    local_owner = owner[:ntot]
    chunking = Chunking.start(chunk_atoms)
    with torch.enable_grad():
        atom_e, _ = model.atomic_outputs(
            ext[None], ext_atype[None], nlist[None], mapping[None], chunking=chunking
        )
        atom_e = atom_e[0, :, 0]
        (grad,) = torch.autograd.grad([atom_e.sum()], [ext])
    with torch.no_grad():
        energy = atom_e.new_zeros(nstruct).index_add_(0, local_owner, atom_e.detach())
        ext_force = -grad
        force = ext_force.new_zeros(ntot, 3).index_add_(0, mapping, ext_force)
        ext_vir = (ext_force.unsqueeze(-1) * ext.detach().unsqueeze(-2)).reshape(-1, 9)
        vir = ext_vir.new_zeros(nstruct, 9).index_add_(0, owner, ext_vir)
    to_np = lambda t: t.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    return to_np(energy), to_np(force), to_np(vir).reshape(nstruct, 3, 3)


def atoms_inputs(atoms_list, type_dict: dict[str, int]):
    """Per-structure model inputs of ASE Atoms: coords, cells (None unless some direction is
    periodic, as :class:`~lamkit.infer.LamCalculator` does) and type indices. A ValueError
    names the structure and the element when a symbol is not in ``type_dict``, or when a
    periodic structure has a cell without volume."""
    coords, cells, atypes = [], [], []
    for k, atoms in enumerate(atoms_list):
        symbols = atoms.get_chemical_symbols()
        unknown = sorted({s for s in symbols if s not in type_dict})
        if unknown:
            raise ValueError(
                f"structure {k} ({atoms.get_chemical_formula()}): element(s) {unknown} not in "
                f"the model's type map {sorted(type_dict, key=type_dict.get)}"
            )
        periodic = bool(np.any(atoms.get_pbc()))
        cell = atoms.get_cell().array if periodic else None
        if periodic and abs(atoms.cell.volume) < 1e-10:
            raise ValueError(
                f"structure {k} ({atoms.get_chemical_formula()}): periodic boundary conditions "
                f"{atoms.get_pbc().tolist()} need a cell with non-zero volume, got "
                f"{atoms.get_cell().tolist()}"
            )
        coords.append(atoms.get_positions())
        cells.append(cell)
        atypes.append(np.array([type_dict[s] for s in symbols], dtype=np.int64))
    return coords, cells, atypes
