"""Fine-tuning from a checkpoint shaped like the published OpenLAM DPA-3.1-3M: the reference
(``dp --pt train``) builds a multi-task model with that architecture (16 repflow layers of
128/64/32 channels, e_sel 1200 / a_sel 300 with dynamic selection, float32, ``silut:3.0``, one
[240, 240, 240] fitting shared by all branches through a 31-wide case embedding, a
periodic-table type map; random weights, two steps on EMT alloys) and lamkit:

* reads every branch with the reference's energies and forces;
* fine-tunes from it, single-task from a branch (``--use-pretrain-script``, type map cut to
  the new data's two elements) and multi-task (one branch resumed, a new one started from
  another branch), giving the reference's ``model.ckpt-0.pt`` (weights, refit energy bias,
  energies and forces) before the first step;
* trains on from it with ``lam train --finetune`` and tests the result with ``lam test``.

Float32 models: energies and the refit biases (float64, fitted to float32 predictions) agree to
float32 rounding (1e-6 relative)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from lamkit.cli.main import main as lam_main
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.testing.openlam import LOSS, PERIODIC_TABLE, emt_system, openlam_multitask_input
from lamkit.train import Trainer

from . import reference_finetune as rf
from .conftest import require_reference

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
BRANCHES = {"CuNi": ("Cu", "Ni"), "AgPd": ("Ag", "Pd"), "AlPt": ("Al", "Pt")}
NEVAL = 2


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    require_reference()
    root = tmp_path_factory.mktemp("openlam")
    systems = {
        name: emt_system(root / name, elems, nframes=4, seed=i)
        for i, (name, elems) in enumerate(BRANCHES.items())
    }
    pre = openlam_multitask_input({n: [s] for n, s in systems.items()}, steps=2)
    ckpt = rf._train(root / "pretrained", pre)
    cuau = emt_system(root / "CuAu", ("Cu", "Au"), nframes=4, seed=7)
    return {"root": root, "ckpt": ckpt, "systems": systems, "cuau": cuau}


def predict(model, system, n: int = NEVAL):
    names = (system / "type_map.raw").read_text().split()
    types = [model.type_map.index(names[t]) for t in np.loadtxt(system / "type.raw", dtype=int)]
    coord = torch.as_tensor(np.load(system / "set.000" / "coord.npy")[:n]).reshape(n, -1, 3)
    box = torch.as_tensor(np.load(system / "set.000" / "box.npy")[:n])
    out = model.evaluate(coord, torch.as_tensor(types)[None].expand(n, -1), box)
    energy = out["energy"].detach().double().reshape(-1).numpy()
    return energy, out["force"].detach().double().reshape(n, -1).numpy()


def assert_predictions(model, ckpt, system, head=None):
    e_ref, f_ref = rf.reference_energies(ckpt, system, NEVAL, head=head)
    e, f = predict(model, system)
    np.testing.assert_allclose(e, e_ref, rtol=1e-6, atol=0)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-6 * max(1.0, np.abs(f_ref).max()))


def assert_bias(model, ckpt, head="Default"):
    """The refit bias: float64 in both, but fitted to the float32 models' predictions, so equal
    to their rounding."""
    want = rf.branch_tensors(rf.load_state(ckpt), head)["out_bias"].reshape(-1).double()
    torch.testing.assert_close(model.out_bias.reshape(-1).double(), want, rtol=1e-6, atol=0)


def finetune_input(system) -> dict:
    """The single-task input a user writes with ``--use-pretrain-script``: only the type map."""
    return {
        "model": {"type_map": ["Cu", "Au"], "descriptor": {}, "fitting_net": {}},
        "learning_rate": {"type": "exp", "start_lr": 1e-4, "stop_lr": 3e-6, "decay_steps": 5000},
        "loss": dict(LOSS),
        "training": {
            "training_data": {"systems": [str(system)], "batch_size": 1},
            "numb_steps": 0,
            "seed": 10,
            "disp_freq": 1,
            "save_freq": 1,
        },
    }


def test_every_branch_reads_as_the_reference(work):
    for head, system in work["systems"].items():
        model = load_deepmd_checkpoint(work["ckpt"], head=head)
        assert model.type_map == PERIODIC_TABLE
        cfg = model.config["descriptor"]
        assert cfg["repflow"]["nlayers"] == 16 and cfg["repflow"]["use_dynamic_sel"]
        assert_predictions(model, work["ckpt"], system, head)


def test_single_task_finetune_from_a_branch(work):
    config = finetune_input(work["cuau"])
    ref = rf.reference_finetune(work["root"] / "ref_st", work["ckpt"], config, "CuNi", True)
    trainer = Trainer(
        copy.deepcopy(config),
        work["root"] / "lam_st",
        finetune=str(work["ckpt"]),
        model_branch="CuNi",
        use_pretrain_script=True,
    )
    model = trainer.model
    assert model.type_map == ["Cu", "Au"]
    assert model.config["descriptor"]["repflow"]["e_sel"] == 1200
    assert_bias(model, ref)
    assert_predictions(model, ref, work["cuau"])
    # the descriptor is the pretrained one, cut to two types, in both
    ours = model.state_dict()
    for key, value in load_deepmd_checkpoint(ref).state_dict().items():
        if key.startswith("descriptor."):
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0)


def multitask_finetune_input(work, steps: int = 0) -> dict:
    """A branch resumed (AgPd, its own data) and a new one (CuAu) started from CuNi."""
    branches = {"AgPd": [work["systems"]["AgPd"]], "CuAu": [work["cuau"]]}
    config = openlam_multitask_input(branches, steps=steps)
    config["model"]["model_dict"]["CuAu"]["finetune_head"] = "CuNi"
    return config


def test_multitask_finetune(work):
    config = multitask_finetune_input(work)
    ref = rf._train(work["root"] / "ref_mt", config, ["--finetune", str(work["ckpt"])])
    assert ref.name == "model.ckpt-0.pt"
    trainer = Trainer(copy.deepcopy(config), work["root"] / "lam_mt", finetune=str(work["ckpt"]))
    for head, system in (("AgPd", work["systems"]["AgPd"]), ("CuAu", work["cuau"])):
        assert_bias(trainer.model[head], ref, head)
        assert_predictions(trainer.model[head], ref, system, head)


def test_lam_train_finetune_then_test(work, tmp_path):
    """The command line: multi-task fine-tuning for a few steps, then ``lam test`` of the new
    branch and ``lam show`` of its branches."""
    config = multitask_finetune_input(work, steps=3)
    (tmp_path / "input.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "input.json"), "--finetune", str(work["ckpt"]), "-o", str(out)]
    assert lam_main(args) == 0
    lines = [ln.split() for ln in (out / "lcurve.out").read_text().splitlines()]
    assert all(np.isfinite(float(v)) for v in lines[-1][1:])
    ckpt = out / "model.ckpt.pt"
    assert ckpt.exists()
    detail = tmp_path / "detail"
    args = ["test", "-m", str(ckpt), "--head", "CuAu", "-s", str(work["cuau"]), "-d", str(detail)]
    assert lam_main(args) == 0
    pred = np.loadtxt(f"{detail}.e.out")
    assert pred.shape == (4, 2) and np.all(np.isfinite(pred))
