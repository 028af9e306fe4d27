"""``linear_ener`` with several DP models (the reference's examples/water/linear/input_pt.json):
every DP model gets its own descriptor statistics, the combination's bias is fitted, the members
keep theirs, and the model trains and round-trips through a lamkit checkpoint."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lamkit.model.io import load_model
from lamkit.testing.physics import predict
from lamkit.testing.systems import random_system
from lamkit.train import Trainer

from .train_inputs import example_config

pytestmark = pytest.mark.usefixtures("one_thread")

DP = {
    "descriptor": {
        "type": "se_atten",
        "sel": 40,
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "attn": 8,
        "attn_layer": 1,
        "seed": 1,
    },
    "fitting_net": {"neuron": [8], "seed": 1},
}


def _config(example_dir):
    conf = example_config(example_dir, steps=2)
    second = copy.deepcopy(DP)
    second["descriptor"].update(rcut=3.0, seed=5, attn_layer=0)
    conf["model"] = {
        "type": "linear_ener",
        "weights": "sum",
        "type_map": conf["model"]["type_map"],
        "models": [copy.deepcopy(DP), second],
    }
    return conf


def test_two_dp_models_train_with_their_own_statistics(example_dir, tmp_path):
    t = Trainer(_config(example_dir), tmp_path)
    model = t.model
    assert len(model.dp_models) == 1 and model.rcut == 4.0
    host, member = model.descriptor, model.dp_models[0].descriptor
    for d in (host, member):  # statistics from the data, not the initial 0 / 1
        assert float(d.dstd.sub(1).abs().max()) > 1e-3
    assert not torch.allclose(host.dstd[:, 0], member.dstd[:, 0])  # cutoffs 4 and 3 Å differ
    assert float(model.out_bias.abs().max()) > 1e-3  # the combination's bias, from the data
    assert float(model.dp_models[0].out_bias.abs().max()) == 0.0
    ckpt = t.run()
    back = load_model(ckpt)
    system = random_system(6, 2, np.eye(3) * 7.0, min_dist=1.5, seed=2)
    a, b = predict(t.model, system), predict(back, system)
    for key in ("energy", "force", "virial"):
        np.testing.assert_array_equal(a[key], b[key])


def test_members_of_another_kind_are_refused(example_dir, tmp_path):
    from lamkit.errors import ConfigError

    conf = _config(example_dir)
    conf["model"]["models"][1]["descriptor"] = {"type": "se_e2_a", "sel": [20, 20], "rcut": 3.0}
    with pytest.raises(ConfigError, match="models/1: linear_ener needs energy models"):
        Trainer(conf, tmp_path)
