"""Population fitting and loss (DeePMD-kit 3.2 ``examples/population``): alpha/beta electron
populations per atom from a DPA-3 descriptor with one atomic parameter.

Checked: the loss formula on a hand-made case, training the example input (tiny sizes) on
generated Ti-O data with the reference's lcurve columns, and against the reference: a
checkpoint written by ``dp --pt train`` predicts the same populations in lamkit, the two
losses agree term by term, and the aparam statistics are equal."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lamkit.errors import ConfigError
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.train import Trainer
from lamkit.train.loss import build_loss

from . import reference_finetune as rf
from .conftest import require_reference

pytestmark = pytest.mark.usefixtures("one_thread")
NFRAMES, NATOMS = 3, 12
LOSS = {  # the example's loss section
    "type": "population",
    "start_pref_spin": 1,
    "limit_pref_spin": 1,
    "start_pref_spin_total": 1,
    "limit_pref_spin_total": 1,
    "start_pref_pop": 1000,
    "limit_pref_pop": 1,
    "start_pref_pop_alpha_total": 1,
    "limit_pref_pop_alpha_total": 1,
    "start_pref_pop_beta_total": 1,
    "limit_pref_pop_beta_total": 1,
    "loss_func": "mae",
    "metric": ["mae"],
}
COLUMNS = [  # the reference's lcurve.out header for this loss (dp --pt train, 3.2)
    "step",
    "mae_trn",
    "pop_alpha_total_loss_trn",
    "pop_beta_total_loss_trn",
    "pop_loss_trn",
    "spin_loss_trn",
    "spin_total_trn",
    "spin_total_loss_trn",
    "lr",
]


def population_input(data, steps: int = 2, precision: str = "float64") -> dict:
    """``examples/population/train/input_torch.json`` with a tiny DPA-3 and fitting."""
    repflow = {
        "n_dim": 16, "e_dim": 8, "a_dim": 4, "nlayers": 2, "e_rcut": 6.0, "e_rcut_smth": 5.3,
        "e_sel": 80, "a_rcut": 4.0, "a_rcut_smth": 3.5, "a_sel": 40, "axis_neuron": 4,
        "fix_stat_std": 0.3, "a_compress_rate": 1, "a_compress_e_rate": 2,
        "a_compress_use_split": True, "update_angle": True, "smooth_edge_update": True,
        "edge_init_use_dist": True, "use_exp_switch": True, "update_style": "res_residual",
        "update_residual": 0.1, "update_residual_init": "const",
    }  # fmt: skip
    return {
        "model": {
            "type_map": ["Ti", "O"],
            "descriptor": {
                "type": "dpa3",
                "repflow": repflow,
                "activation_function": "silut:10.0",
                "use_tebd_bias": False,
                "precision": precision,
                "concat_output_tebd": False,
                "seed": 1,
            },
            "fitting_net": {
                "type": "population",
                "neuron": [16, 16],
                "resnet_dt": True,
                "precision": precision,
                "numb_aparam": 1,
                "seed": 1,
            },
        },
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 3e-5, "decay_steps": 5000},
        "loss": dict(LOSS),
        "training": {
            "stop_batch": steps,
            "disp_freq": 1,
            "save_freq": max(steps, 1),
            "seed": 1,
            "training_data": {"batch_size": 1, "systems": [str(data)]},
        },
    }


def write_population_system(root, seed: int = 0):
    """A periodic Ti4O8 system (deepmd/npy) with atomic populations that depend on the
    element and on the atom's neighbourhood, and one atomic parameter per atom."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    types = np.array([0] * 4 + [1] * 8)
    coords, pops, aparams = [], [], []
    for _ in range(NFRAMES):
        pos = grid[rng.permutation(len(grid))[:NATOMS]] * 2.0 + rng.normal(0, 0.1, (NATOMS, 3))
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(NATOMS) * 99
        env = np.exp(-d).sum(1)
        alpha = np.where(types == 0, 10.0, 4.0) + 0.3 * env
        beta = np.where(types == 0, 9.5, 4.0) - 0.2 * env
        coords.append(pos.reshape(-1))
        pops.append(np.stack([alpha, beta], -1).reshape(-1))
        aparams.append(rng.choice([0.0, 0.25], NATOMS))
    root.mkdir(parents=True, exist_ok=True)
    (root / "type.raw").write_text("\n".join(map(str, types)) + "\n")
    (root / "type_map.raw").write_text("Ti\nO\n")
    s = root / "set.000"
    s.mkdir(exist_ok=True)
    np.save(s / "coord.npy", np.array(coords))
    np.save(s / "box.npy", np.tile(np.eye(3).reshape(-1) * 8.0, (NFRAMES, 1)))
    np.save(s / "atomic_population.npy", np.array(pops))
    np.save(s / "aparam.npy", np.array(aparams))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_population_system(tmp_path_factory.mktemp("pop") / "data")


