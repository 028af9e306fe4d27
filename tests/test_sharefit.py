"""The reference's multi-task variants: one fitting net shared by every task with a case
embedding (``input_torch_sharefit.json``) and branch aliases (``input_torch_with_alias.json``).

lamkit trains them (the examples' layout with tiny sizes), gives each task the one-hot case
vector of its position in the sorted task names, resolves aliases the way the reference does,
and reads a sharefit checkpoint written by ``dp --pt train`` with the same energies and forces
per head."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lamkit.config.multitask import branch_aliases, case_embd_index, resolve_branch
from lamkit.errors import ConfigError
from lamkit.fitting import build_fitting
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.model.io import model_from_payload, read_file
from lamkit.train import Trainer

from . import reference_finetune as rf
from .conftest import need_shared, require_reference

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = ("water_2", "water_1")  # not sorted: the case index follows the sorted names
NEVAL = 2


def sharefit_input(data, steps: int = 1, aliases: bool = True) -> dict:
    """``input_torch_sharefit.json`` (+ the aliases and info of ``input_torch_with_alias``)
    with a tiny DPA-2 and fitting: both tasks use ``shared_fit_with_id`` (dim_case_embd 2)."""
    fit = {"neuron": [16, 16], "resnet_dt": True, "seed": 1, "dim_case_embd": 2}
    fit["precision"] = "float64"
    branch = {"type_map": "type_map_all", "descriptor": "dpa2_descriptor"}
    model_dict = {t: {**branch, "fitting_net": "shared_fit_with_id"} for t in TASKS}
    if aliases:
        model_dict["water_1"]["model_branch_alias"] = ["Default", "Water"]
        model_dict["water_1"]["info"] = {"description": "water", "observed_type": ["H", "O"]}
        model_dict["water_2"]["model_branch_alias"] = ["Water2"]
    return {
        "model": {
            "shared_dict": {
                "type_map_all": ["O", "H"],
                "dpa2_descriptor": copy.deepcopy(rf.DESCRIPTOR),
                "shared_fit_with_id": fit,
            },
            "model_dict": model_dict,
        },
        "learning_rate": dict(rf.LEARNING_RATE),
        "loss_dict": {t: dict(rf.LOSS) for t in TASKS},
        "training": {
            "model_prob": {t: 0.5 for t in TASKS},
            "data_dict": {
                t: {"training_data": {"systems": [str(data)], "batch_size": 1}} for t in TASKS
            },
            "numb_steps": steps,
            "seed": 10,
            "disp_freq": 1,
            "save_freq": max(steps, 1),
        },
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    need_shared("water")
    return rf.subset_system(rf.water(0), tmp_path_factory.mktemp("sf") / "data", rf.NFRAMES)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sf_lam")
    trainer = Trainer(sharefit_input(data), out)
    trainer.run()
    return trainer, out


def predictions(model, n=NEVAL):
    system = rf.water(3)
    coord = torch.as_tensor(np.load(system / "set.000" / "coord.npy")[:n]).reshape(n, -1, 3)
    box = torch.as_tensor(np.load(system / "set.000" / "box.npy")[:n])
    names = (system / "type_map.raw").read_text().split()
    types = [model.type_map.index(names[t]) for t in np.loadtxt(system / "type.raw", dtype=int)]
    atype = torch.as_tensor(types)[None].expand(n, -1)
    out = model.evaluate(coord.to(torch.float64), atype, box.to(torch.float64))
    return out["energy"].detach().reshape(-1).numpy(), out["force"].detach().reshape(n, -1)


def test_case_index_follows_sorted_task_names_and_checks_dims():
    confs = {t: {"fitting_net": {"dim_case_embd": 2}} for t in ("b", "a")}
    assert case_embd_index(confs) == {"a": 0, "b": 1}
    assert case_embd_index({t: {"fitting_net": {}} for t in "ab"}) == {}
    with pytest.raises(ConfigError, match="dim_case_embd must be equal"):
        case_embd_index({"a": {"fitting_net": {"dim_case_embd": 2}}, "b": {"fitting_net": {}}})
    confs = {t: {"fitting_net": {"dim_case_embd": 1}} for t in ("a", "b")}
    with pytest.raises(ConfigError, match="at least the number of tasks"):
        case_embd_index(confs)


def test_aliases_resolve_like_the_reference():
    md = {"w1": {"model_branch_alias": ["Default", "Water"]}, "w2": {"model_branch_alias": []}}
    assert branch_aliases(md) == {"w1": "w1", "w2": "w2", "Default": "w1", "Water": "w1"}
    assert resolve_branch(md, None) == "w1"
    assert resolve_branch(md, "water") is None  # fine-tuning: exact names only
    assert resolve_branch(md, "water", ignore_case=True) == "w1"  # DeepPot(head=...)
    assert resolve_branch({"w2": {}}, None) is None
    md["w2"]["model_branch_alias"] = ["Water"]
    with pytest.raises(ConfigError, match="model_branch_alias: 'Water' already names"):
        branch_aliases(md)


def test_case_embedding_is_a_onehot_input_of_the_fitting():
    fit = build_fitting({"neuron": [8], "dim_case_embd": 3, "seed": 2}, 2, 5, True)
    assert fit.nets[0].layers[0].matrix.shape[0] == 5 + 3
    assert "case_embd" in fit.state_dict()
    assert "case_embd" not in build_fitting({"neuron": [8]}, 2, 5, True).state_dict()
    desc, atype = torch.randn(1, 4, 5, dtype=torch.float64), torch.tensor([[0, 1, 1, 0]])
    outs = []
    for k in range(3):
        fit.set_case_embd(k)
        assert fit.case_embd.tolist() == [float(j == k) for j in range(3)]
        outs.append(fit(desc.to(fit.dtype), atype)["energy"])
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])
    with pytest.raises(ConfigError, match="too small for task number 4"):
        fit.set_case_embd(3)


def test_sharefit_trains_with_one_fitting_and_a_case_per_task(trained):
    trainer, out = trained
    fits = {t: trainer.tasks[t].model.fitting for t in TASKS}
    assert fits["water_1"].nets is fits["water_2"].nets  # one shared network
    assert fits["water_1"].case_embd.tolist() == [1.0, 0.0]
    assert fits["water_2"].case_embd.tolist() == [0.0, 1.0]
    e1, _ = predictions(trainer.tasks["water_1"].model)
    e2, _ = predictions(trainer.tasks["water_2"].model)
    assert np.all(np.abs(e1 - e2) > 1e-8)  # the case vector makes the heads differ
    header = (out / "lcurve.out").read_text().splitlines()[0].split()
    assert "rmse_e_trn_water_1" in header and "rmse_e_trn_water_2" in header


def test_saved_branches_keep_their_case_and_answer_to_aliases(trained):
    trainer, out = trained
    obj = read_file(sorted(out.glob("model.ckpt-*.pt"))[-1])
    expect = {"water_1": [1.0, 0.0], "water_2": [0.0, 1.0]}
    for head, branch in [(None, "water_1"), ("Water", "water_1"), ("water2", "water_2")]:
        model = model_from_payload(obj, "ckpt", head=head)
        assert model.fitting.case_embd.tolist() == expect[branch]
        e, _ = predictions(model)
        e_ref, _ = predictions(trainer.tasks[branch].model)
        np.testing.assert_allclose(e, e_ref, rtol=1e-12)
    config = json.loads((out / "out.json").read_text())
    assert config["model"]["model_dict"]["water_1"]["model_branch_alias"] == ["Default", "Water"]


def test_finetune_branch_by_alias(trained, data, tmp_path):
    _, out = trained
    ckpt = sorted(out.glob("model.ckpt-*.pt"))[-1]
    conf = rf.finetune_input(False, data)
    with pytest.raises(ConfigError, match="no branch 'Nope'"):
        Trainer(conf, tmp_path / "bad", finetune=str(ckpt), model_branch="Nope")
    trainer = Trainer(
        conf, tmp_path / "ft", finetune=str(ckpt), model_branch="Water2", use_pretrain_script=True
    )
    assert trainer.model.fitting.case_embd.tolist() == [0.0, 1.0]  # water_2's weights


def test_duplicate_alias_is_an_input_error(data, tmp_path):
    conf = sharefit_input(data)
    conf["model"]["model_dict"]["water_2"]["model_branch_alias"] = ["Water"]
    with pytest.raises(
        ConfigError, match="water_1/model_branch_alias: 'Water' already names branch 'water_2'"
    ):
        Trainer(conf, tmp_path)


_HEADS_SCRIPT = r"""
import sys, warnings
import numpy as np
import torch
torch.set_num_threads(1)
warnings.simplefilter("ignore")
from deepmd.infer import DeepPot

