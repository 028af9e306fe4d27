"""``lam change-bias``: refit / set / user values of the energy bias, the written file's kind,
clear errors, and the same bias as ``dp --pt change-bias`` from a reference checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.cli.main import main
from lamkit.errors import ConfigError
from lamkit.model import build_model
from lamkit.model.io import load_model, model_payload, read_file, save_model
from lamkit.train.change_bias import change_bias

from .conftest import energy_input, need_shared, require_reference

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_e2_a",
        "sel": [46, 92],
        "rcut": 6.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "seed": 1,
    },
    "fitting_net": {"neuron": [8], "seed": 1},
}


def _frames(system):
    """Energies [nf], type counts [nf, 2] and predictions of ``model`` on a water system."""
    e = np.load(system / "set.000" / "energy.npy").reshape(-1)
    types = np.loadtxt(system / "type.raw", dtype=int)
    counts = np.tile(np.bincount(types, minlength=2), (len(e), 1)).astype(float)
    return e, counts


def _predict(model, system) -> np.ndarray:
    coord = torch.tensor(np.load(system / "set.000" / "coord.npy")).reshape(-1, 192, 3)
    box = torch.tensor(np.load(system / "set.000" / "box.npy"))
    atype = torch.tensor(np.loadtxt(system / "type.raw", dtype=int)).expand(len(coord), -1)
    out = model.evaluate(coord, atype, box, do_force=False, do_virial=False)
    return out[keys.ENERGY].detach().numpy().reshape(-1)


@pytest.fixture(scope="module")
def water():
    return need_shared("water")


@pytest.fixture
def frozen(tmp_path):
    model = build_model(CONFIG)
    with torch.no_grad():
        model.out_bias.copy_(torch.tensor([[-90.0], [-45.0]], dtype=model.out_bias.dtype))
    path = tmp_path / "model.pth"
    save_model(model, path)
    return path


def test_change_shifts_by_the_residual_fit(frozen, water, tmp_path):
    """change: new = old + lstsq(counts, E - E_model), so the refitted model has no per-type
    mean error left on those frames (a second change moves nothing)."""
    system = water / "data_3"
    out, old, new = change_bias(frozen, [system], tmp_path / "a.pth")
    np.testing.assert_allclose(old, [-90.0, -45.0])
    e, counts = _frames(system)
    before = _predict(load_model(frozen), system)
    # both types come in one ratio in this system: the minimum-norm shift, as the reference
    delta = np.linalg.lstsq(counts, e - before, rcond=None)[0]
    np.testing.assert_allclose(new, old + delta, rtol=1e-10)
    after = _predict(load_model(out), system)
    np.testing.assert_allclose(after - before, counts @ delta, rtol=1e-9)
    _, old2, new2 = change_bias(out, [system], tmp_path / "b.pth")
    np.testing.assert_allclose(new2, old2, atol=1e-6 * np.abs(old2).max())


def test_set_and_user_values(frozen, water, tmp_path, monkeypatch):
    systems = [water / "data_0", water / "data_3"]
    _, _, new = change_bias(frozen, systems, tmp_path / "s.pth", mode="set")
    rows = [_frames(s) for s in systems]
    e = np.concatenate([r[0] for r in rows])
    counts = np.concatenate([r[1] for r in rows])
    np.testing.assert_allclose(new, np.linalg.lstsq(counts, e, rcond=None)[0], rtol=1e-10)

    monkeypatch.chdir(tmp_path)
    assert main(["change-bias", str(frozen), "-b", "-93.5", "-46.25", "-o", "u.pth"]) == 0
    model = load_model("u.pth")
    np.testing.assert_array_equal(model.out_bias.numpy().ravel(), [-93.5, -46.25])


def test_checkpoint_stays_a_checkpoint(water, tmp_path):
    model = build_model(CONFIG)
    payload = model_payload(model, "checkpoint", step=7, optimizer={"marker": 1})
    torch.save(payload, tmp_path / "model.ckpt-7.pt")
    out, _, new = change_bias(tmp_path / "model.ckpt-7.pt", [water / "data_3"], numb_batch=5)
    assert out == tmp_path / "model.ckpt-7_updated.pt"
    obj = read_file(out)
    assert obj["kind"] == "checkpoint" and obj["step"] == 7 and obj["optimizer"] == {"marker": 1}
    np.testing.assert_array_equal(obj["model_state"]["out_bias"].numpy().ravel(), new)
    for k, v in model.state_dict().items():  # nothing else changed
        if not k.endswith("out_bias"):
            assert torch.equal(obj["model_state"][k], v), k


def test_errors_are_clear(frozen, water, tmp_path):
    with pytest.raises(ConfigError, match="3 bias values for the 2 types"):
        change_bias(frozen, bias_value=[1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="mode must be one of"):
        change_bias(frozen, [water / "data_3"], mode="shift")
    with pytest.raises(ConfigError, match="give data systems"):
        change_bias(frozen)
    prop = build_model(
        {**CONFIG, "fitting_net": {"type": "property", "task_dim": 2, "neuron": [4], "seed": 1}}
    )
    save_model(prop, tmp_path / "prop.pth")
    with pytest.raises(ConfigError, match="applies to energy models"):
        change_bias(tmp_path / "prop.pth", [water / "data_3"])


# --- parity with dp --pt change-bias ---------------------------------------------------------
def _reference_config(water) -> dict:
    return energy_input(CONFIG, [water / "data_0"], 1)


@pytest.mark.reference
@pytest.mark.parametrize("mode", ["change", "set"])
def test_matches_dp_change_bias(mode, tmp_path):
    import json

    water = require_reference()
    env = dict(os.environ, NUM_WORKERS="0", OMP_NUM_THREADS="2")
    dp = [sys.executable, "-m", "deepmd", "--pt"]
    (tmp_path / "input.json").write_text(json.dumps(_reference_config(water)))
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    res = subprocess.run(dp + ["train", "input.json", "--skip-neighbor-stat"], **run)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = tmp_path / "model.ckpt-1.pt"
    system = str(water / "data_3")
    res = subprocess.run(
        dp + ["change-bias", ckpt.name, "-s", system, "-m", mode, "-o", "ref.pt"], **run
    )
    assert res.returncode == 0, res.stderr[-2000:]
    state = torch.load(tmp_path / "ref.pt", map_location="cpu", weights_only=False)["model"]
    ref = state["Default"]["atomic_model.out_bias"] if "Default" in state else None
    if ref is None:
        ref = next(v for k, v in state.items() if k.endswith("atomic_model.out_bias"))
    _, old, new = change_bias(ckpt, [system], tmp_path / "lam.pth", mode=mode)
    ref = ref.numpy().reshape(-1)
    # the bias really moved (by far more than the tolerance)
    assert np.abs(new - old).max() > 100 * 1e-8 * np.abs(ref).max()
    np.testing.assert_allclose(new, ref, rtol=1e-8)
