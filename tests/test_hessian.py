"""Hessian supervision (``start_pref_h``): the model's Hessian, hessian.npy, the loss, training,
``DeepPot`` and ``lam test``, checked against finite differences, an analytic pair potential
and the reference DeePMD-kit's loss and model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.data import DataRequirement, load_systems
from lamkit.errors import ConfigError, DataError
from lamkit.model import build_model
from lamkit.model.hessian import enable_hessian, has_hessian
from lamkit.testing import cell_from_parameters, random_system, randomize_statistics
from lamkit.testing.physics import predict
from lamkit.train.loss import build_loss

pytestmark = pytest.mark.usefixtures("one_thread")

TYPE_MAP = ["O", "H"]


def tiny_config(rcut: float = 3.0) -> dict:
    return {
        "type_map": TYPE_MAP,
        "descriptor": {
            "type": "se_e2_a",
            "sel": [12, 12],
            "rcut": rcut,
            "rcut_smth": 0.5,
            "neuron": [4, 8],
            "axis_neuron": 2,
            "seed": 1,
        },
        "fitting_net": {"neuron": [8, 8], "seed": 1},
    }


def tiny_hessian_model():
    model = randomize_statistics(build_model(tiny_config()), 1)
    enable_hessian(model)
    return model


def model_hessian(model, system) -> np.ndarray:
    cell = None if system.cell is None else torch.tensor(system.cell.reshape(1, 9))
    out = model.evaluate(torch.tensor(system.coord[None]), torch.tensor(system.atype[None]), cell)
    return out[keys.HESSIAN][0].detach().numpy()


def fd_hessian(model, system, h: float = 1e-5) -> np.ndarray:
    """``-dF/dx`` by central differences of the model's own forces."""
    n = system.nloc
    fd = np.zeros((3 * n, 3 * n))
    for c in range(3 * n):
        f = []
        for sign in (1.0, -1.0):
            moved = system.copy()
            moved.coord[c // 3, c % 3] += sign * h
            f.append(predict(model, moved, atomic=False)["force"].reshape(-1))
        fd[c] = -(f[0] - f[1]) / (2 * h)
    return fd


# --- the model's Hessian -----------------------------------------------------------------------
@pytest.mark.parametrize("periodic", [True, False])
def test_hessian_equals_finite_differences_and_is_symmetric(periodic):
    model = tiny_hessian_model()
    # a cell shorter than rcut: every atom also sees its own images (mapped back to it)
    cell = cell_from_parameters(3.2, 3.4, 3.6, 80.0, 75.0, 65.0) if periodic else None
    system = random_system(4, 2, cell=cell, extent=3.0, min_dist=1.0, seed=3)
    hess = model_hessian(model, system)
    assert hess.shape == (12, 12)
    assert np.abs(hess).max() > 0.1
    np.testing.assert_allclose(hess, fd_hessian(model, system), atol=1e-7 * np.abs(hess).max())
    np.testing.assert_allclose(hess, hess.T, atol=1e-12)
    # translation invariance: each row of the Hessian sums to zero over atoms, per direction
    np.testing.assert_allclose(hess.reshape(12, 4, 3).sum(1), 0.0, atol=1e-10)


def test_hessian_matches_reference_model_with_same_weights():
    """The reference's ``enable_hessian`` model (``hessian_mode``) with lamkit's weights."""
    pytest.importorskip("deepmd.pt", reason="the reference DeePMD-kit (PyTorch) is not installed")
    from lamkit.interop.to_deepmd import _reference_model, head_state, reference_params

    model = tiny_hessian_model()
    params = reference_params(model.config)
    assert params["hessian_mode"] is True
    ref = _reference_model(params, "test")
    prefix = "model.Default."
    state = head_state(model, params, "Default", "test")
    ref.load_state_dict({k[len(prefix):]: v for k, v in state.items()})
    cell = cell_from_parameters(3.2, 3.4, 3.6, 80.0, 75.0, 65.0)
    system = random_system(4, 2, cell=cell, min_dist=1.0, seed=5)
    out = ref(
        torch.tensor(system.coord[None]),
        torch.tensor(system.atype[None]),
        torch.tensor(cell.reshape(1, 9)),
    )
    want = out["hessian"].detach().numpy().reshape(12, 12)
    np.testing.assert_allclose(model_hessian(model, system), want, rtol=0, atol=1e-10)


# --- the loss ---------------------------------------------------------------------------------
LOSS = {
    "type": "ener",
    "start_pref_e": 0.02,
    "limit_pref_e": 1.0,
    "start_pref_f": 1000.0,
    "limit_pref_f": 1.0,
    "start_pref_h": 10.0,
    "limit_pref_h": 1.0,
}


def _loss_inputs(seed: int = 0):
    """Predictions (leaf tensors) and labels of 2 frames of 3 atom slots, one of them virtual
    in frame 1 (its Hessian rows and columns must not count)."""
    g = torch.Generator().manual_seed(seed)
    nf, nloc = 2, 3
    pred = {
        keys.ENERGY: torch.randn(nf, 1, generator=g, dtype=torch.float64),
        keys.FORCE: torch.randn(nf, nloc, 3, generator=g, dtype=torch.float64),
        keys.HESSIAN: torch.randn(nf, 3 * nloc, 3 * nloc, generator=g, dtype=torch.float64),
    }
    for v in pred.values():
        v.requires_grad_(True)
    label = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in pred.items()}
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return pred, label, mask


