"""ASE calculator over :class:`DeepPot` (``deepmd.calculator.DP`` for lamkit models).

Results: ``energy`` and ``free_energy`` (eV), ``forces`` [natoms, 3] eV/Å, ``virial`` [3, 3] eV,
``energies`` [natoms] eV on request and, for periodic atoms, ``stress`` in ASE's Voigt order
(xx, yy, zz, yz, xz, xy), eV/Å^3, with ``stress = -(W + W^T) / (2 V)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .deep_pot import DeepPot

_VOIGT = [0, 4, 8, 5, 2, 1]  # flat 3x3 indices of xx, yy, zz, yz, xz, xy


class LamCalculator(Calculator):
    """ASE calculator for a lamkit or DeePMD-kit model.

    Args:
        model: a model file (anything :func:`lamkit.model.load_model` reads) or a ``DeepPot``.
        head: branch of a multi-task checkpoint.
        type_dict: element symbol -> type index; default: from the model's ``type_map``.
        device: ``"cpu"`` or ``"cuda"``; default: CUDA when available.
        chunk_atoms: systems with more atoms are evaluated in slices of this many centre
            atoms (the same results in bounded memory, see :class:`DeepPot`); 0: never.
            Default: ``$LAMKIT_CHUNK_ATOMS`` or 1024.
        compile: evaluate through compiled graphs (see :class:`DeepPot`; for long
            simulations: a compilation per shape bucket, then faster steps).
        label, neighbor_list: as in ``deepmd.calculator.DP`` (``neighbor_list`` is ignored).

    Atoms with any periodic direction are evaluated in their (fully periodic) cell, like the
    reference; others without a cell, and then ``stress`` is not available.
    ``atoms.info["fparam"]`` and ``atoms.info["aparam"]`` are passed to the model, and to
    DPA-3 models with charge/spin inputs ``atoms.info["charge"]`` and ``atoms.info["spin"]``.
    """

    name = "lamkit"
    implemented_properties: ClassVar[list[str]] = [
        "energy",
        "free_energy",
        "forces",
        "virial",
        "stress",
        "energies",
    ]

    def __init__(
        self,
        model: str | Path | DeepPot,
        *,
        head: str | None = None,
        type_dict: dict[str, int] | None = None,
        device: str | None = None,
        label: str = "lamkit",
        neighbor_list=None,
        chunk_atoms: int | None = None,
        compile: bool = False,
        **kwargs,
    ):
        super().__init__(label=label, **kwargs)
        if isinstance(model, DeepPot):
            self.dp = model
            if chunk_atoms is not None:
                self.dp.budget.chunk_atoms = int(chunk_atoms) or None
            if compile and model.compiled is None:
                raise ValueError(
                    "compile=True with a DeepPot: create it with DeepPot(..., compile=True)"
                )
        else:
            self.dp = DeepPot(
                model,
                head=head,
                device=device,
                neighbor_list=neighbor_list,
                chunk_atoms=chunk_atoms,
                compile=compile,
            )
        type_map = self.dp.get_type_map()
        if type_dict is None:
            type_dict = {name: i for i, name in enumerate(type_map)}
        for symbol, index in type_dict.items():
            if not 0 <= int(index) < len(type_map):
                raise ValueError(
                    f"type_dict: '{symbol}' -> {index} is out of range for the model's "
                    f"type_map {type_map}"
                )
        self.type_dict = {k: int(v) for k, v in type_dict.items()}

    def atom_types(self, symbols: list[str]) -> np.ndarray:
        """Model type indices of chemical symbols; unknown symbols raise a ValueError."""
        unknown = sorted({s for s in symbols if s not in self.type_dict})
        if unknown:
            raise ValueError(
                f"element(s) {unknown} not in the model's type map "
                f"{self.dp.get_type_map()} (type_dict {self.type_dict})"
            )
        return np.array([self.type_dict[s] for s in symbols], dtype=np.int64)

    def _charge_spin(self, atoms) -> dict:
        """DPA-3 models with charge/spin inputs: ``atoms.info["charge"]`` and
        ``atoms.info["spin"]`` (the spin multiplicity), else the model's default."""
        if "charge_spin" not in self.dp.model.frame_inputs:
            return {}
        if "charge" not in atoms.info and "spin" not in atoms.info:
            return {}
        default = getattr(self.dp.model.descriptor.charge_spin, "default", None) or [0, 1]
        cs = [atoms.info.get("charge", default[0]), atoms.info.get("spin", default[1])]
        return {"charge_spin": [cs]}

    def calculate(
        self, atoms=None, properties=("energy", "forces"), system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        atype = self.atom_types(atoms.get_chemical_symbols())
        coord = atoms.get_positions().reshape(1, -1)
        periodic = bool(np.any(atoms.get_pbc()))
        cell = atoms.get_cell().array.reshape(1, 9) if periodic else None
        if periodic and abs(atoms.cell.volume) < 1e-10:
            raise ValueError(
                f"atoms: periodic boundary conditions {atoms.get_pbc().tolist()} need a cell "
                f"with non-zero volume, got cell {atoms.get_cell().tolist()}"
            )
        atomic = "energies" in properties
        out = self.dp.eval(
            coord,
            cell,
            atype,
            atomic=atomic,
            fparam=atoms.info.get("fparam"),
            aparam=atoms.info.get("aparam"),
            **self._charge_spin(atoms),
        )
        energy, force, virial = out[0][0, 0], out[1][0], out[2][0].reshape(3, 3)
        self.results["energy"] = float(energy)
        self.results["free_energy"] = float(energy)  # ase MR 2485
        self.results["forces"] = force
        self.results["virial"] = virial
        if atomic:
            self.results["energies"] = out[3][0, :, 0]
        if periodic:
            stress = -0.5 * (virial + virial.T) / atoms.get_volume()
            self.results["stress"] = stress.reshape(9)[_VOIGT]
        elif "stress" in properties:
            raise PropertyNotImplementedError(
                "stress: the atoms are not periodic (no pbc set), so there is no cell to strain"
            )


DP = LamCalculator
