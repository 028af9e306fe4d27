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
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import keys
from ..model import AtomicModel, load_model
from ..model.hessian import has_hessian
from ..runtime import tune_allocator
from .batch import BatchOutput, atoms_inputs, evaluate_batch
from .compiled import CompiledEnergy

DEFAULT_BATCH_ATOMS = 1024
MAX_BATCH_ATOMS = 1 << 18
# Frames above this many atoms are evaluated in slices of at most this many centre atoms: the
# same bound as for batches of frames (DEFAULT_BATCH_ATOMS). Smaller frames pay nothing;
# larger ones pay a recomputation of the sliced blocks (about a quarter more time for DPA-2)
# and hold about 1-2 GB of slice tensors instead of ~1.4 MB per atom (DPA-2 small, float64).
DEFAULT_CHUNK_ATOMS = 1024


def default_chunk_atoms() -> int:
    """``$LAMKIT_CHUNK_ATOMS`` if set (0 turns chunking off), else ``DEFAULT_CHUNK_ATOMS``."""
    env = os.environ.get("LAMKIT_CHUNK_ATOMS", "").strip()
    if not env:
        return DEFAULT_CHUNK_ATOMS
    try:
        value = int(env)
    except ValueError:
        raise ValueError(f"LAMKIT_CHUNK_ATOMS: expected an atom count, got {env!r}") from None
    if value < 0:
        raise ValueError(f"LAMKIT_CHUNK_ATOMS: expected 0 (off) or a positive count, got {value}")
    return value