@pytest.mark.parametrize("loss_func", ["mse", "mae"])
def test_loss_and_gradients_equal_reference(loss_func):
    ener = pytest.importorskip(
        "deepmd.pt.loss.ener", reason="the reference DeePMD-kit (PyTorch) is not installed"
    )
    start_lr, lr = 1e-3, 2.5e-4
    conf = {**LOSS, "loss_func": loss_func}
    ref_loss = ener.EnergyStdLoss(
        starter_learning_rate=start_lr, **{k: v for k, v in conf.items() if k != "type"}
    )
    own_loss = build_loss(conf, start_lr, tiny_config())
    pred, label, mask = _loss_inputs()
    ref_label = {**label, "find_energy": 1.0, "find_force": 1.0, "find_hessian": 1.0}
    _, ref_value, ref_more = ref_loss({}, lambda: {**pred, "mask": mask}, ref_label, 3, lr)
    ref_grads = torch.autograd.grad(ref_value, list(pred.values()))
    batch = {**label, "find_energy": 1.0, "find_force": 1.0, "find_hessian": 1.0}
    own_value, more = own_loss({**pred, keys.MASK: mask.bool()}, batch, lr)
    own_grads = torch.autograd.grad(own_value, list(pred.values()))
    assert float(own_value.detach()) == pytest.approx(float(ref_value.detach()), rel=1e-12)
    for a, b in zip(own_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    assert more["rmse_h"] == pytest.approx(float(ref_more["rmse_h"]), rel=1e-12)


def test_loss_without_hessian_labels_and_config_errors():
    loss = build_loss(LOSS, 1e-3, tiny_config())
    pred, label, mask = _loss_inputs()
    batch = {**label, "find_energy": 1.0, "find_force": 1.0, "find_hessian": 0.0}
    with_h, more = loss({**pred, keys.MASK: mask.bool()}, batch, 1e-3)
    no_h = build_loss({**LOSS, "start_pref_h": 0.0, "limit_pref_h": 0.0}, 1e-3, tiny_config())
    assert math.isnan(more["rmse_h"])
    without = no_h({**pred, keys.MASK: mask.bool()}, batch, 1e-3)[0]
    assert float(with_h.detach()) == float(without.detach())
    assert [r.key for r in loss.requirements()][-1] == keys.HESSIAN
    assert build_loss({**LOSS, "type": "ener_hess"}, 1e-3, tiny_config()).pref["h"] == (10, 1)
    with pytest.raises(ConfigError, match="Huber"):
        build_loss({**LOSS, "use_huber": True}, 1e-3, tiny_config())
    no_hessian = {k: v for k, v in pred.items() if k != keys.HESSIAN}
    with pytest.raises(ConfigError, match="predictions have no Hessian"):
        loss({**no_hessian, keys.MASK: mask.bool()}, batch, 1e-3)
    with pytest.raises(ConfigError, match="needs an energy model"):
        build_loss({"type": "ener", "start_pref_h": 1.0}, 1e-3).attach(torch.nn.Module())


# --- data, training, inference ------------------------------------------------------------------
def morse_labels(coord: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy, forces [n, 3] and Hessian [3n, 3n] of a Morse pair potential (exact, autograd)."""

    def energy(x):
        r = x.reshape(-1, 3)
        iu = torch.triu_indices(len(r), len(r), 1)
        d = (r[iu[0]] - r[iu[1]]).norm(dim=-1)
        return (0.5 * ((1 - torch.exp(-1.5 * (d - 1.2))) ** 2 - 1)).sum()

    x = torch.tensor(coord.reshape(-1), dtype=torch.float64, requires_grad=True)
    e = energy(x)
    (g,) = torch.autograd.grad(e, x)
    h = torch.autograd.functional.hessian(energy, x.detach())
    return float(e.detach()), -g.numpy().reshape(-1, 3), h.numpy()


def write_system(root, nframes: int = 3, seed: int = 0):
    """A non-periodic 4-atom system with types out of order (H O H O) and Morse labels."""
    rng = np.random.default_rng(seed)
    base = random_system(4, 1, extent=3.0, min_dist=1.1, seed=seed).coord
    coords = [base + 0.05 * rng.standard_normal(base.shape) for _ in range(nframes)]
    labels = [morse_labels(c) for c in coords]
    (root / "set.000").mkdir(parents=True)
    (root / "type.raw").write_text("1\n0\n1\n0\n")
    (root / "type_map.raw").write_text("O\nH\n")
    (root / "nopbc").write_text("")
    np.save(root / "set.000/coord.npy", np.array(coords).reshape(nframes, -1))
    np.save(root / "set.000/energy.npy", np.array([[e] for e, _, _ in labels]))
    np.save(root / "set.000/force.npy", np.array([f.reshape(-1) for _, f, _ in labels]))
    np.save(root / "set.000/hessian.npy", np.array([h.reshape(-1) for _, _, h in labels]))
    return np.array([h for _, _, h in labels])


def test_hessian_npy_is_read_and_sorted_with_the_atoms(tmp_path):
    hess = write_system(tmp_path / "sys")
    req = [DataRequirement(keys.HESSIAN, 1)]
    (sorted_sys,) = load_systems([str(tmp_path / "sys")], TYPE_MAP, req)
    (file_sys,) = load_systems([str(tmp_path / "sys")], TYPE_MAP, req, sort_atoms=False)
    np.testing.assert_array_equal(file_sys.labels[keys.HESSIAN], hess.reshape(3, -1))
    order = sorted_sys.atom_order  # O atoms (file 1, 3) first
    assert order.tolist() == [1, 3, 0, 2]
    rows = (3 * order[:, None] + np.arange(3)).reshape(-1)
    want = hess[:, rows][:, :, rows].reshape(3, -1)
    np.testing.assert_array_equal(sorted_sys.labels[keys.HESSIAN], want)
    # the sorted Hessian is the Hessian of the sorted coordinates
    _, _, h0 = morse_labels(sorted_sys.coords[0])
    np.testing.assert_allclose(sorted_sys.labels[keys.HESSIAN][0], h0.reshape(-1), atol=1e-12)
    np.save(tmp_path / "sys/set.000/hessian.npy", np.zeros((3, 12 * 12 - 1)))
    with pytest.raises(DataError, match=r"hessian.npy has 143 values .*\(3\*4\)\^2"):
        load_systems([str(tmp_path / "sys")], TYPE_MAP, req)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two training steps of a tiny Hessian model on Morse labels; returns the folder."""
    from lamkit.train import Trainer

    root = tmp_path_factory.mktemp("hessian_run")
    write_system(root / "train", seed=0)
    write_system(root / "valid", nframes=2, seed=1)
    conf = {
        "model": tiny_config(rcut=4.0),
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 1},
        "loss": LOSS,
        "training": {
            "training_data": {"systems": [str(root / "train")], "batch_size": 2},
            "validation_data": {"systems": [str(root / "valid")], "batch_size": 1},
            "numb_steps": 2,
            "disp_freq": 1,
            "save_freq": 2,
            "seed": 1,
        },
    }
    Trainer(conf, root / "run").run()
    return root


def test_two_training_steps_then_deep_pot_and_lam_test(trained, tmp_path):
    from lamkit.infer import DeepPot
    from lamkit.infer.metrics import run_test

    out = trained / "run"
    lines = (out / "lcurve.out").read_text().splitlines()
    head = lines[0].split()
    assert "rmse_h_trn" in head and "rmse_h_val" in head
    rows = np.loadtxt(out / "lcurve.out", ndmin=2)
    assert rows.shape[0] == 2
    assert np.isfinite(rows[:, head.index("rmse_h_trn") - 1]).all()
    assert json.loads((out / "out.json").read_text())["model"]["hessian_mode"] is True

    dp = DeepPot(str(out / "model.ckpt-2.pt"), device="cpu")
    assert dp.has_hessian and has_hessian(dp.model)
    valid = trained / "valid"
    (sys_,) = load_systems([str(valid)], TYPE_MAP, [], sort_atoms=False)
    e, f, v, h = dp.eval(sys_.coords, None, sys_.atype[0])
    assert h.shape == (2, 12, 12)
    np.testing.assert_allclose(h, np.swapaxes(h, 1, 2), atol=1e-12)

    res = run_test(dp, system=str(valid), detail_file=str(tmp_path / "out"))
    detail = np.loadtxt(tmp_path / "out.h.out")
    assert detail.shape == (2 * 144, 2)
    hess_valid = np.load(valid / "set.000/hessian.npy")
    np.testing.assert_array_equal(detail[:, 0], hess_valid.reshape(-1))
    np.testing.assert_allclose(detail[:, 1], h.reshape(-1), atol=1e-10)
    rmse = np.sqrt(np.mean((detail[:, 0] - detail[:, 1]) ** 2))
    assert res["average"]["rmse_h"] == pytest.approx(rmse, rel=1e-9)
    header = (tmp_path / "out.h.out").read_text().splitlines()[0]
    assert header.endswith("data_h pred_h (3Na*3Na matrix in row-major order)")


@pytest.mark.reference
@pytest.mark.slow  # a reference subprocess: about 30 s of imports on a loaded machine
def test_lam_test_hessian_detail_equals_dp_test(trained, tmp_path):
    """``dp --pt test -d`` on the same model (converted to a DeePMD-kit checkpoint) writes the
    same ``.h.out``, and the same Hessian RMSE."""
    pytest.importorskip("deepmd.pt", reason="the reference DeePMD-kit (PyTorch) is not installed")
    import re
    import subprocess
    import sys

    from lamkit.cli.main import main as lam_main
    from lamkit.interop.to_deepmd import deepmd_checkpoint
    from lamkit.model import load_model

    from .reference_finetune import reference_env

    model = load_model(trained / "run" / "model.ckpt-2.pt")
    torch.save(deepmd_checkpoint({"Default": model}, False), tmp_path / "ref.pt")
    valid = str(trained / "valid")
    args = ["test", "-s", valid, "-d"]
    proc = subprocess.run(
        [sys.executable, "-m", "deepmd", "--pt", *args, "ref", "-m", "ref.pt"],
        cwd=tmp_path, env=reference_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert lam_main([*args, str(tmp_path / "own"), "-m", str(trained / "run/model.ckpt-2.pt")]) == 0
    ref, own = np.loadtxt(tmp_path / "ref.h.out"), np.loadtxt(tmp_path / "own.h.out")
    assert ref.shape == own.shape == (2 * 144, 2)
    np.testing.assert_allclose(own, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    text = proc.stdout + proc.stderr
    ref_rmse = float(re.findall(r"Hessian RMSE\s*:\s*(\S+)", text)[-1])
    assert ref_rmse == pytest.approx(np.sqrt(np.mean((own[:, 0] - own[:, 1]) ** 2)), rel=1e-6)
