"""Property models end to end on the QM9-like example data (../shared/data/property): training
(statistics, lcurve columns), ``lam freeze``, ``lam test`` (per-column errors, detail file),
DeepProperty on the frozen model, and the errors for bad label files; a dipole model trained
on synthetic labels and tested with ``lam test``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lamkit.cli.main import main as lam
from lamkit.errors import DataError
from lamkit.train import Trainer

from .conftest import need_shared

SET = "set.000000"


def tiny_config(systems: list[str], valid: list[str], fitting: dict, loss: dict | None = None):
    return {
        "model": {
            "type_map": ["H", "C", "N", "O"],
            "descriptor": {
                "type": "dpa1",
                "sel": 30,
                "rcut": 5.0,
                "rcut_smth": 0.5,
                "neuron": [4, 8],
                "axis_neuron": 4,
                "attn": 8,
                "attn_layer": 0,
                "tebd_dim": 4,
                "seed": 1,
            },
            "fitting_net": {"neuron": [16, 16], "seed": 1, **fitting},
            "data_stat_nbatch": 5,
        },
        "learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 2},
        "loss": loss or {"type": "property", "metric": ["mae", "rmse"]},
        "training": {
            "training_data": {"systems": systems, "batch_size": 2},
            "validation_data": {"systems": valid, "batch_size": 2, "numb_btch": 2},
            "numb_steps": 4,
            "seed": 3,
            "disp_freq": 2,
            "save_freq": 4,
        },
    }


PROPERTY = {"type": "property", "task_dim": 3, "intensive": True, "property_name": "band_prop"}


@pytest.fixture(scope="module")
def data() -> Path:
    return need_shared("property")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prop_train")
    conf = tiny_config(
        [str(data / "data_0"), str(data / "data_1")], [str(data / "data_2")], PROPERTY
    )
    (out / "input.json").write_text(json.dumps(conf))
    assert lam(["train", str(out / "input.json"), "-o", str(out)]) == 0
    return out


def test_training_writes_property_metrics(trained):
    lines = (trained / "lcurve.out").read_text().splitlines()
    assert lines[0].split() == ["#", "step", "mae_val", "mae_trn", "rmse_val", "rmse_trn", "lr"]
    rows = np.loadtxt(trained / "lcurve.out", ndmin=2)
    assert rows[:, 0].tolist() == [1, 2, 4]
    assert np.all(np.isfinite(rows)) and np.all(rows[:, 1:5] > 0)
    ck = torch.load(trained / "model.ckpt-4.pt", weights_only=False)
    bias, std = ck["model_state"]["out_bias"].numpy(), ck["model_state"]["out_std"].numpy()
    # intensive HOMO/LUMO/gap in Hartree: the type-fraction regression reproduces the label
    # means (about -0.24, 0.04, 0.28) and leaves a residual std of a few 0.01 Ha
    assert bias.shape == (4, 3) and std.shape == (4, 3)
    assert np.all((std > 1e-3) & (std < 0.1)) and np.all(std == std[0])
    assert bias[:, 0].mean() < 0 < bias[:, 2].mean()


def test_freeze_test_and_deep_property(trained, data, tmp_path):
    from lamkit.infer import DeepProperty
    from lamkit.model import load_model

    frozen = tmp_path / "frozen.pth"
    assert lam(["freeze", "-c", str(trained), "-o", str(frozen)]) == 0
    d2 = data / "data_2"
    coord = np.load(d2 / SET / "coord.npy")[:5]
    types = np.load(d2 / SET / "real_atom_types.npy")[:5]
    labels = np.load(d2 / SET / "band_prop.npy")[:5]
    (p,) = DeepProperty(str(frozen)).eval(coord, None, types, mixed_type=True)
    ref = load_model(trained / "model.ckpt-4.pt")
    out = ref.evaluate(torch.tensor(coord).reshape(5, -1, 3), torch.tensor(types))
    np.testing.assert_allclose(p, out["band_prop"].detach().numpy(), rtol=1e-12)

    from lamkit.infer.metrics import run_test

    det = tmp_path / "det"
    res = run_test(str(frozen), str(d2), numb_test=5, detail_file=str(det))
    got = res["systems"][0]
    np.testing.assert_allclose(got["mae_property"], np.abs(p - labels).mean(), rtol=1e-10)
    for k in range(3):
        np.testing.assert_allclose(
            got[f"mae_property_{k}"], np.abs(p[:, k] - labels[:, k]).mean(), rtol=1e-10
        )
        np.testing.assert_allclose(
            got[f"rmse_property_{k}"], np.sqrt(((p[:, k] - labels[:, k]) ** 2).mean()), rtol=1e-10
        )
    for f in range(5):  # one file per frame, one row per component: label, prediction
        path = det.with_suffix(f".property.out.{f}")
        table = np.loadtxt(path)
        np.testing.assert_allclose(table, np.stack([labels[f], p[f]], 1), rtol=1e-10)
        assert path.read_text().splitlines()[0].endswith(f" - {f}: data_property pred_property")
    assert not det.with_suffix(".property.out").exists()
    both = run_test(str(frozen), str(data), numb_test=4)
    assert len(both["systems"]) == 3 and both["average"]["n_property"] == 3 * 4 * 3
    maes = [s["mae_property"] for s in both["systems"]]
    assert both["average"]["mae_property"] == pytest.approx(np.mean(maes), rel=1e-12)


# --- bad label files --------------------------------------------------------------------------
def _copy(data: Path, dst: Path) -> Path:
    shutil.copytree(data / "data_0", dst)
    return dst


@pytest.mark.parametrize("problem", ["missing", "columns", "nan"])
def test_bad_property_labels_are_clear_errors(problem, data, tmp_path):
    bad = _copy(data, tmp_path / "bad")
    label = bad / SET / "band_prop.npy"
    if problem == "missing":
        label.unlink()
        match = r"band_prop\.npy is missing.*required by model/fitting_net/property_name"
    elif problem == "columns":
        np.save(label, np.load(label)[:, :2])
        match = r"band_prop\.npy has 2 values per frame.*task_dim 3"
    else:
        arr = np.load(label)
        arr[7, 1] = np.nan
        np.save(label, arr)
        match = r"band_prop\.npy: frame 7, column 1 is nan"
    conf = tiny_config([str(bad)], [], PROPERTY)
    conf["training"]["validation_data"] = None
    with pytest.raises(DataError, match=match):
        Trainer(conf, tmp_path / "out")


# --- a dipole model -------------------------------------------------------------------------
def test_dipole_training_and_lam_test(data, tmp_path):
    sys_ = _copy(data, tmp_path / "dip")
    coord = np.load(sys_ / SET / "coord.npy").reshape(80, -1, 3)
    types = np.load(sys_ / SET / "real_atom_types.npy")
    charge = np.array([0.3, -0.2, -0.5, -0.6])[types][..., None]
    atomic = charge * (coord - coord.mean(1, keepdims=True))
    np.save(sys_ / SET / "atomic_dipole.npy", atomic.reshape(80, -1))
    np.save(sys_ / SET / "dipole.npy", atomic.sum(1))
    conf = tiny_config(
        [str(sys_)],
        [str(sys_)],
        {"type": "dipole"},
        {"type": "tensor", "pref": 1.0, "pref_atomic": 1.0},
    )
    trainer = Trainer(conf, tmp_path / "out")
    trainer.run()
    head = (tmp_path / "out" / "lcurve.out").read_text().splitlines()[0].split()
    assert "rmse_global_dipole_trn" in head and "rmse_local_dipole_val" in head
    from lamkit.infer.metrics import run_test

    ckpt = str(tmp_path / "out" / "model.ckpt-4.pt")
    glob = run_test(ckpt, str(sys_), numb_test=6)["systems"][0]
    loc = run_test(ckpt, str(sys_), numb_test=6, atomic=True)["systems"][0]
    from lamkit.infer import DeepDipole

    pred = DeepDipole(ckpt).eval(coord[:6], None, types[:6], mixed_type=True)
    want = np.sqrt(((pred.sum(1) - atomic[:6].sum(1)) ** 2).mean())
    assert glob["rmse"] == pytest.approx(want, rel=1e-10)
    assert glob["rmse_n"] == pytest.approx(want / 20, rel=1e-10)
    assert loc["rmse"] == pytest.approx(np.sqrt(((pred - atomic[:6]) ** 2).mean()), rel=1e-10)
