"""Names of the tensors that flow between lamkit's stages, with their shapes.

Every batch, model input and model output is a plain ``dict[str, Tensor]`` keyed by these
constants.  Shapes use ``nf`` (frames), ``nloc`` (real atoms per frame), ``nall`` (local plus
ghost atoms), ``nnei`` (neighbour slots) and ``ntypes`` (length of the model's type map).
Units: length Å, energy eV, force eV/Å, virial eV.
"""

# --- inputs -------------------------------------------------------------------------------
COORD = "coord"  # [nf, nloc, 3] Cartesian coordinates, Å
ATYPE = "atype"  # [nf, nloc] int64 index into the model type_map; -1 marks a virtual atom
BOX = "box"  # [nf, 9] cell vectors as rows (a, b, c), Å; absent for non-periodic systems
FPARAM = "fparam"  # [nf, nfp] frame parameters
APARAM = "aparam"  # [nf, nloc, nap] atomic parameters
SPIN = "spin"  # [nf, nloc, 3] atomic spins (magnetic moments), μB (spin models)

# --- neighbour data (built outside the differentiable model) --------------------------------
MAPPING = "mapping"  # [nf, nall] int64 local atom each extended atom is an image of
SHIFT = "shift"  # [nf, nall, 3] integer cell shift of each extended atom (float dtype)
NLIST = "nlist"  # [nf, nloc, nnei] int64 extended index of each neighbour slot, -1 = empty
EXT_COORD = "extended_coord"  # [nf, nall, 3] coord[mapping] + shift @ cell, Å
EXT_ATYPE = "extended_atype"  # [nf, nall] int64
# {block name: [nf, nloc, nsel_block]} the lists of a descriptor with several blocks (DPA-2:
# repinit, three_body, repformer), a named input of its forward (built once by the caller)
BLOCK_NLISTS = "block_nlists"

# --- labels -------------------------------------------------------------------------------
ENERGY = "energy"  # [nf, 1] total energy, eV
FORCE = "force"  # [nf, nloc, 3] eV/Å
VIRIAL = "virial"  # [nf, 9] eV, XX XY XZ YX YY YZ ZX ZY ZZ
ATOM_ENERGY = "atom_energy"  # [nf, nloc, 1] eV
ATOM_VIRIAL = "atom_virial"  # [nf, nloc, 9] eV
ATOM_PREF = "atom_pref"  # [nf, nloc, 3] per-atom force weights (repeated over xyz)
FORCE_MAG = "force_mag"  # [nf, nloc, 3] magnetic force -dE/dspin, eV/μB (spin models)
HESSIAN = "hessian"  # [nf, 3 nloc, 3 nloc] d2E/dx dx, eV/Å^2, row (atom i, xyz a) = 3i + a
NATOMS = "natoms"  # [nf, 2 + ntypes] (nloc, nloc, count of type 0, type 1, ...)
FIND_PREFIX = "find_"  # find_<label> = 1.0 when the label file was present, else 0.0
SID = "sid"  # system index the batch came from (int)
FID = "fid"  # frame indices within the system (list[int])

# --- intermediate -------------------------------------------------------------------------
DESCRIPTOR = "descriptor"  # [nf, nloc, dim_out]
MASK = "mask"  # [nf, nloc] 1 for real atoms, 0 for virtual atoms
MASK_MAG = "mask_mag"  # [nf, nloc, 1] bool, atoms of magnetic types (spin models)
EXT_FORCE = "extended_force"  # [nf, nall, 3]

MODEL_INPUTS = (COORD, ATYPE, BOX, FPARAM, APARAM)


def find_key(label: str) -> str:
    """Name of the presence flag of ``label`` (``find_energy`` for ``energy``)."""
    return FIND_PREFIX + label
