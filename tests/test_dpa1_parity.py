"""Parity of DPA-1 (se_atten) with the reference DeePMD-kit (PyTorch backend).

The reference trains 3 steps on water data_0 for two small se_atten configurations (concat with
two attention layers; strip without attention, smooth type embedding, non-zero davg); lamkit
loads its checkpoints and must reproduce energies, forces, virials and their atomic parts on
data_3 frames to 1e-8 relative, and compute the same davg/dstd on the same frames.

Skipped without ``import deepmd.pt`` (a failure when ``CI=true``), like
``test_reference_parity.py`` whose helpers are reused.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import energy_input, require_reference
from .reference_runs import (
    DP,
    WATER,
    finish_run,
    rel_diff,
    start_run,
    water_frames,
)

pytestmark = pytest.mark.reference

NFRAMES = 3
RTOL = 1e-8
STAT_RTOL = 1e-10
PREFIX = "model.Default.atomic_model."
NAMES = ("energy", "force", "virial", "atom_energy", "atom_virial")

VARIANTS = {
    "concat-attn2": {"attn_layer": 2, "tebd_input_mode": "concat"},
    "strip-attn0-smooth": {
        "attn_layer": 0,
        "tebd_input_mode": "strip",
        "smooth_type_embedding": True,
        "type_one_side": True,
        "set_davg_zero": False,
    },
}


@pytest.fixture(scope="module", autouse=True)
def _reference_available():
    require_reference()


def make_config(variant: str) -> dict:
    model = {
        "type_map": ["O", "H"],
        "descriptor": {
            "type": "se_atten",
            "sel": 60,
            "rcut": 6.0,
            "rcut_smth": 0.5,
            "neuron": [8, 16, 32],
            "axis_neuron": 4,
            "attn": 32,
            "tebd_dim": 8,
            "precision": "float64",
            "seed": 1,
            **VARIANTS[variant],
        },
        "fitting_net": {"neuron": [32, 32], "precision": "float64", "seed": 1},
        "data_stat_nbatch": 100,  # >= the 80 frames of data_0: every frame, both codes
    }
    return energy_input(model, [WATER / "data_0"], 3, valid=[WATER / "data_3"])


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory) -> dict[str, Path]:
    """``dp --pt train`` for 3 steps, both variants concurrently."""
    runs = {}
    for variant in VARIANTS:
        wd = tmp_path_factory.mktemp(f"dp_dpa1_{variant}")
        (wd / "input.json").write_text(json.dumps(make_config(variant), indent=1))
        cmd = DP + ["train", "input.json", "--skip-neighbor-stat"]
        runs[variant] = (wd, start_run(cmd, wd, "train.log"))
    out = {}
    for variant, (wd, proc) in runs.items():
        finish_run(proc, wd, "train.log")
        ckpt = wd / "model.ckpt-3.pt"
        assert ckpt.is_file(), f"the reference wrote no {ckpt.name} in {wd}"
        out[variant] = ckpt
    return out


@pytest.fixture(scope="module")
def reference_predictions(reference_runs) -> dict[str, dict[str, np.ndarray]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deepmd.infer import DeepPot as RefDeepPot

        coord, box, atype = water_frames(NFRAMES)
        out = {}
        for variant, ckpt in reference_runs.items():
            res = RefDeepPot(str(ckpt)).eval(coord.reshape(NFRAMES, -1), box, atype, atomic=True)
            out[variant] = dict(zip(NAMES, (np.asarray(r, dtype=np.float64) for r in res)))
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_load_model_matches_reference(variant, reference_runs, reference_predictions):
    from lamkit.model import load_model

    model = load_model(reference_runs[variant])
    assert type(model.descriptor).__name__ == "DPA1"
    coord, box, atype = water_frames(NFRAMES)
    out = model.evaluate(
        torch.tensor(coord),
        torch.tensor(np.tile(atype, (NFRAMES, 1))),
        torch.tensor(box),
        do_atomic_virial=True,
    )
    ref = reference_predictions[variant]
    diffs = {k: rel_diff(ref[k], out[k].detach().numpy()) for k in NAMES}
    print(f"{variant}: {diffs}")
    assert all(d < RTOL for d in diffs.values()), diffs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_deep_pot_matches_reference(variant, reference_runs, reference_predictions):
    from lamkit.infer.deep_pot import DeepPot

    coord, box, atype = water_frames(NFRAMES)
    res = DeepPot(str(reference_runs[variant])).eval(
        coord.reshape(NFRAMES, -1), box, atype, atomic=True
    )
    ref = reference_predictions[variant]
    diffs = {k: rel_diff(ref[k], got) for k, got in zip(NAMES, res)}
    assert all(d < RTOL for d in diffs.values()), diffs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_statistics_match_reference(variant, reference_runs, tmp_path):
    """davg/dstd (every slot) computed by lamkit's Trainer on all 80 frames of data_0."""
    from lamkit.train import Trainer

    sd = torch.load(str(reference_runs[variant]), map_location="cpu", weights_only=False)
    mean = sd["model"][PREFIX + "descriptor.se_atten.mean"].numpy()  # [ntypes, nnei, 4]
    stddev = sd["model"][PREFIX + "descriptor.se_atten.stddev"].numpy()
    model = Trainer(make_config(variant), tmp_path).model
    davg = model.descriptor.davg.detach().numpy()
    dstd = model.descriptor.dstd.detach().numpy()
    assert davg.shape == (2, 4) and mean.shape == (2, 60, 4)
    d_avg = rel_diff(mean, np.broadcast_to(davg[:, None, :], mean.shape))
    d_std = rel_diff(stddev, np.broadcast_to(dstd[:, None, :], stddev.shape))
    assert max(d_avg, d_std) < STAT_RTOL, {"davg": d_avg, "dstd": d_std}
    if VARIANTS[variant].get("set_davg_zero", True):
        assert (davg == 0).all()
    else:
        assert (davg[:, 0] > 0).all()
