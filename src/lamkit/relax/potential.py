"""What the relaxer evaluates: one protocol, two implementations.

A potential takes a list of structures ``(positions [n_i, 3] Å, cell [3, 3] Å, pbc [3] bool,
numbers [n_i] atomic numbers)`` and returns a :class:`~lamkit.infer.batch.BatchOutput`:
energy [n] eV, forces (list of [n_i, 3] eV/Å), virial [n, 3, 3] eV and stress [n, 6] eV/Å^3
(ASE's Voigt order xx, yy, zz, yz, xz, xy; NaN rows for non-periodic structures).

* :class:`LamkitPotential`: a lamkit energy model (or DeePMD-kit v3 checkpoint), every
  structure of the call in ONE model evaluation (:mod:`lamkit.infer.batch`).
* :class:`AsePotential`: any ASE calculator, one structure at a time (e.g. EMT as ground truth).

A structure counts as periodic when any of its ``pbc`` flags is set; it is then evaluated in
its fully periodic cell, as :class:`~lamkit.infer.LamCalculator` does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, PropertyNotImplementedError
from ase.data import atomic_numbers, chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress
from vesin import NeighborList

from ..infer.batch import BatchOutput, evaluate_batch
from ..infer.deep_pot import DeepPot
from ..model import AtomicModel, build_model

# (positions [n, 3] Å, cell [3, 3] Å, pbc [3] bool, numbers [n] atomic numbers)
System = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# batches above this many atoms are evaluated in slices of this many centre atoms (exact, in
# bounded memory; see lamkit.nn.chunking): above the relaxer's default atom budget, so that
# normal batches run whole and only structures far larger than a batch are sliced
DEFAULT_CHUNK_ATOMS = 4096


@runtime_checkable
class Potential(Protocol):
    """Energies, forces and stresses of many structures (see the module docstring)."""

    def evaluate(self, systems: Sequence[System]) -> BatchOutput: ...


def _numpy_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    return np.dtype(dtype)


def cast_model(model: AtomicModel, dtype: str) -> AtomicModel:
    """``model`` rebuilt with its descriptor and fitting in ``dtype`` ("float32"/"float64")
    and the same weights (converted), in eval mode without parameter gradients. The model is
    returned unchanged when it already has that precision."""
    want = DTYPES[dtype]
    if model.descriptor.dtype == want and getattr(model.fitting, "dtype", want) == want:
        return model
    if not model.config:
        raise ValueError(
            f"cannot convert this model to {dtype}: it carries no model config to rebuild it "
            "from (build it with lamkit.model.build_model or load it from a file)"
        )
    conf = copy.deepcopy(model.config)
    for section in ("descriptor", "fitting_net"):
        if isinstance(conf.get(section), dict):
            conf[section]["precision"] = dtype
    out = build_model(conf)
    out.load_state_dict(model.state_dict())  # the copies convert the dtype
    out.to(model.out_bias.device)
    return out.eval().requires_grad_(False)


class LamkitPotential:
    """A lamkit energy model evaluating all structures of a call at once.

    Args:
        model: a model file (lamkit frozen model or checkpoint, DeePMD-kit v3 ``.pt``), a
            :class:`~lamkit.infer.DeepPot` or an energy :class:`~lamkit.model.AtomicModel`.
        dtype: "float64" or "float32": the precision of the descriptor and fitting. A model
            of another precision is rebuilt with converted weights (a copy; yours is left as
            it is). Geometry (neighbour lists, coordinates) stays float64.
        device: "cpu", "cuda", ...; default: the DeepPot's, else CUDA when available.
        head: branch of a multi-task checkpoint (model files only).
        chunk_atoms: batches above this many atoms run in slices of this many centre atoms
            (exact, bounded memory); 0: never. Default 4096.
    """

    def __init__(
        self,
        model: str | Path | DeepPot | AtomicModel,
        *,
        dtype: str = "float64",
        device: str | torch.device | None = None,
        head: str | None = None,
        chunk_atoms: int | None = None,
    ):
        self.dtype = _numpy_dtype(dtype)
        if isinstance(model, DeepPot):
            dp = model
        elif isinstance(model, AtomicModel):
            dp = DeepPot(model, device=device)
        elif isinstance(model, (str, Path)):
            dp = DeepPot(model, head=head, device=device)
        else:
            raise TypeError(
                "LamkitPotential: expected a model file, a DeepPot or an AtomicModel, got "
                f"{type(model).__name__}"
            )
        if dp.output_kind() != "energy":
            raise ValueError(f"LamkitPotential needs an energy model, got a {dp.output_kind()}")
        if (dp.get_dim_fparam() and not dp.has_default_fparam()) or dp.get_dim_aparam():
            raise ValueError(
                "LamkitPotential: this model needs frame or atomic parameters "
                f"(fparam {dp.get_dim_fparam()}, aparam {dp.get_dim_aparam()}), which batched "
                "relaxation does not provide"
            )
        self.model = cast_model(dp.model, dtype)
        self.device = torch.device(device) if device is not None else dp.device
        self.model.to(self.device)
        self.type_map = list(self.model.type_map)
        self.chunk_atoms = DEFAULT_CHUNK_ATOMS if chunk_atoms is None else int(chunk_atoms)
        # atomic number -> model type index (-1: not in the type map)
        self._types = np.full(len(chemical_symbols), -1, dtype=np.int64)
        for k, name in enumerate(self.type_map):
            if name in atomic_numbers:
                self._types[atomic_numbers[name]] = k
        self._nl = NeighborList(cutoff=float(self.model.rcut), full_list=True)

    def validate(self, numbers: np.ndarray) -> str | None:
        """Why structures of these atomic numbers cannot be evaluated, or None."""
        numbers = np.asarray(numbers, dtype=np.int64)
        bad = (numbers < 0) | (numbers >= len(self._types))
        bad[~bad] = self._types[numbers[~bad]] < 0
        if bad.any():
            names = sorted({chemical_symbols[z] if 0 <= z < 119 else str(z) for z in numbers[bad]})
            return f"element(s) {names} not in the model's type map {self.type_map}"
        return None

    def evaluate(self, systems: Sequence[System]) -> BatchOutput:
        coords, cells, atypes = [], [], []
        for k, (pos, cell, pbc, numbers) in enumerate(systems):
            reason = self.validate(numbers)
            if reason:
                raise ValueError(f"structure {k}: {reason}")
            coords.append(np.asarray(pos, dtype=np.float64))
            cells.append(np.asarray(cell, dtype=np.float64) if np.any(pbc) else None)
            atypes.append(self._types[np.asarray(numbers, dtype=np.int64)])
        total = sum(len(c) for c in coords)
        chunk = self.chunk_atoms if self.chunk_atoms and total > self.chunk_atoms else None
        with torch.no_grad():
            return evaluate_batch(
                self.model,
                coords,
                cells,
                atypes,
                device=self.device,
                chunk_atoms=chunk,
                nl=self._nl,
            )


class AsePotential:
    """Any ASE calculator as a potential: structures are evaluated one after the other.

    ``stress`` is asked for structures with a periodic direction; calculators that do not
    implement it leave NaN rows (fine for fixed-cell relaxations).
    """

    def __init__(self, calc: BaseCalculator, *, dtype: str = "float64"):
        if not isinstance(calc, BaseCalculator):
            raise TypeError(f"AsePotential: expected an ASE calculator, got {type(calc).__name__}")
        self.calc = calc
        self.dtype = _numpy_dtype(dtype)

    def evaluate(self, systems: Sequence[System]) -> BatchOutput:
        n = len(systems)
        energy = np.zeros(n)
        virial = np.full((n, 3, 3), np.nan)
        stress = np.full((n, 6), np.nan)
        forces = []
        for k, (pos, cell, pbc, numbers) in enumerate(systems):
            atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=pbc)
            atoms.calc = self.calc
            energy[k] = atoms.get_potential_energy()
            forces.append(np.array(atoms.get_forces(), dtype=np.float64))
            if np.any(pbc):
                try:
                    stress[k] = atoms.get_stress(voigt=True)
                except PropertyNotImplementedError:
                    continue
                virial[k] = -atoms.get_volume() * voigt_6_to_full_3x3_stress(stress[k])
            atoms.calc = None
        return BatchOutput(energy=energy, forces=forces, virial=virial, stress=stress)


def as_potential(
    potential,
    *,
    dtype: str = "float64",
    device: str | torch.device | None = None,
    head: str | None = None,
) -> LamkitPotential | AsePotential | Potential:
    """The potential behind anything :func:`lamkit.relax.relax` accepts: a potential (used as
    it is), an ASE calculator (wrapped in :class:`AsePotential`), or a model file, DeepPot or
    AtomicModel (wrapped in :class:`LamkitPotential` with ``dtype``, ``device``, ``head``)."""
    if isinstance(potential, (LamkitPotential, AsePotential)):
        return potential
    if isinstance(potential, BaseCalculator):
        return AsePotential(potential, dtype=dtype)
    if isinstance(potential, (str, Path, DeepPot, AtomicModel)):
        return LamkitPotential(potential, dtype=dtype, device=device, head=head)
    if isinstance(potential, Potential):
        return potential
    raise TypeError(
        "potential: expected a model file, a DeepPot, an AtomicModel, a LamkitPotential, an "
        f"AsePotential or an ASE calculator, got {type(potential).__name__}"
    )
