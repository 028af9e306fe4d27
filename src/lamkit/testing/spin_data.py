"""Labelled magnetic test systems (deepmd/npy with ``spin.npy`` and ``force_mag.npy``) from a
small analytic model, for spin-model tests and examples, and the reference's spin example input
(:data:`EXAMPLE`) with :func:`example_dir` to lay it out with such data.

The model (a rock-salt-like NiO cell, Ni magnetic): pair repulsion ``A exp(-r / rho)``,
a Heisenberg exchange ``-J s_i . s_j`` between magnetic atoms, and a single-site term
``K (|s_i|^2 - m0^2)^2``, every pair term smoothly cut at ``rc`` with
``f(r) = (1 - (r / rc)^2)^2``. Energies, forces ``-dE/dR``, magnetic forces ``-dE/ds`` and
virials ``-(dE/d eps)^T`` (spins held fixed under the strain ``R -> R (I + eps)``) come from
automatic differentiation in float64.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from ..data.writer import write_deepmd_system

TYPE_MAP = ["Ni", "O"]
PARAMS = {"A": 60.0, "rho": 0.45, "J": 0.08, "K": 0.3, "m0": 1.6, "rc": 4.5}


def _energy(coord: torch.Tensor, cell: torch.Tensor, atype, spin: torch.Tensor) -> torch.Tensor:
    p = PARAMS
    n = len(atype)
    mag = torch.as_tensor(np.asarray(atype) == 0)
    total = (p["K"] * (((spin * spin).sum(-1) - p["m0"] ** 2) ** 2) * mag).sum()
    shifts = torch.tensor(list(itertools.product(range(-2, 3), repeat=3)), dtype=coord.dtype)
    images = shifts @ cell  # [27, 3]
    d = coord[None, :, None, :] + images[:, None, None, :] - coord[None, None, :, :]
    r2 = (d * d).sum(-1)  # [27, n, n]: j + image minus i
    self_pair = (shifts.abs().sum(1) == 0)[:, None, None] & torch.eye(n, dtype=torch.bool)
    r2 = torch.where(self_pair, torch.full_like(r2, 4 * p["rc"] ** 2), r2)
    r = torch.sqrt(r2)
    fc = torch.where(r < p["rc"], (1 - r2 / p["rc"] ** 2) ** 2, torch.zeros_like(r))
    pair = p["A"] * torch.exp(-r / p["rho"])
    both = (mag[:, None] & mag[None, :]).to(coord.dtype)
    ss = (spin[:, None, :] * spin[None, :, :]).sum(-1)  # [n(j), n(i)]
    exch = -p["J"] * ss * both
    return total + 0.5 * ((pair + exch[None]) * fc).sum()


def label_frame(coord: np.ndarray, cell: np.ndarray, atype, spin: np.ndarray) -> dict:
    """Energy (eV), force (eV/Å), force_mag (eV/μB) and virial (eV) of one frame."""
    c = torch.tensor(coord, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(spin, dtype=torch.float64, requires_grad=True)
    eps = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deform = torch.eye(3, dtype=torch.float64) + eps
    cell_t = torch.tensor(cell, dtype=torch.float64)
    e = _energy(c @ deform, cell_t @ deform, atype, s)
    gc, gs, ge = torch.autograd.grad(e, [c, s, eps])
    return {
        "energy": float(e.detach()),
        "force": -gc.numpy(),
        "force_mag": -gs.numpy(),
        "virial": -ge.numpy().T.reshape(9),
    }


def nio_frames(nframes: int, seed: int = 0, a: float = 4.17, jitter: float = 0.08):
    """``nframes`` perturbed 8-atom NiO cells: coords [nf, 8, 3], atype [8], cells [nf, 9],
    spins [nf, 8, 3] (Ni about 1.6 μB in random directions, O zero) and their labels."""
    rng = np.random.default_rng(seed)
    frac = np.array(
        [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0],
         [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]
    )
    atype = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = {k: [] for k in ("coord", "box", "spin", "energy", "force", "force_mag", "virial")}
    for _ in range(nframes):
        cell = a * (np.eye(3) + rng.normal(scale=0.02, size=(3, 3)))
        coord = frac @ cell + rng.normal(scale=jitter, size=(8, 3))
        direction = rng.normal(size=(8, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        size = 1.6 + rng.normal(scale=0.1, size=(8, 1))
        spin = direction * size * (atype == 0)[:, None]
        lab = label_frame(coord, cell, atype, spin)
        out["coord"].append(coord)
        out["box"].append(cell.reshape(9))
        out["spin"].append(spin)
        for k in ("energy", "force", "force_mag", "virial"):
            out[k].append(lab[k])
    return atype, {k: np.asarray(v) for k, v in out.items()}


def write_nio_system(path: str | Path, nframes: int, seed: int = 0) -> Path:
    """A deepmd/npy system of :func:`nio_frames` with ``spin.npy`` and ``force_mag.npy``."""
    atype, f = nio_frames(nframes, seed)
    labels = {k: f[k] for k in ("energy", "force", "force_mag", "virial", "spin")}
    return write_deepmd_system(path, f["coord"], atype, TYPE_MAP, f["box"], labels)


# examples/spin/se_e2_a/input_torch.json of the reference (comments left out)
EXAMPLE = {
    "model": {
        "type_map": ["Ni", "O"],
        "descriptor": {"type": "se_e2_a", "sel": [60, 60], "rcut_smth": 5.4, "rcut": 5.6,
                       "neuron": [25, 50, 100], "resnet_dt": False, "axis_neuron": 16,
                       "seed": 1},
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1},
        "data_stat_nbatch": 10,
        "spin": {"use_spin": [True, False], "virtual_scale": [0.3140]},
    },
    "learning_rate": {"type": "exp", "decay_steps": 5000, "start_lr": 0.001,
                      "stop_lr": 3.51e-8},
    "loss": {"type": "ener_spin", "start_pref_e": 0.02, "limit_pref_e": 1,
             "start_pref_fr": 1000, "limit_pref_fr": 1, "start_pref_fm": 1000,
             "limit_pref_fm": 1},
    "training": {
        "training_data": {"systems": ["../data_reformat/data_0", "../data_reformat/data_1"],
                          "batch_size": 3},
        "validation_data": {"systems": ["../data_reformat/data_2"], "batch_size": 1,
                            "numb_btch": 3},
        "numb_steps": 100000, "seed": 10, "disp_file": "lcurve.out", "disp_freq": 100,
        "save_freq": 10000,
    },
}
FRAMES = (6, 6, 3)


def example_dir(root: str | Path, steps: int) -> Path:
    """``root/data_reformat/data_{0,1,2}`` and ``root/se_e2_a/input.json`` (``steps`` steps)."""
    root = Path(root)
    for k, n in enumerate(FRAMES):
        write_nio_system(root / "data_reformat" / f"data_{k}", n, seed=k)
    conf = copy.deepcopy(EXAMPLE)
    conf["training"].update(numb_steps=steps, disp_freq=1, save_freq=max(steps, 1))
    work = root / "se_e2_a"
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.json").write_text(json.dumps(conf, indent=1))
    return work