def test_loss_terms_on_a_hand_made_case():
    loss = build_loss(dict(LOSS), 1e-3, {"fitting_net": {"type": "population"}})
    pred = {
        "population": torch.tensor([[[2.0, 1.0], [1.0, 1.0], [9.0, 9.0]]], dtype=torch.float64),
        "mask": torch.tensor([[True, True, False]]),  # the third atom is virtual
    }
    batch = {"atomic_population": torch.tensor([[[1.0, 1.0], [1.0, 2.0], [0.0, 0.0]]])}
    total, more = loss(pred, batch, lr=1e-3)  # lr = start_lr: the start prefactors
    # spin: pred (1, 0), label (0, -1); totals 1 and -1; alpha 3 vs 2, beta 2 vs 3
    expect = {"spin_loss": 2 / 2, "spin_total_loss": 2, "pop_loss": 2 / 2}
    expect |= {"pop_alpha_total_loss": 1, "pop_beta_total_loss": 1, "spin_total": 1, "mae": 0.5}
    assert more == pytest.approx(expect)
    assert float(total) == pytest.approx(1 + 2 + 1000 * 1 + 1 + 1)
    assert float(loss(pred, batch, lr=0.0)[0]) == pytest.approx(1 + 2 + 1 + 1 + 1)  # limits
    same = {"atomic_population": pred["population"].clone()}
    assert float(loss(pred, same, lr=1e-3)[0]) == 0.0
    with pytest.raises(ConfigError, match="does not fit a model with fitting_net/type 'ener'"):
        build_loss(dict(LOSS), 1e-3, {"fitting_net": {"type": "ener"}})


def test_example_input_trains_with_the_reference_columns(data, tmp_path):
    trainer = Trainer(population_input(data, precision="float32"), tmp_path)
    trainer.run()
    header = (tmp_path / "lcurve.out").read_text().splitlines()[0][1:].split()
    assert header == COLUMNS
    rows = np.loadtxt(tmp_path / "lcurve.out", ndmin=2)
    assert rows.shape == (2, len(COLUMNS)) and np.isfinite(rows).all()
    model = trainer.model
    coord = torch.as_tensor(np.load(data / "set.000" / "coord.npy")).reshape(NFRAMES, -1, 3)
    box = torch.as_tensor(np.load(data / "set.000" / "box.npy"))
    ap = torch.as_tensor(np.load(data / "set.000" / "aparam.npy")).reshape(NFRAMES, -1, 1)
    atype = torch.as_tensor(np.loadtxt(data / "type.raw", dtype=int))[None].expand(NFRAMES, -1)
    out = model.evaluate(coord, atype, box, aparam=ap)
    assert out["population"].shape == (NFRAMES, NATOMS, 2)
    torch.testing.assert_close(out["total_population"], out["population"].sum(1))
    assert float(model.fitting.aparam_avg[0]) == pytest.approx(float(ap.mean()))


