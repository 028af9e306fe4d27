"""Training and testing spin models from the reference's spin example input.

``lam train`` runs the input of the reference's examples/spin/se_e2_a
(``lamkit.testing.spin_data.EXAMPLE``: its model, loss and training sections, unchanged but for
the step counts) on NiO data made by
:mod:`lamkit.testing.spin_data` in the example's folder layout (``../data_reformat/data_*``);
``lam test -d`` of the result writes the reference's spin detail files; the training gradient
of the magnetic-force term matches finite differences. The comparisons with the reference are in
``test_spin_reference.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lamkit.cli.main import main
from lamkit.infer import DeepPot
from lamkit.model import load_model
from lamkit.model.spin import SpinEnergyModel
from lamkit.testing.physics import assert_close
from lamkit.testing.spin_data import FRAMES, example_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def test_example_input_trains_and_tests(tmp_path, monkeypatch):
    work = example_dir(tmp_path, steps=2)
    monkeypatch.chdir(work)
    assert main(["train", "input.json"]) == 0
    header = (work / "lcurve.out").read_text().splitlines()[0].split()
    for col in ("rmse_e_trn", "rmse_fr_trn", "rmse_fm_trn", "rmse_fm_val"):
        assert col in header
    model = load_model(work / "model.ckpt.pt")
    assert isinstance(model, SpinEnergyModel) and model.type_map == ["Ni", "O"]
    assert model.descriptor.sel == [60, 60, 60, 60]
    assert main(["test", "-m", "model.ckpt.pt", "-s", "../data_reformat", "-d", "det"]) == 0
    for ext in ("e", "e_peratom", "fr", "fm", "v", "v_peratom", "s"):
        assert (work / f"det.{ext}.out").exists(), ext
    assert not (work / "det.f.out").exists()
    fm = np.loadtxt(work / "det.fm.out")
    assert fm.shape == (4 * sum(FRAMES), 6)  # the 4 Ni atoms of every frame
    # the detail files hold DeepPot.eval's numbers (first system in them: data_0)
    data = tmp_path / "data_reformat" / "data_0" / "set.000"
    dp = DeepPot(work / "model.ckpt.pt", device="cpu")
    out = dp.eval(np.load(data / "coord.npy"), np.load(data / "box.npy"), [0, 0, 0, 0, 1, 1, 1, 1],
                  spin=np.load(data / "spin.npy"))
    mask = out[4].reshape(-1).astype(bool)
    assert_close("fm detail", fm[: mask.sum(), 3:], out[3].reshape(-1, 3)[mask], 1e-12)
    assert_close("fm label", fm[: mask.sum(), :3],
                 np.load(data / "force_mag.npy").reshape(-1, 3)[mask], 1e-12)
    fr = np.loadtxt(work / "det.fr.out")
    assert_close("fr detail", fr[: out[1].size // 3, 3:], out[1].reshape(-1, 3), 1e-12)


def test_magnetic_force_loss_gradient(tmp_path, monkeypatch):
    """Training differentiates the magnetic-force term right (a second derivative of the
    energy): d loss / d parameter by autograd equals central differences, for weights of the
    fitting net and of the descriptor's embedding nets (only the magnetic-force term)."""
    import torch

    from lamkit.train import Trainer

    work = example_dir(tmp_path, steps=0)
    conf = json.loads((work / "input.json").read_text())
    conf["model"]["descriptor"].update(neuron=[4, 8], axis_neuron=4, sel=[30, 30])
    conf["model"]["fitting_net"]["neuron"] = [8, 8]
    conf["loss"] = {"type": "ener_spin", "start_pref_e": 0, "limit_pref_e": 0,
                    "start_pref_fr": 0, "limit_pref_fr": 0, "start_pref_fm": 1,
                    "limit_pref_fm": 1}
    monkeypatch.chdir(work)
    trainer = Trainer(conf, work / "out")
    task = trainer.tasks["Default"]
    batch = task.sampler.next()

    def loss() -> torch.Tensor:
        pred, b = trainer._predict(task, batch, task.builder, create_graph=True)
        return task.loss(pred, b, 1e-3)[0]

    params = dict(trainer.model.named_parameters())
    names = [n for n in params if n.startswith("fitting.")][:1]
    names += [n for n in params if n.startswith("descriptor.embeddings.")][:1]
    value = loss()
    grads = torch.autograd.grad(value, [params[n] for n in names])
    assert value.item() > 0
    h = 1e-6
    for name, grad in zip(names, grads):
        p = params[name]
        idx = tuple(int(i) for i in torch.nonzero(grad.abs() == grad.abs().max())[0])
        with torch.no_grad():
            p[idx] += h
            up = loss().item()
            p[idx] -= 2 * h
            down = loss().item()
            p[idx] += h
        assert abs(grad[idx].item()) > 1e-8, name
        assert_close(name, grad[idx].item(), (up - down) / (2 * h), 1e-5, 1e-10)
