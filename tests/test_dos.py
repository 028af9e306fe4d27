"""DOS models (``lamkit.fitting.dos``, ``lamkit.train.loss_dos``, ``DeepDOS``, ``lam test``):
the reference's DOS example input trained unchanged, symmetries and padding, the atomic DOS
summing to the frame DOS, the loss against a direct numpy evaluation of its formula, and the
refused configurations. No reference code needed (``test_dos_parity.py`` compares with it)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lamkit.errors import ConfigError
from lamkit.model import build_model
from lamkit.testing import (
    check_output_padding,
    check_output_permutation,
    check_output_rotation,
    check_output_translation,
    predict_outputs,
    random_rotation,
    randomize_statistics,
    standard_system,
)
from lamkit.testing.systems import System
from lamkit.train.loss import build_loss

from .conftest import need_shared

pytestmark = pytest.mark.usefixtures("one_thread")

# examples/dos/train/input_torch.json of DeePMD-kit 3.2, unchanged but for stop_batch
EXAMPLE = {
    "model": {
        "type_map": ["Si"],
        "descriptor": {
            "type": "se_a",
            "sel": [90],
            "rcut_smth": 1.8,
            "rcut": 6.0,
            "neuron": [25, 50, 100],
            "resnet_dt": False,
            "axis_neuron": 8,
            "type_one_side": True,
            "precision": "float64",
            "seed": 1,
        },
        "fitting_net": {
            "type": "dos",
            "numb_dos": 250,
            "neuron": [120, 120, 120],
            "resnet_dt": True,
            "numb_fparam": 0,
            "precision": "float64",
            "seed": 1,
        },
    },
    "loss": {
        "type": "dos",
        "start_pref_dos": 0.0,
        "limit_pref_dos": 0.0,
        "start_pref_cdf": 0.0,
        "limit_pref_cdf": 0.0,
        "start_pref_ados": 1.0,
        "limit_pref_ados": 1.0,
        "start_pref_acdf": 0.0,
        "limit_pref_acdf": 0.0,
    },
    "learning_rate": {"type": "exp", "start_lr": 0.001, "stop_lr": 1e-08},
    "training": {
        "stop_batch": 2,
        "seed": 1,
        "disp_file": "lcurve.out",
        "disp_freq": 100,
        "save_freq": 1000,
        "save_ckpt": "model.ckpt",
        "disp_training": True,
        "time_training": True,
        "profiling": False,
        "profiling_file": "timeline.json",
        "training_data": {
            "systems": [
                "../data/heat-221-reformat/atomic_system/",
                "../data/heat-221-reformat/global_system/",
            ],
            "set_prefix": "set",
            "batch_size": 1,
        },
    },
    "_comment1": "that's all",
}

TYPE_MAP = ["H", "C", "N", "O"]
DESCRIPTORS = {
    "se_e2_a": {"type": "se_e2_a", "sel": [12, 8, 4, 4], "rcut": 4.0, "neuron": [4, 8]},
    "dpa1": {
        "type": "dpa1",
        "sel": 24,
        "rcut": 4.0,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "attn": 8,
        "attn_layer": 1,
        "tebd_dim": 4,
    },
}
NDOS = 7


def make_model(descriptor: str, seed: int = 1, **fit):
    desc = {**DESCRIPTORS[descriptor], "precision": "float64", "seed": seed}
    fitting = {"type": "dos", "numb_dos": NDOS, "neuron": [8, 8], "seed": seed, **fit}
    model = build_model({"type_map": TYPE_MAP, "descriptor": desc, "fitting_net": fitting})
    randomize_statistics(model, seed)
    with torch.no_grad():
        for block in model.descriptor.modules():  # as computed from data: zero when asked
            if getattr(block, "set_davg_zero", False) and hasattr(block, "davg"):
                block.davg.zero_()
    return model.eval()


def molecule(seed: int = 0, natoms: int = 9) -> System:
    sys_ = standard_system("cluster", 4, 4.0, seed=seed)
    return sys_.copy(coord=sys_.coord[:natoms], atype=sys_.atype[:natoms])


# --- the reference's example ----------------------------------------------------------------
def test_example_input_trains_and_tests(tmp_path):
    from lamkit.cli.main import main

    (tmp_path / "data").symlink_to(need_shared("dos"))
    wd = tmp_path / "train"
    wd.mkdir()
    (wd / "input_torch.json").write_text(json.dumps(EXAMPLE, indent=1))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(wd)
        assert main(["train", "input_torch.json", "--skip-neighbor-stat"]) == 0
        lines = (wd / "lcurve.out").read_text().splitlines()
        assert lines[0].split()[2:] == ["rmse_local_dos_trn", "lr"], lines[0]
        rows = [line.split() for line in lines if not line.startswith("#")]
        assert rows and rows[0][0] == "1"
        # NaN where the displayed batch came from global_system (no atomic labels)
        assert all(math.isnan(float(r[1])) or 0.0 < float(r[1]) < 10.0 for r in rows), rows
        ckpt = wd / "model.ckpt-2.pt"
        assert ckpt.is_file()
        args = ["test", "-m", str(ckpt), "-s", "../data/heat-221", "-n", "2", "-a", "-d", "out"]
        assert main(args) == 0
    for name in ("dos.out.0", "dos.out.1", "ados.out.0", "ados.out.1"):
        head = (wd / f"out.{name}").read_text().splitlines()[0]
        kind = name.split(".")[0]
        assert head.endswith(f"- {name[-1]}: data_{kind} pred_{kind}"), head
    from lamkit.infer import DeepDOS

    rows = np.loadtxt(wd / "out.ados.out.1")
    assert rows.shape == (32 * 250, 2)
    label = np.load(tmp_path / "data/heat-221/set.000/atom_dos.npy")[1]
    np.testing.assert_allclose(rows[:, 0], label, rtol=1e-7)
    dp = DeepDOS(str(ckpt))
    coord = np.load(tmp_path / "data/heat-221/set.000/coord.npy")[1:2]
    box = np.load(tmp_path / "data/heat-221/set.000/box.npy")[1:2]
    dos, ados = dp.eval(coord, box, [0] * 32, atomic=True)
    np.testing.assert_allclose(rows[:, 1], ados.reshape(-1), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dos[0], ados[0].sum(0), rtol=1e-12, atol=1e-12)


# --- symmetries ---------------------------------------------------------------------------
@pytest.mark.parametrize("descriptor", list(DESCRIPTORS))
def test_symmetries_padding_and_sum(descriptor):
    model = make_model(descriptor)
    assert model.output_def.global_key == "dos" and model.output_def.shape == (NDOS,)
    rng = np.random.default_rng(7)
    sys_ = molecule(seed=2)
    out = predict_outputs(model, sys_.coord[None], sys_.atype[None])
    assert out["atom"].shape == (1, sys_.nloc, NDOS) and np.abs(out["global"]).max() > 1e-3
    np.testing.assert_allclose(out["global"], out["atom"].sum(1), rtol=1e-12, atol=1e-12)
    check_output_rotation(model, sys_, random_rotation(rng))
    check_output_translation(model, sys_, rng.normal(size=3) * 5.0)
    check_output_permutation(model, sys_, rng.permutation(sys_.nloc))
    check_output_padding(model, [sys_, molecule(seed=5, natoms=6)], rng)
    periodic = standard_system("triclinic", 4, 4.0, seed=3)
    check_output_rotation(model, periodic, random_rotation(rng))


def test_out_bias_is_added_per_type_and_std_is_not_applied():
    model = make_model("se_e2_a")
    sys_ = molecule(seed=4)
    before = predict_outputs(model, sys_.coord[None], sys_.atype[None])["atom"][0]
    with torch.no_grad():
        shift = torch.arange(4 * NDOS, dtype=torch.float64).reshape(4, NDOS)
        model.out_bias.add_(shift)
        model.out_std.mul_(3.0)
    after = predict_outputs(model, sys_.coord[None], sys_.atype[None])["atom"][0]
    np.testing.assert_allclose(after - before, shift.numpy()[sys_.atype], atol=1e-10)


# --- loss -----------------------------------------------------------------------------------
PREFS = {
    "dos": (1.0, 0.5),
    "cdf": (0.1, 0.02),
    "ados": (2.0, 1.0),
    "acdf": (0.3, 0.1),
}


def _numpy_loss(p, y, pa, ya, mask, lr, start_lr):
    def pref(t):
        start, limit = PREFS[t]
        return limit + (start - limit) * lr / start_lr

    m = mask[..., None]
    dos = np.mean((p - y) ** 2)
    cdf = np.mean((p.cumsum(-1) - y.cumsum(-1)) ** 2)
    ados = ((pa - ya) ** 2 * m).sum() / (mask.sum() * NDOS)
    acdf = ((pa.cumsum(-1) - ya.cumsum(-1)) ** 2 * m).sum() / (mask.sum() * NDOS)
    total = pref("dos") * dos + pref("cdf") * cdf + pref("ados") * ados + pref("acdf") * acdf
    n = mask.sum(-1).mean()
    shown = {
        "rmse_local_dos": math.sqrt(ados),
        "rmse_local_cdf": math.sqrt(acdf),
        "rmse_global_dos": math.sqrt(dos) / n,
        "rmse_global_cdf": math.sqrt(cdf) / n,
    }
    return total, shown


@pytest.mark.parametrize("lr", [1e-3, 3e-4])
def test_loss_formula_with_virtual_atoms(lr):
    conf = {"type": "dos"}
    for t, (start, limit) in PREFS.items():
        conf[f"start_pref_{t}"], conf[f"limit_pref_{t}"] = start, limit
    loss_fn = build_loss(conf, 1e-3, {"fitting_net": {"type": "dos", "numb_dos": NDOS}})
    assert {r.key for r in loss_fn.requirements()} == {"dos", "atom_dos"}
    rng = np.random.default_rng(0)
    mask = np.ones((2, 5), dtype=bool)
    mask[1, 3:] = False  # two virtual atoms in frame 1: zero predictions, any label
    pa = rng.normal(size=(2, 5, NDOS)) * mask[..., None]
    ya = rng.normal(size=(2, 5, NDOS))
    p, y = pa.sum(1), rng.normal(size=(2, NDOS))
    pred = {"dos": torch.tensor(p), "atom_dos": torch.tensor(pa), "mask": torch.tensor(mask)}
    batch = {"dos": torch.tensor(y), "atom_dos": torch.tensor(ya).reshape(2, -1)}
    batch.update(find_dos=1.0, find_atom_dos=1.0)
    loss, more = loss_fn(pred, batch, lr)
    want, shown = _numpy_loss(p, y, pa, ya, mask, lr, 1e-3)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert more == pytest.approx(shown, rel=1e-12)
    # a system without atomic labels: that term is off and its metrics are NaN
    loss2, more2 = loss_fn(pred, {**batch, "find_atom_dos": 0.0}, lr)
    assert math.isnan(more2["rmse_local_dos"]) and math.isnan(more2["rmse_local_cdf"])
    assert loss2.item() < loss.item()


def test_loss_default_is_atomic_dos_only():
    loss_fn = build_loss({"type": "dos"}, 1e-3, {"fitting_net": {"type": "dos", "numb_dos": 4}})
    assert loss_fn.active == ("ados",)
    assert [(r.key, r.ndof, r.atomic) for r in loss_fn.requirements()] == [("atom_dos", 4, True)]
    assert build_loss(None, 1e-3, {"fitting_net": {"type": "dos"}}).active == ("ados",)


# --- refused configurations -------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss,fit,key",
    [
        ({"type": "dos"}, {"type": "ener"}, "loss/type"),
        ({"type": "ener"}, {"type": "dos"}, "loss/type"),
        ({"type": "dos", "start_pref_dos": -1.0}, {"type": "dos"}, "loss/start_pref_dos"),
        ({"type": "dos", "start_pref_ados": 0.0}, {"type": "dos"}, "loss/start_pref_"),
        ({"type": "dos", "start_pref_cfd": 1.0}, {"type": "dos"}, "start_pref_cfd"),
    ],
)
def test_bad_loss_is_refused(loss, fit, key):
    with pytest.raises(ConfigError, match=key):
        build_loss(loss, 1e-3, {"fitting_net": fit})


@pytest.mark.parametrize(
    "extra,key",
    [
        ({"numb_dos": 0}, "numb_dos"),
        ({"exclude_types": [1]}, "exclude_types"),
        ({"dim_case_embd": -1}, "dim_case_embd"),  # case embedding itself is supported
    ],
)
def test_bad_fitting_is_refused(extra, key):
    with pytest.raises(ConfigError, match=key):
        make_model("se_e2_a", **extra)


def test_set_prefix_other_than_set_is_refused():
    from lamkit.config.input import normalize_input

    conf = json.loads(json.dumps(EXAMPLE))
    conf["training"]["training_data"]["set_prefix"] = "frames"
    with pytest.raises(ConfigError, match="training_data/set_prefix"):
        normalize_input(conf)


def test_interfaces_name_each_other():
    from lamkit.infer import DeepDOS, DeepPot, DeepProperty, open_model

    model = make_model("se_e2_a")
    assert isinstance(open_model(model), DeepDOS)
    for cls in (DeepPot, DeepProperty):
        with pytest.raises(ValueError, match="DeepDOS"):
            cls(model)
