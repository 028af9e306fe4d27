"""The machinery shared by the inference interfaces: :class:`DeepEval` (a model file on a
device, with DeePMD-kit's inference conventions: model facts, input checking, evaluation in
chunks of frames) and the model kind (:func:`model_kind`, the ``kind`` of the fitting's output
definition) that picks the interface: :class:`~lamkit.infer.DeepPot` (energy, with spin
models' evaluation in :mod:`.spin_eval`), and in :mod:`.deep_property` ``DeepProperty``,
``DeepDipole``, ``DeepPolar`` and ``DeepDOS``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .. import keys
from ..model import AtomicModel, load_model
from ..runtime import available_bytes, peak_resident_bytes, resident_bytes, tune_allocator
from .budget import AtomBudget, is_oom
from .compiled import CompiledEnergy


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
        self, coords, cells, atype, fparam, aparam, names, empty, frame_kw=None, **model_kw
    ) -> dict[str, np.ndarray]:
        """Model outputs ``names`` (float64 numpy, frames first) for inputs already in model
        layout (see ``_standard_input``), evaluated in chunks of frames that fit the atom
        budget (halved and retried after an out-of-memory error). ``empty``: the per-frame
        shape of each output, for frames without atoms. ``model_kw`` go to the model, and so
        do the per-frame arrays of ``frame_kw`` (e.g. ``charge_spin`` [nf, 2]), sliced."""
        nf, natoms = atype.shape
        if natoms == 0:
            return {n: np.zeros((nf, *empty[n])) for n in names}
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        start = 0
        while start < nf:
            probe = self.device.type == "cpu" and self.budget.needs_host_check and nf > 1
            stop = min(nf, start + (1 if probe else self.budget.frames(natoms)))
            sl = slice(start, stop)
            before = (resident_bytes(), peak_resident_bytes()) if probe else None
            try:
                out = self._eval_chunk(
                    coords[sl],
                    None if cells is None else cells[sl],
                    atype[sl],
                    None if fparam is None else fparam[sl],
                    None if aparam is None else aparam[sl],
                    names,
                    {**model_kw, **{k: v[sl] for k, v in (frame_kw or {}).items()}},
                )
            except (RuntimeError, MemoryError) as exc:
                if is_oom(exc) and self.budget.out_of_memory((stop - start) * natoms, natoms):
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                raise
            for n in names:
                parts[n].append(out[n])
            if before is not None:  # one frame measured: fit the frames per call to memory
                self._fit_host_memory(before, natoms)
            self.budget.succeeded(self.device)
            start = stop
        return {n: np.concatenate(parts[n]) for n in names}

    def _fit_host_memory(self, before: tuple, natoms: int) -> None:
        rss, peak = before
        now = peak_resident_bytes()
        grown = now - rss if rss is not None and now > peak else 0  # this call set the peak
        self.budget.fit_host_memory(grown / max(natoms, 1), available_bytes())

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
        model_kw = {k: tensor(v) if isinstance(v, np.ndarray) else v for k, v in model_kw.items()}
        out = None
        compiled = None if self.model.frame_inputs else self.compiled
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

    def _frame_inputs(self, charge_spin, nf: int) -> dict:
        """``charge_spin`` [nf, 2] (or [2] for every frame) for models that take it."""
        if "charge_spin" not in self.model.frame_inputs:
            if charge_spin is not None:
                raise ValueError("charge_spin: this model takes no per-frame charge and spin")
            return {}
        if charge_spin is None:
            return {}  # the model's default_chg_spin, or its error
        cs = np.asarray(charge_spin, dtype=np.float64)
        if cs.size == 2:
            cs = np.tile(cs.reshape(1, 2), (nf, 1))
        if cs.shape != (nf, 2):
            raise ValueError(f"charge_spin: expected [{nf}, 2] (charge, spin), got {cs.shape}")
        return {"charge_spin": cs}

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
