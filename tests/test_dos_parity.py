"""Parity of DOS models (``fitting_net`` and ``loss`` of ``type: "dos"``) with the reference
DeePMD-kit 3.2.

The reference trains one step (``dp --pt train --skip-neighbor-stat``) with the model of its
DOS example (``examples/dos/train/input_torch.json``: se_e2_a, ``numb_dos`` 250, float64; the
networks narrower) on the example's two systems: ``atomic_system`` with ``atom_dos`` labels
and ``global_system`` with ``dos`` labels, every loss term active (dos, cdf, ados, acdf).
lamkit loads the checkpoint and must give the reference's frame and atomic DOS on heat-221,
the same output statistics from the same frames, the same loss, metrics and gradients, and
the same ``lam test -a -d`` numbers and per-frame detail files as ``dp --pt test``. Skipped
without ``import deepmd.pt`` (a failure when ``CI=true``).
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import need_shared, require_reference
from .reference_runs import DP, LAM, finish_run, rel_diff, start_run

pytestmark = pytest.mark.reference

RTOL = 1e-10
LOSS = {
    "type": "dos",
    "start_pref_dos": 1.0,
    "limit_pref_dos": 0.5,
    "start_pref_cdf": 0.1,
    "limit_pref_cdf": 0.02,
    "start_pref_ados": 1.0,
    "limit_pref_ados": 1.0,
    "start_pref_acdf": 0.3,
    "limit_pref_acdf": 0.1,
}


@pytest.fixture(scope="module", autouse=True)
def _reference_available():
    require_reference()


@pytest.fixture(scope="module")
def data() -> Path:
    return need_shared("dos")


def make_config(data: Path) -> dict:
    systems = [str(data / "heat-221-reformat" / s) for s in ("atomic_system", "global_system")]
    return {
        "model": {
            "type_map": ["Si"],
            "descriptor": {
                "type": "se_a",
                "sel": [90],
                "rcut_smth": 1.8,
                "rcut": 6.0,
                "neuron": [8, 16],
                "resnet_dt": False,
                "axis_neuron": 8,
                "type_one_side": True,
                "precision": "float64",
                "seed": 1,
            },
            "fitting_net": {
                "type": "dos",
                "numb_dos": 250,
                "neuron": [16, 16],
                "resnet_dt": True,
                "precision": "float64",
                "seed": 1,
            },
            "data_stat_nbatch": 100,  # every frame in both codes (11 per system)
        },
        "loss": dict(LOSS),
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-8},
        "training": {
            "training_data": {"systems": systems, "batch_size": 1},
            "numb_steps": 1,
            "seed": 1,
            "disp_freq": 1,
            "save_freq": 1,
        },
    }


@pytest.fixture(scope="module")
def ckpt(data, tmp_path_factory) -> Path:
    wd = tmp_path_factory.mktemp("dp_dos")
    (wd / "input.json").write_text(json.dumps(make_config(data), indent=1))
    finish_run(
        start_run(DP + ["train", "input.json", "--skip-neighbor-stat"], wd, "log"), wd, "log"
    )
    assert (wd / "model.ckpt-1.pt").is_file(), f"the reference wrote no checkpoint in {wd}"
    return wd / "model.ckpt-1.pt"


def frames(data: Path, n: int = 3):
    sys_ = data / "heat-221"
    d = sys_ / "set.000"
    atype = np.loadtxt(sys_ / "type.raw", dtype=int).reshape(-1)
    labels = {k: np.load(d / f"{k}.npy")[:n].astype(np.float64) for k in ("dos", "atom_dos")}
    return np.load(d / "coord.npy")[:n], np.load(d / "box.npy")[:n], atype, labels


def test_predictions_match_reference(ckpt, data):
    from deepmd.infer.deep_dos import DeepDOS as RefDOS

    from lamkit.infer import DeepDOS, open_model

    coord, box, atype, _ = frames(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = RefDOS(str(ckpt))
        ref_dos, ref_ados = ref.eval(coord, box, atype, atomic=True)
        (ref_only,) = ref.eval(coord, box, atype, atomic=False)
    dp = open_model(str(ckpt))
    assert isinstance(dp, DeepDOS) and dp.get_numb_dos() == ref.get_numb_dos() == 250
    dos, ados = dp.eval(coord, box, atype, atomic=True)
    (only,) = dp.eval(coord, box, atype)
    assert dos.shape == ref_dos.shape == (3, 250) and ados.shape == ref_ados.shape
    diffs = [rel_diff(ref_dos, dos), rel_diff(ref_ados, ados), rel_diff(ref_only, only)]
    print("dos / atom_dos / dos only:", diffs)
    assert max(diffs) < RTOL, diffs
    assert np.abs(ados).max() > 1e-3 and np.abs(ados[0, 0] - ados[0, 1]).max() > 1e-6


def test_output_statistics_match_reference(ckpt, data, tmp_path):
    from lamkit.train import Trainer

    sd = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    prefix = "model.Default.atomic_model."
    bias, std = sd[prefix + "out_bias"][0].numpy(), sd[prefix + "out_std"][0].numpy()
    model = Trainer(make_config(data), tmp_path).model
    d_bias = rel_diff(bias, model.out_bias.numpy())
    d_std = rel_diff(std, model.out_std.numpy())
    print(f"bias {d_bias:.2e}, std {d_std:.2e}")
    assert max(d_bias, d_std) < 1e-10, {"bias": d_bias, "std": d_std}
    # the atomic labels (atom_dos of atomic_system) give the statistic, as in the reference
    atom = np.load(data / "heat-221-reformat/atomic_system/set.000/atom_dos.npy")
    np.testing.assert_allclose(bias[0], atom.reshape(-1, 250).mean(0), rtol=1e-5, atol=1e-6)


def _reference_model(ckpt: Path):
    from deepmd.pt.model.model import get_model

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    ref = get_model(copy.deepcopy(state["_extra_state"]["model_params"])).double()
    prefix = "model.Default."
    ref.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return ref


@pytest.mark.parametrize("lr", [1e-3, 2.5e-4])
def test_loss_matches_reference(ckpt, data, lr):
    from deepmd.pt.loss import DOSLoss as RefLoss

    from lamkit.model import load_model
    from lamkit.train.loss import build_loss

    coord, box, atype, labels = frames(data, 2)
    atype2 = np.tile(atype, (2, 1))
    inputs = {
        "coord": torch.tensor(coord).reshape(2, -1, 3),
        "atype": torch.tensor(atype2),
        "box": torch.tensor(box),
    }
    label = {k: torch.tensor(v) for k, v in labels.items()}
    label.update(find_dos=1.0, find_atom_dos=1.0)
    ref_model = _reference_model(ckpt)
    prefs = {k: v for k, v in LOSS.items() if k != "type"}
    ref_fn = RefLoss(starter_learning_rate=1e-3, numb_dos=250, **prefs)
    _, ref_loss, ref_more = ref_fn(inputs, ref_model, dict(label), 32, learning_rate=lr)
    ref_loss.backward()

    model = load_model(ckpt).train()
    loss_fn = build_loss(dict(LOSS), 1e-3, model.config)
    nbr = model.neighbor_builder()(inputs["coord"], inputs["atype"], inputs["box"])
    pred = model(inputs["coord"], inputs["atype"], inputs["box"], nbr)
    loss, more = loss_fn(pred, label, lr)
    loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)
    shown = {k: v for k, v in ref_more.items() if k.startswith("rmse")}
    assert set(shown) == set(more), (set(shown), set(more))
    for k, v in shown.items():
        assert more[k] == pytest.approx(float(v), rel=1e-6), k  # the reference: float32 N
    ref_g = dict(ref_model.named_parameters())
    for w in ("matrix", "bias"):
        a = ref_g[f"atomic_model.fitting_net.filter_layers.networks.0.layers.2.{w}"].grad
        b = dict(model.named_parameters())[f"fitting.nets.0.layers.2.{w}"].grad
        assert rel_diff(a.numpy(), b.numpy()) < 1e-9, w
    total_ref = sum(float((p.grad**2).sum()) for p in ref_model.parameters() if p.grad is not None)
    total = sum(float((p.grad**2).sum()) for p in model.parameters() if p.grad is not None)
    assert total == pytest.approx(total_ref, rel=1e-9)


def test_lam_test_matches_dp_test(ckpt, data, tmp_path):
    args = ["test", "-m", str(ckpt), "-s", str(data / "heat-221"), "-n", "3", "-a"]
    dp = start_run(DP + args + ["-d", "dp"], tmp_path, "dp.log")
    lam = start_run(LAM + args + ["-d", "lam"], tmp_path, "lam.log")
    texts = {"lam": finish_run(lam, tmp_path, "lam.log"), "dp": finish_run(dp, tmp_path, "dp.log")}
    pattern = r"((?:Atomic )?DOS (?:MAE|RMSE)(?:/Natoms)?)\s*:\s*(\S+)"
    vals = {t: dict(re.findall(pattern, text)) for t, text in texts.items()}
    assert len(vals["dp"]) == 6 and set(vals["lam"]) == set(vals["dp"]), vals
    for key, v in vals["dp"].items():
        assert float(vals["lam"][key]) == pytest.approx(float(v), rel=1e-6), (key, vals)
    names = {p.name.replace("dp.", "", 1) for p in tmp_path.glob("dp.*.out*")}
    assert names == {p.name.replace("lam.", "", 1) for p in tmp_path.glob("lam.*.out*")}
    assert names == {f"{s}.out.{f}" for s in ("dos", "ados") for f in range(3)}, names
    for name in names:
        ref, got = (tmp_path / f"{t}.{name}" for t in ("dp", "lam"))
        assert ref.read_text().splitlines()[0] == got.read_text().splitlines()[0], name
        a, b = np.loadtxt(ref, ndmin=2), np.loadtxt(got, ndmin=2)
        assert a.shape == b.shape == ((250 if "ados" not in name else 32 * 250), 2), name
        np.testing.assert_array_equal(b[:, 0], a[:, 0])
        np.testing.assert_allclose(b[:, 1], a[:, 1], rtol=1e-8, atol=1e-10)


def test_lamkit_model_converts_to_the_reference(data, tmp_path):
    """A lamkit DOS model written as a DeePMD-kit checkpoint (``lam convert --to deepmd``)
    predicts the same DOS in the reference."""
    from deepmd.infer.deep_dos import DeepDOS as RefDOS

    from lamkit.infer import DeepDOS
    from lamkit.interop.to_deepmd import deepmd_checkpoint
    from lamkit.model import build_model
    from lamkit.testing import randomize_statistics

    model = randomize_statistics(build_model(make_config(data)["model"]), 3).eval()
    path = tmp_path / "converted.pt"
    torch.save(deepmd_checkpoint({"Default": model}, multi_task=False), path)
    coord, box, atype, _ = frames(data, 2)
    dos, ados = DeepDOS(model).eval(coord, box, atype, atomic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_dos, ref_ados = RefDOS(str(path)).eval(coord, box, atype, atomic=True)
    assert max(rel_diff(ref_dos, dos), rel_diff(ref_ados, ados)) < RTOL
    assert np.abs(model.out_bias.numpy()).max() > 1e-3  # the statistics travel too
