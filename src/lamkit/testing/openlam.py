"""The architecture of the published OpenLAM DPA-3.1-3M model, as DeePMD-kit multi-task
inputs, for tests and benchmarks that need a checkpoint shaped like the one users download
(random weights: the reference trains it a step or two here).

What is fixed by the published model (its ``_extra_state.model_params``): the DPA-3 descriptor
(16 repflow layers of 128/64/32 node/edge/angle channels, edge cutoff 6 Å with ``e_sel`` 1200,
angle cutoff 4 Å with ``a_sel`` 300, dynamic selection reduced 10x, angle compression with
split, smooth edge update, exponential switch, ``silut:3.0``, float32, no type-embedding bias);
one energy fitting [240, 240, 240] shared by every branch and told apart by a 31-wide case
embedding; a type map over the periodic table. What is ours: the branch names and their data.

    from lamkit.testing.openlam import openlam_multitask_input, emt_system
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from ..data.writer import write_deepmd_system
from .learn import _emt_frames

PERIODIC_TABLE = list(chemical_symbols[1:119])  # H ... Og, the pretrained models' type map
DIM_CASE_EMBD = 31  # branches of DPA-3.1-3M

REPFLOW = {
    "n_dim": 128,
    "e_dim": 64,
    "a_dim": 32,
    "nlayers": 16,
    "e_rcut": 6.0,
    "e_rcut_smth": 5.3,
    "e_sel": 1200,
    "a_rcut": 4.0,
    "a_rcut_smth": 3.5,
    "a_sel": 300,
    "axis_neuron": 4,
    "skip_stat": True,
    "fix_stat_std": 0.3,
    "a_compress_rate": 1,
    "a_compress_e_rate": 2,
    "a_compress_use_split": True,
    "update_angle": True,
    "smooth_edge_update": True,
    "use_dynamic_sel": True,
    "sel_reduce_factor": 10.0,
    "update_style": "res_residual",
    "update_residual": 0.1,
    "update_residual_init": "const",
    "n_multi_edge_message": 1,
    "optim_update": True,
    "use_exp_switch": True,
}

LOSS = {
    "type": "ener",
    "start_pref_e": 0.2,
    "limit_pref_e": 20,
    "start_pref_f": 100,
    "limit_pref_f": 60,
    "start_pref_v": 0.02,
    "limit_pref_v": 1,
}


def descriptor(precision: str = "float32", nlayers: int = 16, seed: int = 1) -> dict:
    """The DPA-3.1-3M descriptor section (``nlayers`` may shrink it for quick tests)."""
    return {
        "type": "dpa3",
        "repflow": dict(copy.deepcopy(REPFLOW), nlayers=nlayers),
        "activation_function": "silut:3.0",
        "precision": precision,
        "use_tebd_bias": False,
        "concat_output_tebd": False,
        "use_econf_tebd": False,
        "exclude_types": [],
        "env_protection": 0.0,
        "seed": seed,
    }


def fitting(precision: str = "float32", seed: int = 2) -> dict:
    """The shared energy fitting with its 31-wide case embedding."""
    return {
        "type": "ener",
        "neuron": [240, 240, 240],
        "activation_function": "tanh",
        "resnet_dt": True,
        "precision": precision,
        "dim_case_embd": DIM_CASE_EMBD,
        "seed": seed,
    }


def openlam_multitask_input(
    branches: Mapping[str, Sequence[str]],
    steps: int = 1,
    precision: str = "float32",
    nlayers: int = 16,
    data_stat_nbatch: int = 10,
    seed: int = 10,
) -> dict:
    """A multi-task input with DPA-3.1-3M's architecture: one branch per ``branches`` entry
    (name -> training systems), all sharing the descriptor ``dpa3_descriptor``, the fitting
    ``shared_fit`` and the periodic-table type map; equal branch probabilities, batch size 1."""
    branch = {"type_map": "type_map", "descriptor": "dpa3_descriptor", "fitting_net": "shared_fit"}
    names = list(branches)
    return {
        "model": {
            "shared_dict": {
                "type_map": list(PERIODIC_TABLE),
                "dpa3_descriptor": descriptor(precision, nlayers),
                "shared_fit": fitting(precision),
            },
            "model_dict": {n: dict(branch, data_stat_nbatch=data_stat_nbatch) for n in names},
        },
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 3e-5, "decay_steps": 5000},
        "loss_dict": {n: dict(LOSS) for n in names},
        "training": {
            "model_prob": {n: 1.0 / len(names) for n in names},
            "data_dict": {
                n: {"training_data": {"systems": [str(s) for s in branches[n]], "batch_size": 1}}
                for n in names
            },
            "numb_steps": steps,
            "seed": seed,
            "disp_freq": max(steps, 1),
            "save_freq": max(steps, 1),
        },
    }


def emt_system(folder: Path, elements: Sequence[str], nframes: int = 4, seed: int = 0) -> Path:
    """A deepmd/npy system of ``nframes`` strained, rattled 32-atom fcc cells of the alloy of
    ``elements`` (random decoration) with EMT energies, forces and virials; the type map is
    ``elements``."""
    rng = np.random.default_rng(seed)
    a0 = {"Cu": 3.61, "Ni": 3.52, "Au": 4.08, "Ag": 4.09, "Al": 4.05, "Pd": 3.89, "Pt": 3.92}
    lattice = float(np.mean([a0[e] for e in elements]))
    atype = rng.integers(0, len(elements), 32)
    symbols = [elements[t] for t in atype]
    frames = _emt_frames(elements[0], lattice, rng, nframes, symbols=symbols)
    return write_deepmd_system(
        Path(folder),
        frames["coord"],
        atype,
        list(elements),
        box=frames["box"],
        labels=frames["labels"],
    )