from deepmd.main import main

main(["--pt", "train", "input.json", "--skip-neighbor-stat"])  # one process: one import
ckpt, system, n, out, *heads = sys.argv[1:]
n = int(n)
coord = np.load(f"{system}/set.000/coord.npy")[:n]
box = np.load(f"{system}/set.000/box.npy")[:n]
atype = np.loadtxt(f"{system}/type.raw", dtype=int)  # data type map [O, H] = the model's
res = {}
for head in heads:
    e, f, _ = DeepPot(ckpt, head=head).eval(coord, box, atype)
    res[f"e_{head}"], res[f"f_{head}"] = np.reshape(e, n), np.reshape(f, (n, -1))
np.savez(out, **res)
"""


@pytest.mark.reference
def test_reference_sharefit_checkpoint_reads_with_equal_predictions(data, tmp_path):
    require_reference()
    (tmp_path / "input.json").write_text(json.dumps(sharefit_input(data, steps=0)))
    ckpt = tmp_path / "model.ckpt-0.pt"  # written by the script's dp --pt train
    heads = ["water_1", "water_2", "Water2"]  # an alias picks the same head in both codes
    out = tmp_path / "ref_eval.npz"
    args = [str(ckpt), str(rf.water(3)), str(NEVAL), str(out), *heads]
    proc = subprocess.run(
        [sys.executable, "-c", _HEADS_SCRIPT, *args],
        cwd=tmp_path,
        env=rf.reference_env(),
        capture_output=True,
        text=True,
        timeout=rf.TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = np.load(out)
    state = rf.load_state(ckpt)
    for head, branch, case in [
        ("water_1", "water_1", [1.0, 0.0]),
        ("water_2", "water_2", [0.0, 1.0]),
        ("Water2", "water_2", [0.0, 1.0]),
    ]:
        ref_case = rf.branch_tensors(state, branch)["fitting_net.case_embd"]
        assert ref_case.tolist() == case  # the reference's index: sorted task names
        model = load_deepmd_checkpoint(ckpt, head=head)
        assert model.fitting.case_embd.tolist() == case
        e, f = predictions(model)
        np.testing.assert_allclose(e, ref[f"e_{head}"], rtol=1e-10, atol=0)
        np.testing.assert_allclose(f.numpy(), ref[f"f_{head}"], rtol=0, atol=1e-8)
    assert np.all(np.abs(ref["e_water_1"] - ref["e_water_2"]) > 1e-8)
