"""Fixtures for tests of the active-learning loop (:mod:`lamkit.learn`): a tiny Cu/Ni model
pretrained on EMT frames, a labeller that fails like a DFT code, and a small ``lam learn``
config.

    from lamkit.testing.learn import FlakyEMT, learn_config, pretrain_cu_ni
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from ..data.writer import write_deepmd_system
from ..train import Trainer


def _emt_frames(
    sym: str,
    a0: float,
    rng: np.random.Generator,
    nframes: int = 12,
    symbols: Sequence[str] | None = None,
) -> dict:
    """``nframes`` strained (±3 %) and rattled (0.05 Å) 32-atom fcc cells of ``sym`` (or of the
    32 per-site ``symbols``) with EMT energies [eV], forces [eV/Å] and virials [eV]."""
    coords, boxes, energy, force, virial = [], [], [], [], []
    for _ in range(nframes):
        at = bulk(sym, "fcc", a=a0 * (1 + rng.uniform(-0.03, 0.03)), cubic=True)
        at = at.repeat((2, 2, 2))
        if symbols is not None:
            at.set_chemical_symbols(list(symbols))
        at.positions += rng.normal(0, 0.05, at.positions.shape)
        at.calc = EMT()
        energy.append(at.get_potential_energy())
        force.append(at.get_forces())
        virial.append(-at.get_stress(voigt=False).reshape(9) * at.get_volume())
        coords.append(at.positions.copy())
        boxes.append(at.cell.array.reshape(9))
    return {
        "coord": np.stack(coords),
        "box": np.stack(boxes),
        "natoms": len(at),
        "labels": {"energy": energy, "force": np.stack(force), "virial": np.stack(virial)},
    }


def pretrain_cu_ni(folder: Path, type_map: Sequence[str] = ("Cu", "Ni"), steps: int = 200) -> str:
    """Train a tiny se_e2_a model ``steps`` steps on EMT frames of fcc Cu and Ni (12 each,
    written under ``folder/Cu`` and ``folder/Ni``); returns the checkpoint path."""
    folder = Path(folder)
    rng = np.random.default_rng(0)
    systems = []
    for sym, a0 in (("Cu", 3.61), ("Ni", 3.52)):
        frames = _emt_frames(sym, a0, rng)
        atype = np.full(frames["natoms"], list(type_map).index(sym))
        systems.append(
            write_deepmd_system(
                folder / sym,
                frames["coord"],
                atype,
                list(type_map),
                box=frames["box"],
                labels=frames["labels"],
            )
        )
    conf = {
        "model": {
            "type_map": list(type_map),
            "descriptor": {
                "type": "se_e2_a",
                "sel": [48, 48],
                "rcut": 4.5,
                "rcut_smth": 0.5,
                "neuron": [4, 8],
                "axis_neuron": 4,
                "seed": 1,
            },
            "fitting_net": {"neuron": [8, 8], "seed": 2},
        },
        "learning_rate": {"type": "exp", "start_lr": 3e-3, "stop_lr": 1e-4, "decay_steps": 20},
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02,
            "limit_pref_e": 1,
            "start_pref_f": 1000,
            "limit_pref_f": 1,
        },
        "training": {
            "training_data": {"systems": [str(s) for s in systems], "batch_size": 1},
            "numb_steps": steps,
            "seed": 1,
            "disp_freq": 100,
            "save_freq": 1000,
        },
    }
    return str(Trainer(conf, folder / "out").run())


class FlakyEMT(EMT):
    """EMT that fails on explored vacancy frames (31 atoms carrying a ``max_devi_f``), as a
    DFT code fails to converge."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        if atoms is not None and "max_devi_f" in atoms.info and len(atoms) == 31:
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, properties, system_changes)


def learn_config(model: Any, **over: Any) -> dict:
    """A small ``lam learn`` config: fcc Cu, its lattice constant and vacancy energy, the
    :class:`FlakyEMT` labeller, 2 members of 20 steps, 2 iterations; ``over`` replaces
    top-level sections."""
    conf = {
        "model": model,
        "structures": {"Cu": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.6, "cubic": True}},
        "properties": [
            {"name": "lattice", "structure": "Cu", "tolerance": "0.5 %"},
            {"name": "vacancy", "structure": "Cu", "tolerance": "0.1 eV"},
        ],
        "labeller": FlakyEMT(),
        "train": {"members": 2, "numb_steps": 20, "init_frames": 1},
        "explore": {"temperatures": [300], "steps": 20, "traj_freq": 5},
        "select": {"lo": "0 eV/Å", "hi": "1 eV/Å", "max_select": 16},
        "converge": {"max_iterations": 2},
    }
    conf.update(over)
    return conf
