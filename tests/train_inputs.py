"""Small training inputs shared by the training, multi-task, fine-tuning and distributed tests
(not a test module): a tiny DPA-1 energy model, its single- and multi-task inputs on the shared
water data, the built-in example's input with a few steps, and water subsets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from .conftest import need_shared

DPA1 = {
    "type": "dpa1",
    "sel": 40,
    "rcut": 4.0,
    "rcut_smth": 0.5,
    "neuron": [4, 8],
    "axis_neuron": 4,
    "attn_layer": 0,
    "tebd_dim": 8,  # not ntypes or 2 ntypes (a residual type embedding) for 2 or 3 types
    "seed": 1,
}
FIT = {"neuron": [8, 8], "seed": 2}
LOSS = {
    "type": "ener",
    "start_pref_e": 0.02,
    "limit_pref_e": 1,
    "start_pref_f": 1000,
    "limit_pref_f": 1,
}
LR = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 50}


def example_config(example_dir: Path, steps: int = 6, **training) -> dict:
    """The built-in example's ``input.json`` (the ``example_dir`` fixture) with absolute data
    paths, ``steps`` steps, ``disp_freq`` 2, ``save_freq`` 3 and ``training`` keys added."""
    conf = json.loads((example_dir / "input.json").read_text())
    tr = conf["training"]
    for part in ("training_data", "validation_data"):
        tr[part]["systems"] = [str(example_dir / s) for s in tr[part]["systems"]]
    tr.update({"numb_steps": steps, "disp_freq": 2, "save_freq": 3, **training})
    return conf


def single_config(systems, steps=4, type_map=("O", "H"), descriptor=None, **training) -> dict:
    """A single-task input of the tiny DPA-1 model (or ``descriptor``) on ``systems``."""
    return {
        "model": {
            "type_map": list(type_map),
            "descriptor": copy.deepcopy(descriptor or DPA1),
            "fitting_net": dict(FIT),
        },
        "learning_rate": dict(LR),
        "loss": dict(LOSS),
        "training": {
            "training_data": {"systems": [str(s) for s in systems], "batch_size": 1},
            "numb_steps": steps,
            "seed": 3,
            "disp_freq": 2,
            "save_freq": 2,
            **training,
        },
    }


def multitask_config(steps=4, level_b="", model_prob=None, **training) -> dict:
    """Two tasks sharing the tiny DPA-1 descriptor: ``water`` (water data_0, validated on
    data_3) and ``mixed`` (the mixed-type water frames, descriptor ``"desc" + level_b``)."""
    water = need_shared("water")
    mixed = need_shared("mixed_type_small", "data_mixed_type")
    tr = {
        "data_dict": {
            "water": {
                "training_data": {"systems": [str(water / "data_0")], "batch_size": 1},
                "validation_data": {"systems": [str(water / "data_3")], "batch_size": 1},
            },
            "mixed": {"training_data": {"systems": [str(mixed)], "batch_size": 1}},
        },
        "numb_steps": steps,
        "seed": 3,
        "disp_freq": 2,
        "save_freq": 2,
        **training,
    }
    if model_prob is not None:
        tr["model_prob"] = model_prob
    return {
        "model": {
            "shared_dict": {"tm": ["O", "H"], "desc": DPA1},
            "model_dict": {
                "water": {"type_map": "tm", "descriptor": "desc", "fitting_net": dict(FIT)},
                "mixed": {
                    "type_map": "tm",
                    "descriptor": "desc" + level_b,
                    "fitting_net": {**FIT, "seed": 5},
                },
            },
        },
        "learning_rate": dict(LR),
        "loss_dict": {"water": LOSS, "mixed": LOSS},
        "training": tr,
    }


def water_subset(src: Path, dst: Path, n: int, retype: int | None = None) -> Path:
    """The first ``n`` frames of a water system written to ``dst`` (``retype``: index of an H
    atom to make Na)."""
    (dst / "set.000").mkdir(parents=True)
    types = np.loadtxt(src / "type.raw", dtype=np.int64)
    names = "O H"
    if retype is not None:
        types[np.flatnonzero(types == 1)[retype]] = 2
        names = "O H Na"
    np.savetxt(dst / "type.raw", types, fmt="%d")
    (dst / "type_map.raw").write_text("\n".join(names.split()) + "\n")
    for key in ("coord", "box", "energy", "force"):
        np.save(dst / "set.000" / f"{key}.npy", np.load(src / "set.000" / f"{key}.npy")[:n])
    return dst
