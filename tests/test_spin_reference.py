"""Spin training and testing against the reference DeePMD-kit 3.2 (``dp --pt``), on the input of
its examples/spin/se_e2_a (smaller nets) and NiO data from :mod:`lamkit.testing.spin_data`.

One reference subprocess runs ``dp --pt train`` with 0 steps, ``dp --pt test -d`` of that
checkpoint, and the reference's ``ener_spin`` loss (``EnergySpinLoss``) on predictions and labels
written by this test. Then: lamkit's descriptor statistics (davg/dstd of the doubled type map)
and energy bias of the same input are the reference's; ``lam test -d`` of the reference
checkpoint writes the same detail files (``.e``, ``.fr``, ``.fm``, ``.v``, ``.s``...); lamkit's
``ener_spin`` loss and its displayed errors are the reference's (its argcheck's defaults, mse
and mae, several learning rates, a batch without magnetic atoms). Skipped without the
reference (a failure in CI).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.cli.main import main
from lamkit.model import load_model
from lamkit.testing.physics import assert_close
from lamkit.testing.spin_data import example_dir
from lamkit.train.loss import build_loss

from .conftest import require_reference

pytestmark = [pytest.mark.reference, pytest.mark.usefixtures("one_thread")]

LOSSES = {
    "example": {"type": "ener_spin", "start_pref_e": 0.02, "limit_pref_e": 1,
                "start_pref_fr": 1000, "limit_pref_fr": 1, "start_pref_fm": 1000,
                "limit_pref_fm": 1},
    "all-terms": {"type": "ener_spin", "start_pref_v": 0.5, "limit_pref_v": 2,
                  "start_pref_ae": 0.3, "limit_pref_ae": 0.1, "intensive_ener_virial": True},
    "mae": {"type": "ener_spin", "loss_func": "mae", "start_pref_v": 1, "limit_pref_v": 1},
}
START_LR = 1e-3
LRS = (1e-3, 2e-5)

_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.main import main
from dargs import Argument
from deepmd.pt.loss.ener_spin import EnergySpinLoss
from deepmd.utils.argcheck import loss_ener_spin

main(["--pt", "train", "input.json", "--skip-neighbor-stat"])
main(["--pt", "test", "-m", "model.ckpt-0.pt", "-s", "../data_reformat", "-d", "ref"])
job = torch.load("loss_job.pt")
out = {}
for name, conf in job["losses"].items():
    conf = {k: v for k, v in conf.items() if k != "type"}
    conf = Argument("loss", dict, sub_fields=loss_ener_spin()).normalize_value(conf)
    loss = EnergySpinLoss(starter_learning_rate=job["start_lr"], **conf)
    for b, (pred, label) in enumerate(job["batches"]):
        for lr in job["lrs"]:
            natoms = pred["force"].shape[1]
            _, value, more = loss({}, lambda: dict(pred), dict(label), natoms, lr)
            out[(name, b, lr)] = (float(value), {k: float(v) for k, v in more.items()})
torch.save(out, "loss_results.pt")
"""


def _loss_batches() -> list[tuple[dict, dict]]:
    """Predictions and labels of two batches (3 frames of 5 atoms): magnetic atoms, none."""
    rng = np.random.default_rng(5)
    out = []
    for mag in ([True, False, True, False, False], [False] * 5):
        nf, n = 3, 5

        def t(*shape):
            return torch.tensor(rng.normal(size=shape))

        mask_mag = torch.tensor(mag).reshape(1, n, 1).expand(nf, n, 1).clone()
        pred = {"energy": t(nf, 1), "force": t(nf, n, 3), "force_mag": t(nf, n, 3) * mask_mag,
                "virial": t(nf, 9), "atom_energy": t(nf, n, 1), "mask_mag": mask_mag,
                "mask": torch.ones(nf, n, dtype=torch.float64)}
        label = {"energy": t(nf, 1), "force": t(nf, n, 3), "force_mag": t(nf, n, 3),
                 "virial": t(nf, 9), "atom_ener": t(nf, n)}
        for key in ("energy", "force", "force_mag", "virial", "atom_ener"):
            label[f"find_{key}"] = 1.0
        out.append((pred, label))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    root = tmp_path_factory.mktemp("spin_reference")
    work = example_dir(root, steps=0)
    conf = json.loads((work / "input.json").read_text())
    # smaller nets: the statistics do not depend on them
    conf["model"]["descriptor"].update(neuron=[4, 8, 16], axis_neuron=4)
    conf["model"]["fitting_net"]["neuron"] = [16, 16]
    (work / "input.json").write_text(json.dumps(conf))
    job = {"losses": LOSSES, "batches": _loss_batches(), "lrs": LRS, "start_lr": START_LR}
    torch.save(job, work / "loss_job.pt")
    (work / "ref.py").write_text(_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUM_WORKERS": "0"}
    proc = subprocess.run([sys.executable, "ref.py"], cwd=work, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, conf, torch.load(work / "loss_results.pt", weights_only=False)


def test_statistics_match_reference(reference, monkeypatch):
    from lamkit.train import Trainer

    work, conf, _ = reference
    monkeypatch.chdir(work)
    own = Trainer(copy.deepcopy(conf), work / "lam").model
    ref = load_model(work / "model.ckpt-0.pt")
    assert (ref.descriptor.davg[:, 0] > 0).any() and (ref.out_bias != 0).any()
    assert own.descriptor.davg.shape[0] == 4  # Ni, O, Ni_spin, O_spin
    for key in ("davg", "dstd"):
        want = getattr(ref.descriptor, key).detach().numpy()
        assert_close(key, getattr(own.descriptor, key).detach().numpy(), want, 1e-10)
    assert_close("out_bias", own.out_bias.numpy(), ref.out_bias.numpy(), 1e-10)


def test_lam_test_matches_dp_test(reference, monkeypatch):
    work, _, _ = reference
    monkeypatch.chdir(work)
    assert main(["test", "-m", "model.ckpt-0.pt", "-s", "../data_reformat", "-d", "lam"]) == 0
    for ext in ("e", "e_peratom", "fr", "fm", "v", "v_peratom", "s"):
        a, b = np.loadtxt(work / f"ref.{ext}.out"), np.loadtxt(work / f"lam.{ext}.out")
        assert a.shape == b.shape, ext
        # the same rows (the reference lists the systems in another order)
        a, b = a[np.lexsort(a.T[::-1])], b[np.lexsort(b.T[::-1])]
        assert_close(f"{ext}.out", b, a, 1e-10)
        header = [ln for ln in (work / f"lam.{ext}.out").read_text().splitlines() if "#" in ln]
        want = [ln for ln in (work / f"ref.{ext}.out").read_text().splitlines() if "#" in ln]
        assert header[0].split(":")[1:] == want[0].split(":")[1:], ext


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_matches_reference(reference, name):
    _, _, results = reference
    model_config = {"spin": {"use_spin": [True]}, "fitting_net": {"type": "ener"}}
    loss = build_loss(LOSSES[name], START_LR, model_config)
    for b, (pred, label) in enumerate(_loss_batches()):
        pred = {**pred, keys.ATOM_ENERGY: pred["atom_energy"]}
        batch = {**label, "atom_ener": label["atom_ener"].reshape(3, 5, 1)}
        for lr in LRS:
            value, more = loss(pred, batch, lr)
            want, want_more = results[(name, b, lr)]
            tag = f"{name} batch {b} lr {lr}"
            assert_close(f"{tag} loss", float(value), want, 1e-12)
            for key, val in more.items():
                assert_close(f"{tag} {key}", val, want_more[key], 1e-12)
