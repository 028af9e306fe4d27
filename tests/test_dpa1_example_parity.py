"""``lam test -d`` vs ``dp --pt test -d`` on the reference's own DPA-1 water example.

The model is ``examples/water/se_atten/input_torch.json`` of DeePMD-kit 3.2 (written out below,
float64): ``sel`` 120, two non-smooth attention layers with ``attn_dotr`` and ``normalize``.
The reference builds it and saves it without training (``numb_steps`` 0, statistics from one
frame of data_0); both codes then test it on water data_3 frames 0-4.

Frames 1 and 4 hold pairs a few 1e-5 Å inside ``rcut``. Their switch value (~1e-15) is a
difference of numbers near 1, and ``attn_dotr`` normalises the env-matrix rows it scales
(``F.normalize``, eps 1e-12), so the last bit of a distance shows in the energy: lamkit wraps
the coordinates and evaluates the switch with the reference's floating-point operations and
gets the reference's energies exactly. The forces of such a model are ill-conditioned: the
reference's own forces on frame 1 move by up to 3e-5 eV/Å when every atom is translated by
1e-13 Å (a rigid shift) and by 3e-8 eV/Å when the frame is evaluated alone instead of in a
batch, so forces and virials of frames 1 and 4 are compared to that level only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import require_reference
from .reference_finetune import run_reference
from .reference_runs import LAM, WATER, finish_run, start_run

pytestmark = pytest.mark.reference

NFRAMES = 5
NATOMS = 192
ILL_FRAMES = (1, 4)  # frames with pairs just inside rcut (see the module docstring)

# examples/water/se_atten/input_torch.json of DeePMD-kit 3.2, model section unchanged
EXAMPLE_MODEL = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "dpa1",
        "sel": 120,
        "rcut_smth": 0.5,
        "rcut": 6.0,
        "neuron": [25, 50, 100],
        "tebd_dim": 8,
        "axis_neuron": 16,
        "type_one_side": True,
        "attn": 128,
        "attn_layer": 2,
        "attn_dotr": True,
        "attn_mask": False,
        "activation_function": "tanh",
        "scaling_factor": 1.0,
        "normalize": True,
        "temperature": 1.0,
        "seed": 1,
    },
    "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1},
}


def example_input() -> dict:
    """The example's input with the shared water data and no training steps."""
    return {
        "model": {**json.loads(json.dumps(EXAMPLE_MODEL)), "data_stat_nbatch": 1},
        "learning_rate": {
            "type": "exp",
            "decay_steps": 5000,
            "start_lr": 0.001,
            "stop_lr": 3.51e-08,
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
            "training_data": {"systems": [str(WATER / "data_0")], "batch_size": 1},
            "numb_steps": 0,
            "seed": 10,
            "disp_freq": 100,
            "save_freq": 1000,
        },
    }


@pytest.fixture(scope="module")
def detail_files(tmp_path_factory) -> Path:
    """``dp --pt test -d dp`` and ``lam test -d lam`` of the reference's checkpoint."""
    require_reference()
    wd = tmp_path_factory.mktemp("dpa1_example")
    (wd / "input.json").write_text(json.dumps(example_input(), indent=1))
    run_reference(["train", "input.json", "--skip-neighbor-stat"], wd)
    args = ["test", "-m", "model.ckpt-0.pt", "-s", str(WATER / "data_3"), "-n", str(NFRAMES)]
    lam = start_run(LAM + args + ["-d", "lam"], wd, "lam_test.log")
    run_reference(args + ["-d", "dp"], wd, log="dp_test.log")
    finish_run(lam, wd, "lam_test.log")
    return wd


def _columns(wd: Path, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    """(reference, lamkit) prediction columns of ``PREFIX<suffix>``, one block per frame."""
    a, b = (np.loadtxt(wd / f"{p}{suffix}", ndmin=2) for p in ("dp", "lam"))
    assert a.shape == b.shape, (suffix, a.shape, b.shape)
    half = a.shape[1] // 2
    return a[:, half:].reshape(NFRAMES, -1), b[:, half:].reshape(NFRAMES, -1)


def test_energies_are_the_references(detail_files):
    """Before lamkit reproduced the reference's coordinate wrap and switch arithmetic, frame 1
    differed by 1.5e-7 eV (atomic energies by 9e-8 eV)."""
    for suffix in (".e.out", ".e_peratom.out"):
        ref, got = _columns(detail_files, suffix)
        assert np.abs(got - ref).max() < 1e-10, (suffix, np.abs(got - ref).max(axis=1))


def test_forces_and_virials(detail_files):
    well = [k for k in range(NFRAMES) if k not in ILL_FRAMES]
    for suffix, tol_well, tol_ill in (
        (".f.out", 1e-9, 1e-6),  # eV/Å
        (".v.out", 1e-8, 1e-5),  # eV
    ):
        ref, got = _columns(detail_files, suffix)
        diff = np.abs(got - ref).max(axis=1)
        assert diff[well].max() < tol_well, (suffix, diff)
        assert diff[list(ILL_FRAMES)].max() < tol_ill, (suffix, diff)
    ref, _ = _columns(detail_files, ".f.out")
    assert ref.shape == (NFRAMES, NATOMS * 3)
