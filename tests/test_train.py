"""Training loop: outputs, checkpoints, exact restart, init-model, config validation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lamkit.config import load_input
from lamkit.errors import ConfigError
from lamkit.train import Trainer
from lamkit.train.lr import LearningRate

from .conftest import need_shared
from .train_inputs import example_config


def test_train_writes_lcurve_checkpoints_and_plot(example_dir, tmp_path):
    Trainer(example_config(example_dir, max_ckpt_keep=1), tmp_path).run()
    lines = (tmp_path / "lcurve.out").read_text().splitlines()
    assert lines[0].split() == [
        "#",
        "step",
        "rmse_val",
        "rmse_trn",
        "rmse_e_val",
        "rmse_e_trn",
        "rmse_f_val",
        "rmse_f_trn",
        "rmse_v_val",
        "rmse_v_trn",
        "lr",
    ]
    steps = [int(ln.split()[0]) for ln in lines if not ln.startswith("#")]
    assert steps == [1, 2, 4, 6]
    assert (tmp_path / "checkpoint").read_text().strip() == "model.ckpt-6.pt"
    assert not (tmp_path / "model.ckpt-3.pt").exists()  # pruned by max_ckpt_keep=1
    assert (tmp_path / "model.ckpt.pt").resolve().name == "model.ckpt-6.pt"
    assert (tmp_path / "lcurve.png").stat().st_size > 1000
    out = json.loads((tmp_path / "out.json").read_text())
    assert isinstance(out["model"]["descriptor"]["sel"], list)  # "auto" was resolved
    assert not list(tmp_path.glob(".*.tmp"))


def test_restart_continues_exactly(example_dir, tmp_path):
    straight = tmp_path / "a"
    Trainer(example_config(example_dir, steps=6), straight).run()
    part = tmp_path / "b"
    # an interrupted run: continue from the step-3 checkpoint of the same configuration
    Trainer(
        example_config(example_dir, steps=6), part, restart=str(straight / "model.ckpt-3.pt")
    ).run()
    a = torch.load(straight / "model.ckpt-6.pt", weights_only=False)
    b = torch.load(part / "model.ckpt-6.pt", weights_only=False)
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    assert a["sampler"] == b["sampler"]
    rows_a = (straight / "lcurve.out").read_text().splitlines()[-1]
    rows_b = (part / "lcurve.out").read_text().splitlines()[-1]
    assert rows_a == rows_b


def test_restart_from_folder_and_rejects_foreign_files(example_dir, tmp_path):
    Trainer(example_config(example_dir, steps=3), tmp_path).run()
    t = Trainer(example_config(example_dir, steps=4), tmp_path, restart=str(tmp_path))
    assert t.start_step == 3
    bad = tmp_path / "x.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ConfigError, match="not a lamkit training checkpoint"):
        Trainer(example_config(example_dir, steps=4), tmp_path / "c", restart=str(bad))


def test_init_model_takes_weights_and_statistics(example_dir, tmp_path):
    Trainer(example_config(example_dir, steps=3), tmp_path / "a").run()
    src = torch.load(tmp_path / "a" / "model.ckpt-3.pt", weights_only=False)["model_state"]
    t = Trainer(
        example_config(example_dir, steps=2),
        tmp_path / "b",
        init_model=str(tmp_path / "a" / "model.ckpt-3.pt"),
    )
    assert t.start_step == 0
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, src[k]), k


def test_unknown_keys_suggest_the_right_one(example_dir, tmp_path):
    conf = example_config(example_dir)
    conf["training"]["disp_frq"] = 10
    with pytest.raises(ConfigError, match="Did you mean 'disp_freq'"):
        Trainer(conf, tmp_path)
    conf = example_config(example_dir)
    conf["model"]["descriptor"]["type"] = "se_e2a"
    with pytest.raises(ConfigError, match="Did you mean 'se_e2_a'"):
        Trainer(conf, tmp_path)
    conf = example_config(example_dir)
    conf["model"]["descriptor"]["axis_neurons"] = 4
    with pytest.raises(ConfigError, match="model/descriptor: unknown key 'axis_neurons'"):
        Trainer(conf, tmp_path)
    conf = example_config(example_dir)
    conf["lerning_rate"] = {}
    with pytest.raises(ConfigError, match="Did you mean 'learning_rate'"):
        Trainer(conf, tmp_path)


def test_yaml_input_and_element_not_in_type_map(example_dir, tmp_path):
    yaml = pytest.importorskip("yaml")
    conf = example_config(example_dir, steps=1)
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(conf))
    assert load_input(path) == conf
    conf["model"]["type_map"] = ["Cu", "Ag"]
    with pytest.raises(Exception, match="Au"):
        Trainer(conf, tmp_path)


def test_learning_rate_matches_reference_numbers():
    lr = LearningRate({"start_lr": 1e-3, "stop_lr": 3.51e-8, "decay_steps": 5000}, 1_000_000)
    assert lr.decay_rate == pytest.approx(0.950006, abs=1e-6)
    assert lr(5000) == pytest.approx(9.50e-4, rel=1e-3)
    assert lr(100_000) == pytest.approx(3.59e-4, rel=2e-3)
    assert lr(999_999) == pytest.approx(3.695e-8, rel=2e-3)
    short = LearningRate({"start_lr": 1e-3, "stop_lr": 3.51e-8, "decay_steps": 5000}, 4)
    assert short.decay_steps == 1 and short.decay_rate == pytest.approx(0.0770, abs=1e-3)
    assert short(1) == pytest.approx(7.7e-5, rel=0.02)  # shown on lcurve row 2
    warm = LearningRate({"start_lr": 1e-3, "stop_lr": 1e-5, "warmup_steps": 10}, 100)
    assert warm(0) == 0.0 and warm(5) == pytest.approx(5e-4) and warm(10) == pytest.approx(1e-3)
    assert math.isclose(
        LearningRate({"type": "cosine", "start_lr": 1.0, "stop_lr": 0.0}, 10)(5), 0.5
    )


def test_energy_bias_on_water_matches_reference():
    from lamkit.data import DataRequirement, load_system
    from lamkit.data.loader import frames_to_batch
    from lamkit.train.stats import energy_bias

    sys0 = load_system(need_shared("water", "data_0"), ["O", "H"], [DataRequirement("energy", 1)])
    batch = frames_to_batch(sys0, range(sys0.nframes))
    bias = energy_bias([batch], 2)
    assert bias[:, 0] == pytest.approx([-93.573718, -187.147435], abs=1e-5)


def test_train_on_extxyz_and_stat_file_cache(example_dir, tmp_path):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from lamkit.data import DataRequirement, load_system

    sys0 = load_system(
        example_dir / "data" / "train_0",
        ["Cu", "Au"],
        [DataRequirement("energy", 1), DataRequirement("force", 3, atomic=True)],
    )
    frames = []
    for k in range(sys0.nframes):
        atoms = ase.Atoms(
            [["Cu", "Au"][t] for t in sys0.atype[k]],
            positions=sys0.coords[k],
            cell=sys0.box[k].reshape(3, 3),
            pbc=True,
        )
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(sys0.labels["energy"][k, 0]), forces=sys0.labels["force"][k]
        )
        frames.append(atoms)
    xyz = tmp_path / "frames.extxyz"
    ase.io.write(xyz, frames)
    conf = example_config(example_dir, steps=2, stat_file=str(tmp_path / "stat.h5"))
    conf["training"]["training_data"]["systems"] = [str(xyz)]
    conf["model"]["descriptor"]["sel"] = [60, 60]  # the cache key includes sel
    t1 = Trainer(conf, tmp_path / "a")
    t1.run()
    assert (tmp_path / "stat.h5").exists()
    # a second run reads the cached statistics: identical davg/dstd even with other data
    conf2 = example_config(example_dir, steps=2, stat_file=str(tmp_path / "stat.h5"))
    conf2["model"]["descriptor"]["sel"] = [60, 60]
    t2 = Trainer(conf2, tmp_path / "b")
    assert torch.equal(t1.model.descriptor.dstd, t2.model.descriptor.dstd)
    conf3 = example_config(example_dir, steps=2)
    conf3["model"]["descriptor"]["sel"] = [60, 60]
    t3 = Trainer(conf3, tmp_path / "c")
    assert not torch.equal(t1.model.descriptor.dstd, t3.model.descriptor.dstd)


def test_mixed_type_data_needs_a_mixed_type_descriptor(tmp_path):
    data = need_shared("mixed_type_small", "data_mixed_type")
    conf = {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut": 6.0},
            "fitting_net": {"neuron": [8]},
        },
        "training": {"training_data": {"systems": [str(data)]}, "numb_steps": 1},
    }
    with pytest.raises(ConfigError, match="mixed-type data needs a mixed-type descriptor"):
        Trainer(conf, tmp_path)