_REFERENCE = r"""
import json, sys, warnings
import numpy as np
import torch
torch.set_num_threads(1)
warnings.simplefilter("ignore")
from deepmd.pt.loss.population import PopulationLoss
from deepmd.pt.model.model import get_model

from deepmd.main import main

main(["--pt", "train", "input.json", "--skip-neighbor-stat"])  # one process: one import
ckpt, data, loss_json, out = sys.argv[1:5]
sd = torch.load(ckpt, weights_only=False)["model"]
model = get_model(sd["_extra_state"]["model_params"]).double()
pre = "model.Default."
model.load_state_dict({k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)})
coord = torch.as_tensor(np.load(f"{data}/set.000/coord.npy"))
nf = len(coord)
coord = coord.reshape(nf, -1, 3)
box = torch.as_tensor(np.load(f"{data}/set.000/box.npy"))
ap = torch.as_tensor(np.load(f"{data}/set.000/aparam.npy")).reshape(nf, -1, 1)
atype = torch.as_tensor(np.loadtxt(f"{data}/type.raw", dtype=int))[None].expand(nf, -1)
pred = model(coord, atype, box, aparam=ap)
label = torch.as_tensor(np.load(f"{data}/set.000/atomic_population.npy"))
res = {"population": pred["population"].detach().numpy()}
for func in ("mae", "smooth_mae", "rmse"):
    for lr in (1e-3, 2e-4):
        conf = {k: v for k, v in json.loads(loss_json).items() if k != "type"}
        conf.update(loss_func=func, metric=["mae", "rmse"])
        loss = PopulationLoss(starter_learning_rate=1e-3, **conf)
        _, value, more = loss({}, lambda: pred, {"atom_population": label}, coord.shape[1], lr)
        res[f"{func}_{lr}"] = float(value)
        for k, v in more.items():
            res[f"{func}_{lr}_{k}"] = float(v)
np.savez(out, **res)
"""


@pytest.mark.reference
def test_reference_checkpoint_loss_and_statistics(data, tmp_path):
    require_reference()
    config = population_input(data, steps=0)
    (tmp_path / "input.json").write_text(json.dumps(config))
    ckpt = tmp_path / "model.ckpt-0.pt"  # written by the script's dp --pt train
    out = tmp_path / "ref.npz"
    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE, str(ckpt), str(data), json.dumps(LOSS), str(out)],
        cwd=tmp_path,
        env=rf.reference_env(),
        capture_output=True,
        text=True,
        timeout=rf.TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = dict(np.load(out))
    model = load_deepmd_checkpoint(ckpt)
    coord = torch.as_tensor(np.load(data / "set.000" / "coord.npy")).reshape(NFRAMES, -1, 3)
    box = torch.as_tensor(np.load(data / "set.000" / "box.npy"))
    ap = torch.as_tensor(np.load(data / "set.000" / "aparam.npy")).reshape(NFRAMES, -1, 1)
    atype = torch.as_tensor(np.loadtxt(data / "type.raw", dtype=int))[None].expand(NFRAMES, -1)
    pred = model.evaluate(coord, atype, box, aparam=ap)
    np.testing.assert_allclose(pred["population"].detach().numpy(), ref["population"], rtol=1e-10)
    label = torch.as_tensor(np.load(data / "set.000" / "atomic_population.npy"))
    for func in ("mae", "smooth_mae", "rmse"):
        conf = dict(LOSS, loss_func=func, metric=["mae", "rmse"])
        loss = build_loss(conf, 1e-3, {"fitting_net": {"type": "population"}})
        for lr in (1e-3, 2e-4):
            value, more = loss(pred, {"atomic_population": label}, lr)
            assert float(value.detach()) == pytest.approx(ref[f"{func}_{lr}"], rel=1e-10)
            for k, v in more.items():
                assert v == pytest.approx(ref[f"{func}_{lr}_{k}"], rel=1e-10), k
    # aparam statistics of a fresh lamkit run equal the reference's (all frames enter)
    ours = Trainer(config, tmp_path / "lam").model.fitting
    for name in ("aparam_avg", "aparam_inv_std"):
        np.testing.assert_allclose(getattr(ours, name), getattr(model.fitting, name), rtol=1e-10)
