"""The run length given in epochs (``numb_epoch``; ``num_epoch_dict`` for multi-task inputs),
converted to steps by the reference's rule, and the checks on the keys that set it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamkit.errors import ConfigError
from lamkit.train import Trainer
from lamkit.train.schedule import epoch_steps

from .train_inputs import example_config, multitask_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _epoch_by_hand(systems, batch_sizes, probs):
    nb = np.array([math.ceil(s.nframes / b) for s, b in zip(systems, batch_sizes)], float)
    probs = np.asarray(probs, float) / np.sum(probs)
    return math.ceil(max(nb / probs))


def test_numb_epoch_sets_the_steps(example_dir, tmp_path):
    conf = example_config(example_dir)
    del conf["training"]["numb_steps"]
    conf["training"]["numb_epoch"] = 1.5
    conf["training"]["training_data"]["batch_size"] = 2
    t = Trainer(conf, tmp_path)
    task = next(iter(t.tasks.values()))
    nframes = [s.nframes for s in task.train_systems]
    # prob_sys_size: p_i proportional to the batch count, so an epoch is the sum of the batches
    epoch = sum(math.ceil(n / 2) for n in nframes)
    assert t.num_steps == math.ceil(1.5 * epoch)
    nb = [math.ceil(n / 2) for n in nframes]
    assert epoch == _epoch_by_hand(task.train_systems, [2] * len(nframes), nb)


def test_epoch_rule_with_given_system_probabilities(example_dir, tmp_path):
    t = Trainer(example_config(example_dir), tmp_path)
    systems = next(iter(t.tasks.values())).train_systems
    conf = {"batch_size": 1, "auto_prob": "prob_sys_size", "sys_probs": None}
    assert epoch_steps(systems, conf) == sum(s.nframes for s in systems)
    if len(systems) > 1:
        probs = [0.9] + [0.1 / (len(systems) - 1)] * (len(systems) - 1)
        conf["sys_probs"] = probs
        assert epoch_steps(systems, conf) == _epoch_by_hand(systems, [1] * len(systems), probs)
    # a data-parallel rank holds ceil(frames / world) frames of each system
    conf["sys_probs"] = None
    two = epoch_steps(systems, conf, world=2)
    assert two == math.ceil(
        max(
            math.ceil(s.nframes / 2) / (s.nframes / sum(x.nframes for x in systems))
            for s in systems
        )
    )


def test_reference_formula_agrees(example_dir, tmp_path):
    training_utils = pytest.importorskip(
        "deepmd.dpmodel.utils.training_utils", reason="the reference deepmd-kit is not installed"
    )
    t = Trainer(example_config(example_dir), tmp_path)
    systems = next(iter(t.tasks.values())).train_systems
    probs = np.linspace(1.0, 2.0, len(systems))
    nb = [s.nframes for s in systems]
    conf = {"batch_size": 1, "auto_prob": "prob_sys_size", "sys_probs": list(probs / probs.sum())}
    assert epoch_steps(systems, conf) == training_utils.compute_total_numb_batch(nb, probs)


def test_num_epoch_dict_sets_steps_and_task_probabilities(tmp_path):
    conf = multitask_config()
    del conf["training"]["numb_steps"]
    conf["training"]["num_epoch_dict"] = {"water": 0.5, "mixed": 0.25}
    t = Trainer(conf, tmp_path)
    per = {
        n: 0.5 * sum(s.nframes for s in task.train_systems)
        if n == "water"
        else 0.25 * sum(s.nframes for s in task.train_systems)
        for n, task in t.tasks.items()
    }
    total = sum(per.values())
    assert t.num_steps == math.ceil(total)
    np.testing.assert_allclose(t.task_prob, [per[n] / total for n in t.task_names], rtol=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"numb_epoch": 2}, "exactly one of numb_steps and numb_epoch"),
        ({"numb_steps": None}, "exactly one of numb_steps and numb_epoch"),
        ({"numb_steps": None, "numb_epoch": -1.0}, "positive"),
        ({"num_epoch_dict": {"a": 1}}, "unknown key 'num_epoch_dict'"),
    ],
)
def test_single_task_schedule_errors(example_dir, tmp_path, change, message):
    conf = example_config(example_dir)
    conf["training"].update(change)
    conf["training"] = {k: v for k, v in conf["training"].items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        Trainer(conf, tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_epoch_dict": {"water": 1, "mixed": 1}}, "exactly one of numb_steps and num_epoch"),
        ({"numb_steps": None, "num_epoch_dict": {"water": 1}}, "missing \\['mixed'\\]"),
        ({"numb_steps": None, "num_epoch_dict": {"water": 1, "mixed": 0}}, "positive"),
        (
            {"numb_steps": None, "num_epoch_dict": {"water": 1, "mixed": 1}, "model_prob": {}},
            None,
        ),
        (
            {
                "numb_steps": None,
                "num_epoch_dict": {"water": 1, "mixed": 1},
                "model_prob": {"water": 1, "mixed": 1},
            },
            "exclude each other",
        ),
        ({"numb_steps": None, "numb_epoch": 1}, "num_epoch_dict instead"),
    ],
)
def test_multi_task_schedule_errors(tmp_path, change, message):
    conf = multitask_config()
    conf["training"].update(change)
    conf["training"] = {k: v for k, v in conf["training"].items() if v is not None}
    if message is None:
        Trainer(conf, tmp_path)  # an empty model_prob is "not given"
        return
    with pytest.raises(ConfigError, match=message):
        Trainer(conf, tmp_path)
