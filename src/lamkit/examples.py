"""Built-in example data: a small Cu-Au alloy labelled with ASE's EMT potential.

``write_example(dir)`` makes two deepmd/npy systems (training and validation) of rattled,
strained and randomly substituted fcc supercells, plus an ``input.json`` in the DeePMD-kit v3
schema that trains a compact se_e2_a model on energies, forces and virials.
``lam example`` writes it; the main job ``lam quickstart`` is :mod:`lamkit.quickstart`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .data.writer import write_deepmd_system

log = logging.getLogger("lamkit")
TYPE_MAP = ["Cu", "Au"]


def _frames(nframes: int, seed: int, size=(2, 2, 2)):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.70, cubic=True).repeat(size)
    n = len(base)
    coords, boxes, energies, forces, virials = [], [], [], [], []
    types = np.zeros(n, dtype=np.int64)
    types[rng.permutation(n)[: n // 4]] = 1  # Cu3Au composition, one ordering per system
    for _ in range(nframes):
        atoms = base.copy()
        atoms.set_chemical_symbols([TYPE_MAP[t] for t in types])
        strain = np.eye(3) + rng.normal(0.0, 0.015, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        e = atoms.get_potential_energy()
        f = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        coords.append(atoms.positions.copy())
        boxes.append(atoms.cell.array.reshape(9))
        energies.append(e)
        forces.append(f)
        virials.append((-stress * atoms.get_volume()).reshape(9))
    labels = {"energy": np.array(energies), "force": np.array(forces), "virial": np.array(virials)}
    return np.array(coords), types, np.array(boxes), labels


def example_input(train_dirs: list[str], valid_dirs: list[str], steps: int = 2000) -> dict:
    return {
        "model": {
            "type_map": TYPE_MAP,
            "descriptor": {
                "type": "se_e2_a",
                "sel": "auto",
                "rcut": 5.0,
                "rcut_smth": 0.5,
                "neuron": [16, 32],
                "axis_neuron": 8,
                "type_one_side": True,
                "resnet_dt": False,
                "precision": "float64",
                "seed": 1,
            },
            "fitting_net": {
                "neuron": [64, 64],
                "resnet_dt": True,
                "precision": "float64",
                "seed": 1,
            },
        },
        "learning_rate": {
            "type": "exp",
            "start_lr": 2e-3,
            "stop_lr": 2e-5,
            "decay_steps": max(steps // 20, 1),
        },
        "loss": {
            "type": "ener",
            "start_pref_e": 0.2,
            "limit_pref_e": 2,
            "start_pref_f": 100,
            "limit_pref_f": 1,
            "start_pref_v": 0.02,
            "limit_pref_v": 1,
        },
        "training": {
            "training_data": {"systems": train_dirs, "batch_size": "auto"},
            "validation_data": {"systems": valid_dirs, "batch_size": "auto", "numb_btch": 2},
            "numb_steps": steps,
            "seed": 10,
            "disp_freq": max(steps // 20, 1),
            "save_freq": max(steps // 4, 1),
        },
    }


def write_example(
    folder: str | Path = "lamkit-example", nframes: int = 40, steps: int = 2000
) -> Path:
    """Write ``data/train_*``, ``data/valid`` and ``input.json`` under ``folder``."""
    folder = Path(folder)
    train_dirs = []
    for k, size in enumerate([(2, 2, 2), (3, 2, 2)]):
        c, t, b, lab = _frames(nframes, seed=100 + k, size=size)
        d = write_deepmd_system(
            folder / "data" / f"train_{k}", c, t, TYPE_MAP, b, lab, set_size=max(nframes // 2, 1)
        )
        train_dirs.append(str(d.relative_to(folder)))
    c, t, b, lab = _frames(max(nframes // 4, 2), seed=200)
    write_deepmd_system(folder / "data" / "valid", c, t, TYPE_MAP, b, lab)
    conf = example_input(train_dirs, ["data/valid"], steps)
    (folder / "input.json").write_text(json.dumps(conf, indent=2) + "\n")
    return folder


def water_se_e2_a_config(
    train: list[str],
    valid: list[str] | None = None,
    steps: int = 100_000,
    data_stat_nbatch: int = 20,
    numb_btch: int = 1,
    seed: int = 10,
) -> dict:
    """The se_e2_a water input of DeePMD-kit's examples (PyTorch twin), for given data folders:
    sel [46, 92], rcut 6 Å, embedding [25, 50, 100] x 16 axis, fitting [240, 240, 240]."""
    conf = {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": {
                "type": "se_e2_a",
                "sel": [46, 92],
                "rcut_smth": 0.5,
                "rcut": 6.0,
                "neuron": [25, 50, 100],
                "resnet_dt": False,
                "axis_neuron": 16,
                "type_one_side": True,
                "precision": "float64",
                "seed": 1,
            },
            "fitting_net": {
                "neuron": [240, 240, 240],
                "resnet_dt": True,
                "precision": "float64",
                "seed": 1,
            },
            "data_stat_nbatch": data_stat_nbatch,
        },
        "learning_rate": {
            "type": "exp",
            "decay_steps": 5000,
            "start_lr": 0.001,
            "stop_lr": 3.51e-8,
        },
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02,
            "limit_pref_e": 1,
            "start_pref_f": 1000,
            "limit_pref_f": 1,
            "start_pref_v": 0,
            "limit_pref_v": 0,
        },
        "training": {
            "training_data": {"systems": list(train), "batch_size": 1},
            "numb_steps": steps,
            "seed": seed,
            "disp_file": "lcurve.out",
            "disp_freq": max(1, steps // 10),
            "save_freq": steps,
        },
    }
    if valid:
        conf["training"]["validation_data"] = {
            "systems": list(valid),
            "batch_size": 1,
            "numb_btch": numb_btch,
        }
    return conf
