"""Multi-task training: config expansion, sharing levels, merged statistics, per-task lcurve,
checkpoints with branches, freeze/test per head, exact restart."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from lamkit.config.multitask import expand_model_dict
from lamkit.errors import ConfigError, ModelFileError
from lamkit.model import load_model
from lamkit.model.multitask import merge_descriptor_stats
from lamkit.train import Trainer
from lamkit.train.stats import _extended, stat_batches

from .conftest import need_shared
from .train_inputs import DPA1, FIT, LOSS, multitask_config

pytestmark = pytest.mark.usefixtures("one_thread")


# --- config ----------------------------------------------------------------------------------
def test_expand_model_dict_copies_shared_blocks_and_sorts_links():
    section = {
        "shared_dict": {"tm": ["A", "B"], "d": {"type": "se_e2_a", "sel": [4, 4]}},
        "model_dict": {
            "x": {"type_map": "tm", "descriptor": "d:1", "fitting_net": {}},
            "y": {"type_map": "tm", "descriptor": "d", "fitting_net": {}},
        },
        "data_stat_nbatch": 3,  # model-wide keys go into every task
    }
    confs, links = expand_model_dict(section)
    assert confs["x"]["descriptor"] == {"type": "se_e2_a", "sel": [4, 4]}
    assert confs["x"]["descriptor"] is not confs["y"]["descriptor"]
    assert confs["x"]["type_map"] == ["A", "B"] and confs["y"]["data_stat_nbatch"] == 3
    (link,) = links
    assert link.kind == "descriptor" and link.links == [("y", 0), ("x", 1)] and link.base == "y"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["model_dict"]["x"].update(descriptor="dd"), "not in model/shared_dict"),
        (lambda s: s["model_dict"]["x"].update(descriptor="d:a"), "must be an integer"),
        (lambda s: s["model_dict"]["x"].update(type_map=["B", "A"]), "same type_map"),
        (lambda s: s["model_dict"].update(RANDOM=s["model_dict"]["y"]), "reserved"),
        (lambda s: s.update(model_dict={}), "non-empty"),
    ],
)
def test_expand_model_dict_errors(change, message):
    section = {
        "shared_dict": {"tm": ["A", "B"], "d": {"type": "se_e2_a"}},
        "model_dict": {
            "x": {"type_map": "tm", "descriptor": "d", "fitting_net": {}},
            "y": {"type_map": "tm", "descriptor": "d", "fitting_net": {}},
        },
    }
    change(section)
    with pytest.raises(ConfigError, match=message):
        expand_model_dict(section)


def test_input_errors_name_the_task(tmp_path):
    conf = multitask_config()
    del conf["training"]["data_dict"]["mixed"]
    with pytest.raises(ConfigError, match=r"data_dict: no entry for the tasks \['mixed'\]"):
        Trainer(conf, tmp_path)
    conf = multitask_config(model_prob={"water": 1.0, "mixd": 1.0})
    with pytest.raises(ConfigError, match="Did you mean 'mixed'"):
        Trainer(conf, tmp_path)
    conf = multitask_config()
    conf["loss"] = LOSS
    del conf["loss_dict"]
    with pytest.raises(ConfigError, match="loss_dict"):
        Trainer(conf, tmp_path)


# --- training -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("multi")
    trainer = Trainer(multitask_config(steps=4), out)
    trainer.run()
    return trainer, out


def test_shared_descriptor_is_one_module_and_fittings_are_not(trained):
    trainer, _ = trained
    a, b = trainer.model["water"], trainer.model["mixed"]
    assert a.descriptor is b.descriptor
    assert a.fitting is not b.fitting
    n_unique = len(trainer.params)
    n_all = sum(1 for _ in a.parameters()) + sum(1 for _ in b.parameters())
    assert n_unique == n_all - sum(1 for _ in a.descriptor.parameters())


def test_default_model_prob_follows_the_data_size(trained):
    trainer, _ = trained
    nw = sum(s.nframes for s in trainer.tasks["water"].train_systems)
    nm = sum(s.nframes for s in trainer.tasks["mixed"].train_systems)
    np.testing.assert_allclose(trainer.task_prob, [nw / (nw + nm), nm / (nw + nm)])


def test_shared_statistics_are_the_sum_over_tasks(trained, tmp_path):
    trainer, _ = trained
    # fresh, untrained copies of the two branches: each task's own statistics, then summed
    conf = multitask_config(steps=0)
    t2 = Trainer(conf, tmp_path)
    stats = []
    for name in ("water", "mixed"):
        task = t2.tasks[name]
        batches = stat_batches(task.train_systems, task.batch_sizes, 10, 3)
        stats.append(task.model.descriptor.env_stat(_extended(task.model, batches)))
    probe = copy.deepcopy(t2.model["water"].descriptor)
    probe.set_stat(merge_descriptor_stats(stats))
    torch.testing.assert_close(t2.model["water"].descriptor.davg, probe.davg, rtol=0, atol=0)
    torch.testing.assert_close(t2.model["mixed"].descriptor.dstd, probe.dstd, rtol=0, atol=0)
    alone = copy.deepcopy(probe)
    alone.set_stat(stats[0])
    assert not torch.equal(alone.dstd, probe.dstd)  # the merge changed something


def test_lcurve_has_columns_per_task(trained):
    _, out = trained
    lines = (out / "lcurve.out").read_text().splitlines()
    head = lines[0].split()
    assert head[:2] == ["#", "step"] and head[-1] == "lr"
    assert head[2:-1] == [
        "rmse_val_water",
        "rmse_trn_water",
        "rmse_e_val_water",
        "rmse_e_trn_water",
        "rmse_f_val_water",
        "rmse_f_trn_water",
        "rmse_trn_mixed",
        "rmse_e_trn_mixed",
        "rmse_f_trn_mixed",
    ]
    rows = [ln.split() for ln in lines if not ln.startswith("#")]
    assert [int(r[0]) for r in rows] == [1, 2, 4]
    assert all(len(r) == len(head) - 1 for r in rows)
    assert all(np.isfinite(float(x)) for r in rows for x in r)
    assert (out / "lcurve.png").stat().st_size > 1000


def test_checkpoint_branches_freeze_and_test_per_head(trained, tmp_path):
    from lamkit.cli.main import main

    trainer, out = trained
    ck = out / "model.ckpt.pt"
    with pytest.raises(ModelFileError, match="choose a head"):
        load_model(ck)
    with pytest.raises(ModelFileError, match="Did you mean 'water'"):
        load_model(ck, head="watr")
    water = load_model(ck, head="water")
    mixed = load_model(ck, head="mixed")
    # the shared descriptor has the same weights in both branches of the checkpoint
    for (k, v), (k2, v2) in zip(
        water.descriptor.state_dict().items(), mixed.descriptor.state_dict().items()
    ):
        assert k == k2 and torch.equal(v, v2)
    assert not torch.equal(water.out_bias, mixed.out_bias)
    frozen = tmp_path / "water.pth"
    assert main(["freeze", "-c", str(out), "-o", str(frozen), "--head", "water"]) == 0
    sys3 = need_shared("water", "data_3")
    coord = torch.as_tensor(np.load(sys3 / "set.000" / "coord.npy")[:1]).reshape(1, -1, 3)
    box = torch.as_tensor(np.load(sys3 / "set.000" / "box.npy")[:1])
    atype = torch.as_tensor(np.loadtxt(sys3 / "type.raw", dtype=np.int64))[None]
    e1 = water.evaluate(coord, atype, box)["energy"]
    e2 = load_model(frozen).evaluate(coord, atype, box)["energy"]
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    assert main(["test", "-m", str(ck), "-s", str(sys3), "-n", "2", "--head", "water"]) == 0
    shown = main(["show", str(ck), "model-branch"])
    assert shown == 0


def test_restart_continues_exactly(tmp_path):
    straight = tmp_path / "a"
    Trainer(multitask_config(steps=6), straight).run()
    part = tmp_path / "b"
    Trainer(multitask_config(steps=6), part, restart=str(straight / "model.ckpt-2.pt")).run()
    a = torch.load(straight / "model.ckpt-6.pt", weights_only=False)["model_state"]
    b = torch.load(part / "model.ckpt-6.pt", weights_only=False)["model_state"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_level_1_shares_the_type_embedding_only(tmp_path):
    trainer = Trainer(multitask_config(steps=0, level_b=":1"), tmp_path)
    a, b = trainer.model["water"].descriptor, trainer.model["mixed"].descriptor
    assert a is not b
    assert a.type_embedding is b.type_embedding
    assert a.embedding is not b.embedding


def test_out_json_records_the_branches(trained):
    _, out = trained
    conf = json.loads((out / "out.json").read_text())
    assert set(conf["model"]["model_dict"]) == {"water", "mixed"}
    assert conf["model"]["shared_links"][0]["links"] == [["water", 0], ["mixed", 0]]


def test_energy_and_property_tasks_share_a_descriptor(tmp_path):
    """One task fits water energies, the other a molecular property (HOMO, LUMO, gap) on the
    property example data; the shared type map covers both datasets."""
    from lamkit.infer.deep_property import open_model

    water = need_shared("water", "data_0")
    prop = need_shared("property", "data_0")
    conf = {
        "model": {
            "shared_dict": {"tm": ["H", "C", "N", "O"], "desc": DPA1},
            "model_dict": {
                "water": {"type_map": "tm", "descriptor": "desc", "fitting_net": dict(FIT)},
                "homo": {
                    "type_map": "tm",
                    "descriptor": "desc",
                    "fitting_net": {
                        "type": "property",
                        "intensive": True,
                        "task_dim": 3,
                        "property_name": "band_prop",
                        "neuron": [8, 8],
                        "seed": 4,
                    },
                },
            },
        },
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 50},
        "loss_dict": {"water": LOSS, "homo": {"type": "property", "loss_func": "smooth_mae"}},
        "training": {
            "data_dict": {
                "water": {"training_data": {"systems": [str(water)], "batch_size": 1}},
                "homo": {"training_data": {"systems": [str(prop)], "batch_size": 2}},
            },
            "numb_steps": 4,
            "seed": 3,
            "disp_freq": 2,
            "save_freq": 4,
        },
    }
    trainer = Trainer(conf, tmp_path)
    trainer.run()
    assert trainer.model["water"].descriptor is trainer.model["homo"].descriptor
    head = (tmp_path / "lcurve.out").read_text().splitlines()[0].split()
    assert "rmse_e_trn_water" in head and any(c.endswith("_trn_homo") for c in head)
    model = open_model(tmp_path / "model.ckpt.pt", head="homo")
    coord = np.load(prop / "set.000000" / "coord.npy")[:2]
    types = np.load(prop / "set.000000" / "real_atom_types.npy")[:2]
    (out,) = model.eval(coord, None, types, mixed_type=True)
    assert out.shape == (2, 3) and np.isfinite(out).all()
