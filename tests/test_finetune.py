"""Fine-tuning (``lam train --finetune``) from lamkit single- and multi-task models: branch
choice, energy-bias refit, RANDOM fittings, new elements, ``--use-pretrain-script``, the CLI,
and replay fine-tuning."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.errors import ConfigError
from lamkit.model import load_model
from lamkit.train import Trainer
from lamkit.train.replay import REPLAY, farthest_points

from .conftest import need_shared
from .train_inputs import DPA1, multitask_config, single_config, water_subset

pytestmark = pytest.mark.usefixtures("one_thread")


def water(k: int):
    return need_shared("water", f"data_{k}")


def frames(system, n=2, type_map=("O", "H")):
    """First ``n`` frames of a deepmd/npy system as (coord, atype, box) tensors."""
    names = (system / "type_map.raw").read_text().split()
    types = np.loadtxt(system / "type.raw", dtype=np.int64)
    atype = torch.as_tensor([list(type_map).index(names[t]) for t in types])[None]
    coord = torch.as_tensor(np.load(system / "set.000" / "coord.npy")[:n]).reshape(n, -1, 3)
    box = torch.as_tensor(np.load(system / "set.000" / "box.npy")[:n])
    return coord, atype.expand(n, -1), box


def predict(model, system, n=2):
    coord, atype, box = frames(system, n, model.type_map)
    out = model.evaluate(coord, atype, box)
    return out["energy"].detach().reshape(-1), out["force"].detach(), atype[0]


def fitting_state(model) -> dict:
    return {k: v for k, v in model.state_dict().items() if k.startswith("fitting.")}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def data2(tmp_path_factory):
    """8 frames of data_2: fewer than data_stat_nbatch, so all of them enter the statistics."""
    return water_subset(water(2), tmp_path_factory.mktemp("d2") / "data_2", 8)


@pytest.fixture(scope="module")
def pretrained_single(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre_single")
    Trainer(single_config([water(0)], steps=4), out).run()
    return out / "model.ckpt.pt"


@pytest.fixture(scope="module")
def pretrained_multi(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre_multi")
    Trainer(multitask_config(steps=4), out).run()
    return out / "model.ckpt.pt"


def bias_change(model_a, model_b, atype) -> torch.Tensor:
    """Energy difference that the per-type bias change from a to b makes for one frame."""
    n = model_a.out_bias.reshape(-1).shape[0]  # b may have new types after a's
    delta = (model_b.out_bias.reshape(-1)[:n] - model_a.out_bias.reshape(-1)).to(torch.float64)
    return delta[atype].sum()


# --- single-task ---------------------------------------------------------------------------
def test_single_task_keeps_weights_and_refits_the_bias(pretrained_single, tmp_path, data2):
    pre = load_model(pretrained_single)
    trainer = Trainer(single_config([data2], steps=0), tmp_path, finetune=pretrained_single)
    tuned = trainer.model
    # every weight but the bias comes from the pretrained model
    a = {k: v for k, v in pre.state_dict().items() if k != "out_bias"}
    b = {k: v for k, v in tuned.state_dict().items() if k != "out_bias"}
    assert_same(a, b)
    assert not torch.equal(pre.out_bias, tuned.out_bias)
    # change-by-statistic: after the refit the model has no mean energy error on the new data
    e, _, _ = predict(tuned, data2, n=8)
    labels = torch.as_tensor(np.load(data2 / "set.000" / "energy.npy"))
    e_pre, _, _ = predict(pre, data2, n=8)
    assert abs(float((labels - e).mean())) < 1e-6 * abs(float(labels.mean()))
    assert abs(float((labels - e_pre).mean())) > 1e-3  # it did have one before
    # forces do not see the bias; energies move by exactly the bias change
    e0, f0, atype = predict(pre, water(3))
    e1, f1, _ = predict(tuned, water(3))
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        e1 - e0, bias_change(pre, tuned, atype).expand(2), rtol=1e-10, atol=0
    )


def test_random_fitting_sets_the_bias_from_the_data(pretrained_single, tmp_path, data2):
    pre = load_model(pretrained_single)
    trainer = Trainer(
        single_config([data2], steps=0),
        tmp_path,
        finetune=pretrained_single,
        model_branch="RANDOM",
    )
    tuned = trainer.model
    d0 = {k: v for k, v in pre.state_dict().items() if k.startswith("descriptor.")}
    d1 = {k: v for k, v in tuned.state_dict().items() if k.startswith("descriptor.")}
    assert_same(d0, d1)
    f0, f1 = fitting_state(pre), fitting_state(tuned)
    assert any(not torch.equal(f0[k], f1[k]) for k in f0)
    # set-by-statistic: the bias alone reproduces the mean label energy of the composition
    counts = torch.tensor([64.0, 128.0], dtype=torch.float64)
    labels = np.load(data2 / "set.000" / "energy.npy").astype(np.float64)
    bias = tuned.out_bias.reshape(-1).to(torch.float64)
    assert float(bias @ counts) == pytest.approx(float(labels.mean()), rel=1e-10)


def test_single_task_model_has_only_the_default_branch(pretrained_single, tmp_path, data2):
    with pytest.raises(ConfigError, match="single-task model; its only branch is 'Default'"):
        Trainer(
            single_config([data2], steps=0),
            tmp_path,
            finetune=pretrained_single,
            model_branch="water",
        )


# --- multi-task ----------------------------------------------------------------------------
def test_branch_of_a_multitask_model(pretrained_multi, tmp_path, data2):
    branch = load_model(pretrained_multi, head="mixed")
    trainer = Trainer(
        single_config([data2], steps=0),
        tmp_path,
        finetune=pretrained_multi,
        model_branch="mixed",
    )
    tuned = trainer.model
    a = {k: v for k, v in branch.state_dict().items() if k != "out_bias"}
    b = {k: v for k, v in tuned.state_dict().items() if k != "out_bias"}
    assert_same(a, b)
    other = load_model(pretrained_multi, head="water")
    assert any(not torch.equal(v, fitting_state(other)[k]) for k, v in fitting_state(tuned).items())


def test_unknown_branch_suggests_a_name(pretrained_multi, tmp_path, data2):
    with pytest.raises(ConfigError, match="has no branch 'mixd'.*Did you mean 'mixed'"):
        Trainer(
            single_config([data2], steps=0),
            tmp_path,
            finetune=pretrained_multi,
            model_branch="mixd",
        )


def test_no_branch_warns_and_uses_a_random_fitting(pretrained_multi, tmp_path, caplog, data2):
    with caplog.at_level(logging.WARNING, logger="lamkit.train"):
        trainer = Trainer(single_config([data2], steps=0), tmp_path, finetune=pretrained_multi)
    assert "without a branch" in caplog.text
    tuned = trainer.model
    for head in ("water", "mixed"):
        f = fitting_state(load_model(pretrained_multi, head=head))
        assert any(not torch.equal(v, f[k]) for k, v in fitting_state(tuned).items())


def test_finetune_head_in_the_input_chooses_the_branch(pretrained_multi, tmp_path, data2):
    conf = single_config([data2], steps=0)
    conf["model"]["finetune_head"] = "water"
    tuned = Trainer(conf, tmp_path, finetune=pretrained_multi).model
    assert_same(fitting_state(load_model(pretrained_multi, head="water")), fitting_state(tuned))


def test_multitask_input_resumes_and_adds_tasks(pretrained_multi, tmp_path):
    conf = multitask_config(steps=0)
    conf["model"]["model_dict"]["mixed"]["finetune_head"] = "water"
    trainer = Trainer(conf, tmp_path, finetune=pretrained_multi)
    water_pre = load_model(pretrained_multi, head="water")
    # 'water' resumes its branch unchanged (bias included); 'mixed' starts from 'water'
    assert_same(water_pre.state_dict(), trainer.model["water"].state_dict())
    assert_same(fitting_state(water_pre), fitting_state(trainer.model["mixed"]))
    assert not torch.equal(water_pre.out_bias, trainer.model["mixed"].out_bias)


# --- type maps -----------------------------------------------------------------------------
def test_new_element_leaves_old_predictions_unchanged(pretrained_single, tmp_path):
    pre = load_model(pretrained_single)
    data = water_subset(water(2), tmp_path / "na_water", 6, retype=0)
    conf = single_config([data], steps=0, type_map=("O", "H", "Na"))
    tuned = Trainer(conf, tmp_path / "run", finetune=pretrained_single).model
    assert tuned.type_map == ["O", "H", "Na"]
    # on O/H-only frames: identical forces, energies moved by the refit bias only
    e0, f0, atype = predict(pre, water(3))
    e1, f1, _ = predict(tuned, water(3))
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        e1 - e0, bias_change(pre, tuned, atype).expand(2), rtol=1e-10, atol=0
    )
    # the new element has statistics from the data and predictions are finite
    e2, f2, _ = predict(tuned, data)
    assert torch.isfinite(e2).all() and torch.isfinite(f2).all()
    stat = {k: v for k, v in tuned.descriptor.state_dict().items() if k.endswith("dstd")}
    for v in stat.values():
        assert torch.all(v[2] > 0)


def test_subset_and_reordered_type_map(pretrained_single, tmp_path, data2):
    pre = load_model(pretrained_single)
    conf = single_config([data2], steps=0, type_map=("H", "O"))
    tuned = Trainer(conf, tmp_path, finetune=pretrained_single).model
    e0, f0, atype = predict(pre, water(3))
    e1, f1, _ = predict(tuned, water(3))
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-12)
    shift = (tuned.out_bias.reshape(-1)[[1, 0]] - pre.out_bias.reshape(-1)).to(torch.float64)
    torch.testing.assert_close(e1 - e0, shift[atype].sum().expand(2), rtol=1e-10, atol=0)


# --- use-pretrain-script ---------------------------------------------------------------------
def test_use_pretrain_script_takes_the_pretrained_sections(pretrained_single, tmp_path, data2):
    other = {**DPA1, "neuron": [2, 4], "axis_neuron": 2}
    conf = single_config([data2], steps=0, descriptor=other)
    with pytest.raises(ConfigError, match="use-pretrain-script"):
        Trainer(conf, tmp_path / "a", finetune=pretrained_single)
    trainer = Trainer(conf, tmp_path / "b", finetune=pretrained_single, use_pretrain_script=True)
    pre = load_model(pretrained_single)
    assert trainer.model.config["descriptor"]["neuron"] == pre.config["descriptor"]["neuron"]
    a = {k: v for k, v in pre.state_dict().items() if k != "out_bias"}
    b = {k: v for k, v in trainer.model.state_dict().items() if k != "out_bias"}
    assert_same(a, b)
    saved = json.loads((tmp_path / "b" / "out.json").read_text())
    assert saved["model"]["descriptor"]["neuron"] == [4, 8]


def test_finetune_excludes_restart_and_init_model(pretrained_single, tmp_path, data2):
    with pytest.raises(ConfigError, match="exclude each other"):
        Trainer(
            single_config([data2], steps=0),
            tmp_path,
            finetune=pretrained_single,
            init_model=str(pretrained_single),
        )
    with pytest.raises(ConfigError, match="go with --finetune"):
        Trainer(single_config([data2], steps=0), tmp_path, model_branch="water")


# --- command line ----------------------------------------------------------------------------
def test_cli_finetunes_from_a_branch(pretrained_multi, tmp_path, data2):
    from lamkit.cli.main import main

    inp = tmp_path / "input.json"
    inp.write_text(json.dumps(single_config([data2], steps=2)))
    out = tmp_path / "out"
    args = ["train", str(inp), "--finetune", str(pretrained_multi), "--model-branch", "water"]
    assert main([*args, "-o", str(out)]) == 0
    tuned = load_model(out / "model.ckpt.pt")
    assert tuned.type_map == ["O", "H"]
    lines = (out / "lcurve.out").read_text().splitlines()
    assert lines[0].startswith("#") and [x.split()[0] for x in lines if x[0] != "#"] == ["1", "2"]
    assert main(["train", str(inp), "--model-branch", "water", "-o", str(tmp_path / "x")]) == 2


def test_zero_steps_writes_the_finetuned_checkpoint(pretrained_single, tmp_path, data2, caplog):
    """``numb_steps`` 0 with ``--finetune`` (refit the bias, keep the weights) saves
    ``model.ckpt-0.pt`` as ``dp --pt train`` does, without a learning-curve warning."""
    from lamkit.cli.main import main

    inp = tmp_path / "input.json"
    inp.write_text(json.dumps(single_config([data2], steps=0)))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="lamkit"):
        assert main(["train", str(inp), "--finetune", str(pretrained_single), "-o", str(out)]) == 0
    assert (out / "model.ckpt-0.pt").is_file() and (out / "checkpoint").is_file()
    assert not [r for r in caplog.records if "learning curve" in r.getMessage()]
    tuned, pre = load_model(out / "model.ckpt.pt"), load_model(pretrained_single)
    expected = Trainer(single_config([data2], steps=0), tmp_path / "x", finetune=pretrained_single)
    assert_same(tuned.state_dict(), expected.model.state_dict())
    assert not torch.equal(pre.out_bias, tuned.out_bias)


# --- replay ----------------------------------------------------------------------------------
def test_farthest_points_cover_the_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0], [10, 0], [0, 10], [10, 10]])
    x = np.concatenate([c + 0.1 * rng.standard_normal((25, 2)) for c in centers])
    picked = farthest_points(x, 4)
    assert len(set(picked.tolist())) == 4
    assert sorted({int(i) // 25 for i in picked}) == [0, 1, 2, 3]  # one per cluster
    assert len(farthest_points(x, 500)) == 100


def replay_config(data2, steps, nframes=5, selection="fps", prob=0.5):
    conf = single_config([data2], steps=steps)
    conf["training"]["replay"] = {
        "systems": [str(water(0)), str(water(1))],
        "nframes": nframes,
        "selection": selection,
        "prob": prob,
    }
    return conf


@pytest.fixture(scope="module")
def replayed(pretrained_single, tmp_path_factory, data2):
    out = tmp_path_factory.mktemp("replay")
    trainer = Trainer(replay_config(data2, steps=6), out, finetune=str(pretrained_single))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    return trainer, out, start


def test_replay_head_starts_as_the_pretrained_model(replayed, pretrained_single):
    trainer, _, start = replayed
    pre = load_model(pretrained_single)
    replay = {k[len(REPLAY) + 1 :]: v for k, v in start.items() if k.startswith(REPLAY + ".")}
    assert_same(pre.state_dict(), replay)  # bias included: the replay head is not refit
    assert trainer.model["Default"].descriptor is trainer.model[REPLAY].descriptor
    assert trainer.task_prob.tolist() == [0.5, 0.5]


def test_replay_checkpoint_defaults_to_the_finetuned_head(replayed):
    trainer, out, _ = replayed
    ck = torch.load(out / "model.ckpt.pt", weights_only=False)
    frames_ = ck["replay"]["frames"]
    assert sum(len(v) for v in frames_.values()) == 5
    assert all(len(set(v)) == len(v) for v in frames_.values())
    assert ck["model_config"]["default_head"] == "Default"
    tuned = load_model(out / "model.ckpt.pt")
    assert_same(tuned.state_dict(), load_model(out / "model.ckpt.pt", head="Default").state_dict())
    head = (out / "lcurve.out").read_text().splitlines()[0].split()
    assert "rmse_trn_replay" in head and "rmse_trn_Default" in head


def test_replay_restart_continues_exactly(replayed, pretrained_single, tmp_path, data2):
    _, out, _ = replayed
    part = Trainer(replay_config(data2, steps=6), tmp_path, restart=str(out / "model.ckpt-2.pt"))
    part.run()
    a = torch.load(out / "model.ckpt-6.pt", weights_only=False)["model_state"]
    b = torch.load(tmp_path / "model.ckpt-6.pt", weights_only=False)["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_replay_selection_fps_differs_from_random(pretrained_single, tmp_path, data2):
    fps = Trainer(
        replay_config(data2, 0, nframes=4), tmp_path / "f", finetune=str(pretrained_single)
    )
    rnd = Trainer(
        replay_config(data2, 0, nframes=4, selection="random"),
        tmp_path / "r",
        finetune=str(pretrained_single),
    )
    assert fps.replay.nframes == rnd.replay.nframes == 4
    assert fps.replay.frames != rnd.replay.frames
    sys_ = fps.tasks[REPLAY].train_systems
    assert sum(s.nframes for s in sys_) == 4
    assert all(keys.ENERGY in s.labels for s in sys_)


def test_replay_errors(pretrained_single, pretrained_multi, tmp_path, data2):
    with pytest.raises(ConfigError, match="needs the pretrained model"):
        Trainer(replay_config(data2, 0), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"prob: expected a number in \(0, 1\)"):
        Trainer(replay_config(data2, 0, prob=1.0), tmp_path / "b", finetune=str(pretrained_single))
    with pytest.raises(ConfigError, match="name the branch"):
        Trainer(
            replay_config(data2, 0),
            tmp_path / "c",
            finetune=str(pretrained_multi),
            model_branch="RANDOM",
        )
    conf = replay_config(data2, 0)
    conf["training"]["replay"]["nframs"] = 3
    with pytest.raises(ConfigError, match="Did you mean 'nframes'"):
        Trainer(conf, tmp_path / "d", finetune=str(pretrained_single))


def test_change_bias_of_one_head_of_a_multitask_checkpoint(pretrained_multi, tmp_path, data2):
    from lamkit.cli.main import main

    out = tmp_path / "changed.pt"
    args = ["change-bias", str(pretrained_multi), "-s", str(data2), "--model-branch", "mixed"]
    assert main([*args, "-o", str(out)]) == 0
    before = {h: load_model(pretrained_multi, head=h) for h in ("water", "mixed")}
    after = {h: load_model(out, head=h) for h in ("water", "mixed")}
    assert torch.equal(before["water"].out_bias, after["water"].out_bias)  # untouched
    assert not torch.equal(before["mixed"].out_bias, after["mixed"].out_bias)
    e, _, _ = predict(after["mixed"], data2, n=8)
    labels = torch.as_tensor(np.load(data2 / "set.000" / "energy.npy").astype(np.float64))
    assert abs(float((labels - e).mean())) < 1e-6 * abs(float(labels.mean()))
