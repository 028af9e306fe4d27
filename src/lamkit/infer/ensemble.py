"""Ensembles of energy models evaluated on shared neighbour data, and their ASE calculator.

DP-GEN style concurrent learning runs several models of one architecture (different seeds) on
the same frames and looks at how much they disagree. The neighbour search depends only on the
cutoff and the slot layout (``sel``, type-mixed or not), so :class:`Ensemble` builds it once per
chunk of frames and every member with that layout reads the same ``mapping``/``shift``/``nlist``
(models of one architecture, the usual case, share a single list)::

    ens = Ensemble(["graph.000.pth", "graph.001.pth", "graph.002.pth", "graph.003.pth"])
    out = ens.eval(coords, cells, atom_types)     # out.force: [nmodels, nf, natoms, 3]

Members must agree on the type map and the cutoff; anything else is a
:class:`~lamkit.errors.ConfigError` naming the models, raised before any evaluation.
:class:`EnsembleCalculator` reports the mean energy, forces and stress of the members together
with the deviations of :mod:`lamkit.infer.model_devi` (``max_devi_f``...) in ``calc.results``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .. import keys
from ..errors import ConfigError, LamkitError
from ..model import AtomicModel
from .deep_pot import AtomBudget, DeepPot, _is_oom
from .deviation import energy_deviation, force_deviation, virial_deviation

ModelLike = str | Path | AtomicModel | DeepPot
_VOIGT = [0, 4, 8, 5, 2, 1]  # flat 3x3 indices of xx, yy, zz, yz, xz, xy


@dataclass
class EnsembleOutput:
    """Predictions of every member (float64 numpy, members first).

    energy [nm, nf, 1] eV; force [nm, nf, natoms, 3] eV/Å; virial [nm, nf, 9] eV; with
    ``atomic=True`` also atom_energy [nm, nf, natoms, 1] and atom_virial [nm, nf, natoms, 9].
    """

    energy: np.ndarray
    force: np.ndarray
    virial: np.ndarray
    atom_energy: np.ndarray | None = None
    atom_virial: np.ndarray | None = None


def _name(model: ModelLike, index: int) -> str:
    if isinstance(model, DeepPot):
        return model.model_file or f"model {index} (in memory)"
    if isinstance(model, AtomicModel):
        return f"model {index} (in memory)"
    return str(model)


def _member(model: ModelLike, name: str, head: str | None, device) -> DeepPot:
    """A DeepPot for one member; a model that is not an energy model is a ConfigError."""
    if isinstance(model, DeepPot):
        return model
    try:
        return DeepPot(model, head=head, device=device)
    except LamkitError:
        raise
    except ValueError as exc:  # e.g. a property model: DeepPot says which interface fits
        raise ConfigError(f"ensemble member {name}: {exc}") from None


class Ensemble:
    """Several energy models evaluated together on one neighbour list per neighbour layout.

    Args:
        models: model files (lamkit or DeePMD-kit v3, as :class:`DeepPot` reads them),
            models in memory or :class:`DeepPot` objects; at least one.
        head: branch of multi-task checkpoints (the same for every file).
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available (DeepPot objects keep
            their own device).
        auto_batch_size: atoms per chunk of frames, as for :class:`DeepPot`.

    Raises ConfigError when the members' type maps or cutoffs differ.
    """

    def __init__(
        self,
        models: Sequence[ModelLike],
        *,
        head: str | None = None,
        device: str | torch.device | None = None,
        auto_batch_size: bool | int = True,
    ):
        if isinstance(models, (str, Path, AtomicModel, DeepPot)) or len(models) == 0:
            raise ConfigError("Ensemble: expected a list of one or more models")
        self.names = [_name(m, i) for i, m in enumerate(models)]
        self.members = [_member(m, name, head, device) for m, name in zip(models, self.names)]
        check_compatible(self.members, self.names)
        self.budget = AtomBudget.from_arg(auto_batch_size)
        # one neighbour builder per slot layout; member i uses builder self._layout[i]
        self._builders: list = []
        self._layout: list[int] = []
        seen: dict[tuple, int] = {}
        for m in self.members:
            key = (tuple(m.get_sel()), bool(m.model.mixed_types))
            if key not in seen:
                seen[key] = len(self._builders)
                self._builders.append(m.model.neighbor_builder())
            self._layout.append(seen[key])

    def __len__(self) -> int:
        return len(self.members)

    @property
    def nlayouts(self) -> int:
        """How many distinct neighbour lists one evaluation builds (1 for one architecture)."""
        return len(self._builders)

    def get_type_map(self) -> list[str]:
        return self.members[0].get_type_map()

    def get_rcut(self) -> float:
        return self.members[0].get_rcut()

    def get_dim_fparam(self) -> int:
        return self.members[0].get_dim_fparam()

    def get_dim_aparam(self) -> int:
        return self.members[0].get_dim_aparam()

    def eval(
        self,
        coords,
        cells,
        atom_types,
        atomic: bool = False,
        fparam=None,
        aparam=None,
        mixed_type: bool = False,
    ) -> EnsembleOutput:
        """Energies, forces and virials of every member; arguments as :meth:`DeepPot.eval`
        (coords [nf, natoms, 3] Å, cells [nf, 9] Å or None, atom_types [natoms], or
        [nf, natoms] with ``mixed_type``)."""
        first = self.members[0]
        coords, cells, atype, fp0, ap0 = first._standard_input(
            coords, cells, atom_types, fparam, aparam, mixed_type
        )
        nf, natoms = atype.shape
        fps = [fp0] + [m._frame_param(fparam, nf) for m in self.members[1:]]
        aps = [ap0] + [m._atom_param(aparam, nf, natoms) for m in self.members[1:]]
        names = [keys.ENERGY, keys.FORCE, keys.VIRIAL]
        if atomic:
            names += [keys.ATOM_ENERGY, keys.ATOM_VIRIAL]
        nm = len(self.members)
        if natoms == 0:
            shapes = {keys.ENERGY: (1,), keys.FORCE: (0, 3), keys.VIRIAL: (9,)}
            shapes.update({keys.ATOM_ENERGY: (0, 1), keys.ATOM_VIRIAL: (0, 9)})
            return EnsembleOutput(*(np.zeros((nm, nf, *shapes[n])) for n in names))
        parts: list[dict[str, list[np.ndarray]]] = [{n: [] for n in names} for _ in range(nm)]
        start = 0
        while start < nf:
            stop = min(nf, start + self.budget.frames(natoms))
            sl = slice(start, stop)
            try:
                outs = self._eval_chunk(
                    coords[sl],
                    None if cells is None else cells[sl],
                    atype[sl],
                    [None if p is None else p[sl] for p in fps],
                    [None if p is None else p[sl] for p in aps],
                    names,
                    atomic,
                )
            except (RuntimeError, MemoryError) as exc:
                if _is_oom(exc) and self.budget.out_of_memory((stop - start) * natoms, natoms):
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    continue
                raise
            for k, out in enumerate(outs):
                for n in names:
                    parts[k][n].append(out[n])
            self.budget.succeeded(first.device)
            start = stop
        stacked = [np.stack([np.concatenate(p[n]) for p in parts]) for n in names]
        return EnsembleOutput(*stacked)

    def _eval_chunk(self, coords, cells, atype, fps, aps, names, atomic) -> list[dict]:
        """All members on a few frames: the neighbour data of each layout is built once."""
        chunk = self.budget.chunk(atype.shape[1])
        nbrs = [b(coords, atype, cells) for b in self._builders]
        on_device: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        outs = []
        for k, m in enumerate(self.members):
            dev = m.device
            key = (self._layout[k], str(dev))
            if key not in on_device:
                on_device[key] = {n: v.to(dev) for n, v in nbrs[self._layout[k]].items()}

            def tensor(x, dev=dev):  # copies: the caller's arrays may be read-only views
                return None if x is None else torch.tensor(x, device=dev)

            with torch.no_grad():
                out = m.model(
                    tensor(coords),
                    tensor(atype),
                    tensor(cells),
                    on_device[key],
                    tensor(fps[k]),
                    tensor(aps[k]),
                    chunk_atoms=chunk,
                    do_force=True,
                    do_virial=True,
                    do_atomic_virial=atomic,
                )
            outs.append({n: out[n].detach().to("cpu", torch.float64).numpy() for n in names})
        return outs


def check_compatible(members: Sequence[DeepPot], names: Sequence[str]) -> None:
    """ConfigError naming the models when type maps or cutoffs differ."""
    tmaps = [m.get_type_map() for m in members]
    if any(t != tmaps[0] for t in tmaps):
        listing = "; ".join(f"{n}: {t}" for n, t in zip(names, tmaps))
        raise ConfigError(
            f"ensemble: the models have different type maps ({listing}); "
            "every member must use the same type map"
        )
    rcuts = [m.get_rcut() for m in members]
    if any(r != rcuts[0] for r in rcuts):
        listing = "; ".join(f"{n}: {r:g} Å" for n, r in zip(names, rcuts))
        raise ConfigError(
            f"ensemble: the models have different cutoffs ({listing}); "
            "an ensemble shares one neighbour list, so every member must use the same rcut"
        )


class EnsembleCalculator(Calculator):
    """ASE calculator over an :class:`Ensemble`: the mean energy, forces and stress of the
    members, and their deviations (as ``lam model-devi`` computes them) in ``results``:

    ``max_devi_f``, ``min_devi_f``, ``avg_devi_f`` (eV/Å), ``devi_f`` [natoms] (per-atom
    force deviation), ``max_devi_v``, ``min_devi_v``, ``avg_devi_v`` (virial per atom, eV),
    ``devi_e`` (energy per atom, eV), and the members' own ``model_energies`` [nm] and
    ``model_forces`` [nm, natoms, 3]. ``relative`` / ``relative_v``: relative force / virial
    deviations with that level (see :func:`lamkit.infer.deviation.force_deviation`).

    Args:
        models: an :class:`Ensemble` or what it takes (model files, models, DeepPots).
        type_dict: element symbol -> type index; default: from the type map.
    """

    name = "lamkit-ensemble"
    implemented_properties: ClassVar[list[str]] = [
        "energy",
        "free_energy",
        "forces",
        "virial",
        "stress",
        "energies",
        "max_devi_f",
        "min_devi_f",
        "avg_devi_f",
        "devi_f",
        "max_devi_v",
        "min_devi_v",
        "avg_devi_v",
        "devi_e",
        "model_energies",
        "model_forces",
    ]

    def __init__(
        self,
        models: Ensemble | Sequence[ModelLike],
        *,
        head: str | None = None,
        device: str | None = None,
        type_dict: dict[str, int] | None = None,
        relative: float | None = None,
        relative_v: float | None = None,
        label: str = "lamkit-ensemble",
        **kwargs,
    ):
        super().__init__(label=label, **kwargs)
        self.ensemble = (
            models if isinstance(models, Ensemble) else Ensemble(models, head=head, device=device)
        )
        type_map = self.ensemble.get_type_map()
        if type_dict is None:
            type_dict = {name: i for i, name in enumerate(type_map)}
        for symbol, index in type_dict.items():
            if not 0 <= int(index) < len(type_map):
                raise ValueError(
                    f"type_dict: '{symbol}' -> {index} is out of range for the type map {type_map}"
                )
        self.type_dict = {k: int(v) for k, v in type_dict.items()}
        self.relative = relative
        self.relative_v = relative_v

    def calculate(
        self, atoms=None, properties=("energy", "forces"), system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        symbols = atoms.get_chemical_symbols()
        unknown = sorted({s for s in symbols if s not in self.type_dict})
        if unknown:
            raise ValueError(
                f"element(s) {unknown} not in the ensemble's type map "
                f"{self.ensemble.get_type_map()}"
            )
        atype = np.array([self.type_dict[s] for s in symbols], dtype=np.int64)
        periodic = bool(np.any(atoms.get_pbc()))
        if periodic and abs(atoms.cell.volume) < 1e-10:
            raise ValueError(
                f"atoms: periodic boundary conditions {atoms.get_pbc().tolist()} need a cell "
                f"with non-zero volume, got cell {atoms.get_cell().tolist()}"
            )
        cell = atoms.get_cell().array.reshape(1, 9) if periodic else None
        atomic = "energies" in properties
        out = self.ensemble.eval(
            atoms.get_positions().reshape(1, -1),
            cell,
            atype,
            atomic=atomic,
            fparam=atoms.info.get("fparam"),
            aparam=atoms.info.get("aparam"),
        )
        natoms = len(atoms)
        virial = out.virial.mean(axis=0)[0].reshape(3, 3)
        energy = float(out.energy.mean(axis=0)[0, 0])
        res = self.results
        res["energy"] = res["free_energy"] = energy
        res["forces"] = out.force.mean(axis=0)[0]
        res["virial"] = virial
        if atomic:
            res["energies"] = out.atom_energy.mean(axis=0)[0, :, 0]
        res["model_energies"] = out.energy[:, 0, 0]
        res["model_forces"] = out.force[:, 0]
        per_atom = max(natoms, 1)
        devi_f = force_deviation(out.force, relative=self.relative)
        vmax, vmin, vavg = virial_deviation(out.virial / per_atom, relative=self.relative_v)
        res["devi_f"] = devi_f[0]
        if natoms:
            res["max_devi_f"] = float(devi_f[0].max())
            res["min_devi_f"] = float(devi_f[0].min())
            res["avg_devi_f"] = float(devi_f[0].mean())
        else:
            res["max_devi_f"] = res["min_devi_f"] = res["avg_devi_f"] = 0.0
        res["max_devi_v"], res["min_devi_v"], res["avg_devi_v"] = (
            float(vmax[0]),
            float(vmin[0]),
            float(vavg[0]),
        )
        res["devi_e"] = float(energy_deviation(out.energy / per_atom)[0])
        if periodic:
            stress = -0.5 * (virial + virial.T) / atoms.get_volume()
            res["stress"] = stress.reshape(9)[_VOIGT]
        elif "stress" in properties:
            raise PropertyNotImplementedError(
                "stress: the atoms are not periodic (no pbc set), so there is no cell to strain"
            )
