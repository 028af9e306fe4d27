"""Parity of property, dipole and polarizability models with the reference DeePMD-kit.

The reference trains one step (``dp --pt train --skip-neighbor-stat``, four runs at once) on
the QM9-like property molecules:

* ``intensive``: DPA-1 (the property example's descriptor, smaller), ``band_prop``, 3 columns,
  intensive; ``extensive``: se_e3_tebd, the same labels summed over atoms;
* ``dipole``: DPA-1 with synthetic global and atomic dipoles; ``polar``: se_e2_a on a
  standard-type copy of data_0 with synthetic polarizabilities (per-type ``scale``).

lamkit loads each checkpoint and must give the reference's per-frame and per-atom outputs on
data_2 frames to 1e-8 relative (float64), compute the same output statistics (``out_bias``,
``out_std``) from the same frames, the same loss values, metrics and gradients for one batch,
and the same ``lam test`` numbers as ``dp --pt test``. Skipped without ``import deepmd.pt`` (a
failure when ``CI=true``).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import need_shared, require_reference
from .reference_runs import DP, LAM, finish_run, rel_diff, start_run

pytestmark = pytest.mark.reference

RTOL = 1e-8
SET = "set.000000"
NFRAMES = 4


@pytest.fixture(scope="module", autouse=True)
def _reference_available():
    require_reference()


def _descriptor(kind: str) -> dict:
    if kind == "dpa1":
        return {
            "type": "dpa1",
            "sel": 30,
            "rcut": 5.0,
            "rcut_smth": 0.5,
            "neuron": [8, 16],
            "axis_neuron": 4,
            "attn": 16,
            "attn_layer": 1,
            "tebd_dim": 8,
        }
    if kind == "se_e3_tebd":
        return {"type": "se_e3_tebd", "sel": 30, "rcut": 4.0, "neuron": [4, 8], "tebd_dim": 4}
    return {"type": "se_e2_a", "sel": [12, 8, 4, 4], "rcut": 4.0, "neuron": [8, 16]}


def make_config(run: str, data: Path, tensors: Path) -> dict:
    prop = {"type": "property", "task_dim": 3, "property_name": "band_prop"}
    train = [str(data / "data_0"), str(data / "data_1")]
    loss = {"type": "property", "loss_func": "smooth_mae", "metric": ["mae", "rmse"]}
    if run == "intensive":
        desc, fit = _descriptor("dpa1"), {**prop, "intensive": True}
    elif run == "extensive":
        desc, fit = _descriptor("se_e3_tebd"), {**prop, "intensive": False}
    elif run == "dipole":
        desc, fit = _descriptor("dpa1"), {"type": "dipole"}
        train = [str(tensors / "mixed")]
        loss = {"type": "tensor", "pref": 1.0, "pref_atomic": 1.0}
    else:
        desc, fit = _descriptor("se_e2_a"), {"type": "polar", "scale": [1.0, 2.0, 0.5, 1.5]}
        train = [str(tensors / "standard")]
        loss = {"type": "tensor", "pref": 1.0, "pref_atomic": 0.0}
    return {
        "model": {
            "type_map": ["H", "C", "N", "O"],
            "descriptor": {**desc, "precision": "float64", "seed": 1},
            "fitting_net": {**fit, "neuron": [16, 16], "precision": "float64", "seed": 1},
            "data_stat_nbatch": 100,  # >= 80 frames per system: every frame, both codes
        },
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 100},
        "loss": loss,
        "training": {
            "training_data": {"systems": train, "batch_size": 1},
            "numb_steps": 1,
            "seed": 1,
            "disp_freq": 1,
            "save_freq": 1,
        },
    }


RUNS = ("intensive", "extensive", "dipole", "polar")


@pytest.fixture(scope="module")
def data() -> Path:
    return need_shared("property")


@pytest.fixture(scope="module")
def tensors(data, tmp_path_factory) -> Path:
    """data_0 with synthetic dipoles and polarizabilities, mixed type and standard type."""
    root = tmp_path_factory.mktemp("tensor_data")
    mixed = root / "mixed"
    shutil.copytree(data / "data_0", mixed)
    coord = np.load(mixed / SET / "coord.npy").reshape(80, -1, 3)
    types = np.load(mixed / SET / "real_atom_types.npy")
    rel = coord - coord.mean(1, keepdims=True)
    atomic = np.array([0.3, -0.2, -0.5, -0.6])[types][..., None] * rel
    np.save(mixed / SET / "atomic_dipole.npy", atomic.reshape(80, -1))
    np.save(mixed / SET / "dipole.npy", atomic.sum(1))
    polar = np.einsum("fia,fib->fab", rel, rel) / 20 + 3 * np.eye(3)
    std = root / "standard" / SET
    std.mkdir(parents=True)
    np.savetxt(std.parent / "type.raw", types[0], fmt="%d")
    shutil.copy(mixed / "type_map.raw", std.parent / "type_map.raw")
    (std.parent / "nopbc").touch()
    np.save(std / "coord.npy", coord.reshape(80, -1))
    np.save(std / "polarizability.npy", polar.reshape(80, 9))
    return root


@pytest.fixture(scope="module")
def reference_runs(data, tensors, tmp_path_factory) -> dict[str, Path]:
    procs = {}
    for run in RUNS:
        wd = tmp_path_factory.mktemp(f"dp_{run}")
        (wd / "input.json").write_text(json.dumps(make_config(run, data, tensors), indent=1))
        procs[run] = (
            wd,
            start_run(DP + ["train", "input.json", "--skip-neighbor-stat"], wd, "log"),
        )
    out = {}
    for run, (wd, proc) in procs.items():
        finish_run(proc, wd, "log")
        assert (wd / "model.ckpt-1.pt").is_file(), f"the reference wrote no checkpoint in {wd}"
        out[run] = wd / "model.ckpt-1.pt"
    return out


def frames(data: Path, n: int = NFRAMES):
    d = data / "data_2" / SET
    coord = np.load(d / "coord.npy")[:n].reshape(n, -1, 3)
    return coord, np.load(d / "real_atom_types.npy")[:n], np.load(d / "band_prop.npy")[:n]


def _reference_eval(run: str, ckpt: Path, coord, types) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if run in ("intensive", "extensive"):
            from deepmd.infer.deep_property import DeepProperty

            p, ap = DeepProperty(str(ckpt)).eval(coord, None, types, atomic=True, mixed_type=True)
            return {"global": p, "atom": ap}
        from deepmd.infer.deep_dipole import DeepDipole
        from deepmd.infer.deep_polar import DeepPolar

        cls = DeepDipole if run == "dipole" else DeepPolar
        dp = cls(str(ckpt))
        return {
            "global": dp.eval(coord, None, types, atomic=False, mixed_type=True),
            "atom": dp.eval(coord, None, types, atomic=True, mixed_type=True),
        }


# --- predictions ------------------------------------------------------------------------------
@pytest.mark.parametrize("run", RUNS)
def test_predictions_match_reference(run, reference_runs, data):
    from lamkit.infer import open_model
    from lamkit.model import load_model

    ckpt = reference_runs[run]
    coord, types, _ = frames(data)
    ref = _reference_eval(run, ckpt, coord, types)
    model = load_model(ckpt)
    od = model.output_def
    out = model.evaluate(torch.tensor(coord), torch.tensor(types))
    got = {
        "global": out[od.global_key].detach().numpy(),
        "atom": out[od.atom_key].detach().numpy(),
    }
    diffs = {k: rel_diff(ref[k], got[k]) for k in ref}
    print(f"{run}: {diffs}")
    assert all(d < RTOL for d in diffs.values()), diffs
    dp = open_model(str(ckpt))
    if run in ("intensive", "extensive"):
        p, ap = dp.eval(coord, None, types, atomic=True, mixed_type=True)
    else:
        p = dp.eval(coord, None, types, atomic=False, mixed_type=True)
        ap = dp.eval(coord, None, types, atomic=True, mixed_type=True)
    assert p.shape == ref["global"].shape and ap.shape == ref["atom"].shape
    assert max(rel_diff(ref["global"], p), rel_diff(ref["atom"], ap)) < RTOL


# --- output statistics ------------------------------------------------------------------------
@pytest.mark.parametrize("run", RUNS)
def test_output_statistics_match_reference(run, reference_runs, data, tensors, tmp_path):
    from lamkit.train import Trainer

    sd = torch.load(reference_runs[run], map_location="cpu", weights_only=False)["model"]
    prefix = "model.Default.atomic_model."
    bias = sd[prefix + "out_bias"][0].numpy()
    std = sd[prefix + "out_std"][0].numpy()
    model = Trainer(make_config(run, data, tensors), tmp_path).model
    d_bias = rel_diff(bias, model.out_bias.numpy())
    d_std = rel_diff(std, model.out_std.numpy())
    print(f"{run}: bias {d_bias:.2e}, std {d_std:.2e}")
    assert max(d_bias, d_std) < 1e-8, {"bias": d_bias, "std": d_std}
    assert np.abs(bias).max() > 1e-3 and np.abs(std - 1).max() > 1e-3  # not the defaults


def test_statistics_functions_match_reference():
    from deepmd.utils.out_stat import (
        compute_stats_do_not_distinguish_types,
        compute_stats_from_redu,
    )

    from lamkit.model.out_stat import mean_stats, regression_stats

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 7, size=(30, 4)).astype(float)
    counts[:, 0] += 1
    y = counts @ rng.normal(size=(4, 3)) + rng.normal(scale=0.1, size=(30, 3))
    preset = np.full((4, 3), np.nan)
    preset[2] = [0.5, -1.0, 2.0]
    for intensive in (False, True):
        for pre in (None, preset):
            rb, rs = compute_stats_from_redu(
                y.copy(), counts.copy(), assigned_bias=pre, intensive=intensive
            )
            lb, ls = regression_stats(y, counts, intensive, preset=pre)
            assert max(rel_diff(rb, lb), rel_diff(rs, ls)) < 1e-12, (intensive, pre is None)
        rb, rs = compute_stats_do_not_distinguish_types(y, counts, intensive=intensive)
        mean, std = mean_stats(y, counts, intensive)
        assert max(rel_diff(rb, np.tile(mean, (4, 1))), rel_diff(rs, np.tile(std, (4, 1)))) < 1e-12


# --- losses -----------------------------------------------------------------------------------
def _reference_model(ckpt: Path):
    from deepmd.pt.model.model import get_model

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    ref = get_model(copy.deepcopy(state["_extra_state"]["model_params"])).double()
    prefix = "model.Default."
    ref.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return ref


@pytest.mark.parametrize("run", ["intensive", "extensive"])
@pytest.mark.parametrize("func", ["smooth_mae", "mse", "mape"])
def test_property_loss_matches_reference(run, func, reference_runs, data):
    from deepmd.pt.loss import PropertyLoss as RefLoss

    from lamkit.model import load_model
    from lamkit.train.loss import build_loss

    ckpt = reference_runs[run]
    ref_model = _reference_model(ckpt)
    coord, types, labels = frames(data, 2)
    inputs = {"coord": torch.tensor(coord), "atype": torch.tensor(types), "box": None}
    label = {"band_prop": torch.tensor(labels), "find_band_prop": 1.0}
    conf = {"type": "property", "loss_func": func, "metric": ["mae", "rmse", "smooth_mae"]}
    ref_loss_fn = RefLoss(
        task_dim=3,
        var_name="band_prop",
        loss_func=func,
        metric=conf["metric"],
        intensive=run == "intensive",
    )
    _, ref_loss, ref_more = ref_loss_fn(inputs, ref_model, dict(label), 24)
    ref_loss.backward()

    model = load_model(ckpt).train()
    loss_fn = build_loss(conf, 1e-3, model.config)
    loss_fn.attach(model)
    nbr = model.neighbor_builder()(inputs["coord"], inputs["atype"], None)
    pred = model(inputs["coord"], inputs["atype"], None, nbr)
    loss, more = loss_fn(pred, label, 1e-3)
    loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)
    for k, v in ref_more.items():
        assert more[k] == pytest.approx(float(v), rel=1e-10), k
    ref_g = dict(ref_model.named_parameters())
    last = "fitting.nets.0.layers.2"
    for w in ("matrix", "bias"):
        a = ref_g[f"atomic_model.fitting_net.filter_layers.networks.0.layers.2.{w}"].grad
        b = dict(model.named_parameters())[f"{last}.{w}"].grad
        assert rel_diff(a.numpy(), b.numpy()) < 1e-9, w
    total_ref = sum(float((p.grad**2).sum()) for p in ref_model.parameters() if p.grad is not None)
    total = sum(float((p.grad**2).sum()) for p in model.parameters() if p.grad is not None)
    assert total == pytest.approx(total_ref, rel=1e-9)


def test_tensor_loss_matches_reference(reference_runs, tensors):
    from deepmd.pt.loss import TensorLoss as RefLoss

    from lamkit.model import load_model
    from lamkit.train.loss import build_loss

    ckpt = reference_runs["dipole"]
    ref_model = _reference_model(ckpt)
    d = tensors / "mixed" / SET
    coord = np.load(d / "coord.npy")[:3].reshape(3, -1, 3)
    types = np.load(d / "real_atom_types.npy")[:3]
    glob = np.load(d / "dipole.npy")[:3] + 0.05
    atomic = np.load(d / "atomic_dipole.npy")[:3] * 1.1
    inputs = {"coord": torch.tensor(coord), "atype": torch.tensor(types), "box": None}
    label = {
        "dipole": torch.tensor(glob),
        "find_dipole": 1.0,
        "atom_dipole": torch.tensor(atomic),
        "find_atom_dipole": 1.0,
    }
    ref_fn = RefLoss("dipole", 3, "dipole", pref_atomic=0.7, pref=1.3)
    _, ref_loss, ref_more = ref_fn(inputs, ref_model, dict(label), 20)

    model = load_model(ckpt)
    loss_fn = build_loss({"type": "tensor", "pref": 1.3, "pref_atomic": 0.7}, 1e-3, model.config)
    nbr = model.neighbor_builder()(inputs["coord"], inputs["atype"], None)
    pred = model(inputs["coord"], inputs["atype"], None, nbr)
    batch = {
        "dipole": label["dipole"],
        "find_dipole": 1.0,
        "atomic_dipole": label["atom_dipole"],
        "find_atomic_dipole": 1.0,
    }
    loss, more = loss_fn(pred, batch)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)
    for k in ("rmse_local_dipole", "rmse_global_dipole"):
        assert more[k] == pytest.approx(float(ref_more[k]), rel=1e-6), k


# --- lam test vs dp test ----------------------------------------------------------------------
def test_lam_test_matches_dp_test(reference_runs, data, tmp_path):
    args = ["test", "-m", str(reference_runs["intensive"]), "-s", str(data / "data_2"), "-n", "6"]
    dp = start_run(DP + args + ["-d", "dp"], tmp_path, "dp.log")
    lam = start_run(LAM + args + ["-d", "lam"], tmp_path, "lam.log")
    texts = {"lam": finish_run(lam, tmp_path, "lam.log"), "dp": finish_run(dp, tmp_path, "dp.log")}
    vals = {
        tool: {
            key: float(re.findall(rf"PROPERTY {key}\s*:\s*(\S+)", text)[-1])
            for key in ("MAE", "RMSE")
        }
        for tool, text in texts.items()
    }
    for key in ("MAE", "RMSE"):
        assert vals["lam"][key] == pytest.approx(vals["dp"][key], rel=1e-6), (key, vals)
    # detail files: the reference's per-frame PREFIX.property.out.F, same names and columns
    names = {p.name.replace("dp.", "", 1) for p in tmp_path.glob("dp.*.out*")}
    assert names == {p.name.replace("lam.", "", 1) for p in tmp_path.glob("lam.*.out*")}
    assert names == {f"property.out.{f}" for f in range(6)}, names
    for name in names:
        ref, got = (tmp_path / f"{t}.{name}" for t in ("dp", "lam"))
        assert ref.read_text().splitlines()[0] == got.read_text().splitlines()[0], name
        a, b = np.loadtxt(ref, ndmin=2), np.loadtxt(got, ndmin=2)
        assert a.shape == b.shape == (3, 2), name
        np.testing.assert_array_equal(b[:, 0], a[:, 0])
        np.testing.assert_allclose(b[:, 1], a[:, 1], rtol=1e-8, atol=1e-12)