class AtomBudget:
    """How many atoms one evaluation may hold: frames x atoms per frame (``atoms``), and for a
    frame of more than ``chunk_atoms`` atoms, centre atoms per slice inside it (see
    :mod:`lamkit.nn.chunking`; ``chunk_atoms`` None or 0: never slice frames).

    ``adaptive`` budgets halve after a CUDA out-of-memory error and retry the chunk (a single
    frame that does not fit is then sliced, more finely at each error); on a GPU they also
    double after every successful chunk, up to the largest size known to work.
    """

    def __init__(
        self,
        atoms: int = DEFAULT_BATCH_ATOMS,
        adaptive: bool = True,
        chunk_atoms: int | None = DEFAULT_CHUNK_ATOMS,
    ):
        if atoms < 1:
            raise ValueError(f"auto_batch_size: expected a positive atom count, got {atoms}")
        if chunk_atoms is not None and chunk_atoms < 0:
            raise ValueError(
                f"chunk_atoms: expected 0/None (off) or an atom count, got {chunk_atoms}"
            )
        self.atoms = int(atoms)
        self.adaptive = adaptive
        self.chunk_atoms = int(chunk_atoms) if chunk_atoms else None
        self._too_big = MAX_BATCH_ATOMS + 1  # smallest budget that ran out of memory
        self._chunk_too_big = MAX_BATCH_ATOMS + 1

    @classmethod
    def from_arg(cls, arg, chunk_atoms: int | None = None) -> AtomBudget:
        """``True``: adaptive (start from ``$DP_INFER_BATCH_SIZE`` or 1024 atoms);
        an int: that fixed budget; ``False``/``None``: the default budget, fixed.
        ``chunk_atoms`` None means :func:`default_chunk_atoms`."""
        if isinstance(arg, AtomBudget):
            return arg
        chunk = default_chunk_atoms() if chunk_atoms is None else chunk_atoms
        if arg is True:
            env = int(os.environ.get("DP_INFER_BATCH_SIZE", 0) or 0)
            return cls(env or DEFAULT_BATCH_ATOMS, adaptive=not env, chunk_atoms=chunk)
        if arg is False or arg is None:
            return cls(DEFAULT_BATCH_ATOMS, adaptive=False, chunk_atoms=chunk)
        if isinstance(arg, (int, np.integer)):
            return cls(int(arg), adaptive=False, chunk_atoms=chunk)
        raise ValueError(f"auto_batch_size: expected True, False or an int, got {arg!r}")

    def frames(self, natoms: int) -> int:
        """Frames per chunk (at least one, even if one frame exceeds the budget)."""
        return max(1, self.atoms // max(natoms, 1))

    def chunk(self, natoms: int) -> int | None:
        """Atoms per slice for frames of ``natoms`` atoms (``AtomicModel.forward``'s
        ``chunk_atoms``), or None: whole frames."""
        if self.chunk_atoms is None or natoms <= self.chunk_atoms:
            return None
        return self.chunk_atoms

    def succeeded(self, device: torch.device) -> None:
        if self.adaptive and device.type == "cuda":
            self.atoms = min(self.atoms * 2, self._too_big - 1, MAX_BATCH_ATOMS)
            if self.chunk_atoms is not None:
                self.chunk_atoms = min(
                    self.chunk_atoms * 2, self._chunk_too_big - 1, MAX_BATCH_ATOMS
                )

    def out_of_memory(self, used_atoms: int, natoms: int | None = None) -> bool:
        """Shrink after an OOM of a call on ``used_atoms`` atoms (frames of ``natoms``): fewer
        frames, or for one frame finer slices. False when nothing is left to shrink (re-raise)."""
        if not self.adaptive or used_atoms <= 1:
            return False
        if natoms is None or used_atoms > natoms:  # several frames: fewer of them
            self._too_big = min(self._too_big, used_atoms)
            self.atoms = max(1, used_atoms // 2)
            return True
        sliced = min(natoms, self.chunk_atoms or natoms)  # one frame: slice it (finer)
        if sliced <= 1:
            return False
        self._too_big = min(self._too_big, natoms + 1)
        self.atoms = min(self.atoms, natoms)
        self._chunk_too_big = min(self._chunk_too_big, sliced)
        self.chunk_atoms = max(1, sliced // 2)
        return True


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, (MemoryError, oom)) or "out of memory" in str(exc).lower()


class DeepEval:
    """A model file on a device, with DeePMD-kit's inference conventions: model facts
    (``get_type_map``...), input checking and evaluation in chunks of frames. Subclasses
    define ``eval``: :class:`DeepPot` (energy models), and in :mod:`.deep_property`
    ``DeepProperty``, ``DeepDipole`` and ``DeepPolar``.

    Args:
        model_file: a lamkit frozen model or checkpoint, a DeePMD-kit v3 ``.pt`` checkpoint, or an
            :class:`~lamkit.model.AtomicModel` already in memory.
        auto_batch_size: ``True`` (adaptive chunk size, see :class:`AtomBudget`), an int (atoms
            per chunk) or ``False`` (default fixed chunk size; unlike the reference lamkit never
            evaluates an unbounded number of frames at once).
        head: branch of a multi-task checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: CUDA when available.
        chunk_atoms: frames with more atoms are evaluated in slices of this many centre atoms
            (exact; see :mod:`lamkit.nn.chunking`); 0 turns slicing off. Default:
            ``$LAMKIT_CHUNK_ATOMS`` or 1024.
        neighbor_list, nlist_backend: accepted for compatibility with DeePMD-kit and ignored
            (lamkit always builds neighbour lists with vesin).
        compile: evaluate energies, forces and virials through compiled graphs
            (:mod:`lamkit.infer.compiled`; energy models only): faster per call after one
            compilation per input shape bucket (about a minute the first time for DPA-2
            medium on CPU). Atomic virials and frames sliced into chunks of atoms are
            evaluated eagerly; if compilation fails lamkit warns and evaluates eagerly.
    """

    def __init__(
        self,
        model_file: str | Path | AtomicModel,
        auto_batch_size: bool | int = True,
        head: str | None = None,
        device: str | torch.device | None = None,
        neighbor_list=None,
        nlist_backend: str = "auto",
        chunk_atoms: int | None = None,
        compile: bool = False,
    ):
        tune_allocator()
        if neighbor_list is not None:
            warnings.warn(
                "DeepPot: neighbor_list is ignored; lamkit builds its own (vesin)", stacklevel=2
            )
        if isinstance(model_file, AtomicModel):
            model = model_file  # the caller's module: used as is (mode and gradients untouched)
            self.model_file = None
            if device is None:
                device = model.out_bias.device
        else:
            model = load_model(model_file, head=head)
            model.requires_grad_(False)  # our own copy: no parameter gradients needed
            self.model_file = str(model_file)
        self._check_model(model)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.budget = AtomBudget.from_arg(auto_batch_size, chunk_atoms)
        self._neighbors = model.neighbor_builder()
        self.compiled: CompiledEnergy | None = None
        if compile:
            if model_kind(model) != "energy":
                raise ValueError(
                    f"DeepPot(compile=True) needs an energy model; this is a {model_kind(model)} "
                    "model"
                )
            self.compiled = CompiledEnergy(self.model)

    # --- model facts --------------------------------------------------------------------------
    def get_type_map(self) -> list[str]:
        return list(self.model.type_map)

    def get_ntypes(self) -> int:
        return self.model.ntypes

    def get_rcut(self) -> float:
        return float(self.model.rcut)

    def get_sel(self) -> list[int]:
        return list(self.model.sel)

    def get_dim_fparam(self) -> int:
        return int(getattr(self.model.fitting, "numb_fparam", 0))

    def get_dim_aparam(self) -> int:
        return int(getattr(self.model.fitting, "numb_aparam", 0))

    def has_default_fparam(self) -> bool:
        return getattr(self.model.fitting, "default_fparam", None) is not None

    def get_sel_type(self) -> list[int]:
        return []

    def get_model_def_script(self) -> dict:
        return dict(self.model.config)

    def _check_model(self, model: AtomicModel) -> None:
        """Raise ValueError when this interface does not fit the model's output."""

    def output_kind(self) -> str:
        """What the model predicts: "energy", "property", "dipole", "polar" or "dos"."""
        return model_kind(self.model)

    # --- evaluation ---------------------------------------------------------------------------
    def _evaluate(
        self, coords, cells, atype, fparam, aparam, names, empty, **model_kw
    ) -> dict[str, np.ndarray]:
        """Model outputs ``names`` (float64 numpy, frames first) for inputs already in model
        layout (see ``_standard_input``), evaluated in chunks of frames that fit the atom
        budget (halved and retried after an out-of-memory error). ``empty``: the per-frame
        shape of each output, for frames without atoms. ``model_kw`` go to the model."""
        nf, natoms = atype.shape
        if natoms == 0:
            return {n: np.zeros((nf, *empty[n])) for n in names}
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        start = 0
        while start < nf:
            stop = min(nf, start + self.budget.frames(natoms))
            sl = slice(start, stop)
            try:
                out = self._eval_chunk(
                    coords[sl],
                    None if cells is None else cells[sl],
                    atype[sl],
                    None if fparam is None else fparam[sl],
                    None if aparam is None else aparam[sl],
                    names,
                    model_kw,
                )
            except (RuntimeError, MemoryError) as exc:
                if _is_oom(exc) and self.budget.out_of_memory((stop - start) * natoms, natoms):
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                raise
            for n in names:
                parts[n].append(out[n])
            self.budget.succeeded(self.device)
            start = stop
        return {n: np.concatenate(parts[n]) for n in names}

    def _eval_chunk(
        self, coords, cells, atype, fparam, aparam, names, model_kw: dict
    ) -> dict[str, np.ndarray]:
        """Run the model on a few frames (``model_kw``: extra model arguments); neighbour data
        is built here, for these frames only."""
        dev = self.device
        chunk = self.budget.chunk(atype.shape[1])
        nbr = self._neighbors(coords, atype, cells)
        nbr = {k: v.to(dev) for k, v in nbr.items()}

        def tensor(x):  # copies: the caller's arrays may be read-only views
            return None if x is None else torch.tensor(x, device=dev)

        args = (tensor(coords), tensor(atype), tensor(cells), nbr, tensor(fparam), tensor(aparam))
        out = None
        compiled = self.compiled
        if (
            compiled is not None
            and model_kw.get("do_force", False)
            and keys.HESSIAN not in names
            and compiled.supports(model_kw.get("do_atomic_virial", False), chunk)
        ):
            with torch.no_grad():
                out = compiled(*args)  # None: compilation failed, evaluate eagerly
        if out is None:
            with torch.no_grad():
                out = self.model(*args, chunk_atoms=chunk, **model_kw)
        return {k: out[k].detach().to("cpu", torch.float64).numpy() for k in names}

    # --- input checking -----------------------------------------------------------------------
    def _standard_input(self, coords, cells, atom_types, fparam, aparam, mixed_type):
        """Arrays in model layout: coords [nf, natoms, 3] float64, cells [nf, 9] | None,
        atype [nf, natoms] int64, fparam [nf, nfp] | None, aparam [nf, natoms, nap] | None."""
        coords = np.asarray(coords, dtype=np.float64)
        atype = np.asarray(atom_types)
        if atype.size and not np.issubdtype(atype.dtype, np.integer):
            if not np.all(np.mod(atype, 1) == 0):
                raise ValueError(f"atom_types: expected integers, got dtype {atype.dtype}")
        atype = atype.astype(np.int64)
        if mixed_type:
            if atype.ndim != 2:
                raise ValueError(
                    f"atom_types: with mixed_type=True expected shape [nframes, natoms], "
                    f"got {atype.shape}"
                )
            natoms = atype.shape[1]
        else:
            if atype.ndim != 1:
                raise ValueError(
                    f"atom_types: expected shape [natoms], got {atype.shape} "
                    "(pass mixed_type=True for per-frame types)"
                )
            natoms = atype.shape[0]
        if natoms == 0:
            nf = atype.shape[0] if mixed_type else (coords.shape[0] if coords.ndim > 1 else 1)
        else:
            if coords.size % (natoms * 3):
                raise ValueError(
                    f"coords: shape {coords.shape} does not hold whole frames of "
                    f"{natoms} atoms x 3 (atom_types has shape {atype.shape})"
                )
            nf = coords.size // (natoms * 3)
        coords = coords.reshape(nf, natoms, 3)
        if mixed_type:
            if atype.shape[0] != nf:
                raise ValueError(
                    f"atom_types: {atype.shape[0]} frames of types for {nf} frames of coords "
                    f"(coords {coords.shape}, atom_types {atype.shape})"
                )
        else:
            atype = np.repeat(atype[None], nf, axis=0)
        bad = (atype < -1) | (atype >= self.get_ntypes())
        if bad.any():
            raise ValueError(
                f"atom_types: values {sorted(set(atype[bad].tolist()))} are out of range; "
                f"expected 0..{self.get_ntypes() - 1} for type_map {self.get_type_map()} "
                "(or -1 for a virtual atom)"
            )
        if not np.all(np.isfinite(coords)):
            raise ValueError("coords: contains NaN or infinite values")
        if cells is not None:
            cells = np.asarray(cells, dtype=np.float64)
            if cells.size != nf * 9:
                raise ValueError(
                    f"cells: expected shape [{nf}, 9] for {nf} frames, got {cells.shape}"
                )
            cells = np.ascontiguousarray(cells.reshape(nf, 9))
            vol = np.linalg.det(cells.reshape(nf, 3, 3))
            if not np.all(np.isfinite(cells)) or np.any(np.abs(vol) < 1e-10):
                frames = np.nonzero(~np.isfinite(vol) | (np.abs(vol) < 1e-10))[0].tolist()
                raise ValueError(f"cells: zero-volume or non-finite cell in frames {frames}")
        fparam = self._frame_param(fparam, nf)
        aparam = self._atom_param(aparam, nf, natoms)
        return coords, cells, atype, fparam, aparam

    def _frame_param(self, fparam, nf: int) -> np.ndarray | None:
        dim = self.get_dim_fparam()
        if fparam is None:
            if dim and not self.has_default_fparam():
                raise ValueError(f"fparam: this model needs {dim} frame parameters per frame")
            return None
        fparam = np.asarray(fparam, dtype=np.float64)
        if dim == 0:
            raise ValueError(f"fparam: this model takes no frame parameters, got {fparam.shape}")
        if fparam.size == nf * dim:
            return np.ascontiguousarray(fparam.reshape(nf, dim))
        if fparam.size == dim:
            return np.ascontiguousarray(np.tile(fparam.reshape(1, dim), (nf, 1)))
        raise ValueError(f"fparam: expected shape [{nf}, {dim}] or [{dim}], got {fparam.shape}")

    def _atom_param(self, aparam, nf: int, natoms: int) -> np.ndarray | None:
        dim = self.get_dim_aparam()
        if aparam is None:
            if dim:
                raise ValueError(f"aparam: this model needs {dim} atomic parameters per atom")
            return None
        aparam = np.asarray(aparam, dtype=np.float64)
        if dim == 0:
            raise ValueError(f"aparam: this model takes no atomic parameters, got {aparam.shape}")
        if aparam.size == nf * natoms * dim:
            return np.ascontiguousarray(aparam.reshape(nf, natoms, dim))
        if aparam.size == natoms * dim:
            return np.ascontiguousarray(np.tile(aparam.reshape(1, natoms, dim), (nf, 1, 1)))
        if aparam.size == dim:
            return np.ascontiguousarray(np.tile(aparam.reshape(1, 1, dim), (nf, natoms, 1)))
        raise ValueError(
            f"aparam: expected shape [{nf}, {natoms}, {dim}], [{natoms}, {dim}] or [{dim}], "
            f"got {aparam.shape}"
        )


def model_kind(model: AtomicModel) -> str:
    """The kind of output: energy, property, dipole, polar or dos (the ``kind`` field of the
    fitting's output definition)."""
    return model.output_def.kind


_INTERFACE = {
    "energy": "DeepPot",
    "property": "DeepProperty",
    "dipole": "DeepDipole",
    "polar": "DeepPolar",
    "dos": "DeepDOS",
}


def check_kind(model: AtomicModel, wanted: str, who: str) -> None:
    """ValueError naming the right interface when ``model`` is not a ``wanted`` model."""
    kind = model_kind(model)
    if kind != wanted:
        raise ValueError(
            f"{who}: this is a {kind} model (output '{model.output_name}'); "
            f"use lamkit.infer.{_INTERFACE[kind]}"
        )


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
        if self.has_spin:  # spin models: force_mag and mask_mag follow (lamkit.infer.spin_eval)
            from .spin_eval import eval_spin

            spin = kwargs.pop("spin", None)
        for name, value in kwargs.items():
            if value is not None:
                raise ValueError(f"DeepPot.eval: '{name}' is not supported by lamkit models")
        if self.has_spin:
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
