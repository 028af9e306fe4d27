"""Training keys of DeePMD-kit 3.2's normalised out.json: EMA weights, ckpt_keep_ratio and the
keys that are accepted with a fixed meaning (zero_stage 0, enable_tf32 on CPU)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lamkit.errors import ConfigError
from lamkit.model.io import read_file
from lamkit.train import Trainer

from .train_inputs import example_config


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_ema_follows_the_recurrence_and_is_saved_as_its_own_family(example_dir, tmp_path):
    decay = 0.6
    t = Trainer(example_config(example_dir, steps=4, enable_ema=True, ema_decay=decay), tmp_path)
    expect = _params(t.model)
    for step in range(4):
        t.train_step(step)
        live = _params(t.model)
        expect = {n: decay * expect[n] + (1 - decay) * live[n] for n in expect}
    for name, value in t.ema.shadow.items():
        torch.testing.assert_close(value, expect[name], rtol=1e-13, atol=1e-15)
    assert any((expect[n] - live[n]).abs().max() > 1e-8 for n in expect)  # the average lags


def test_ema_checkpoints_restart_and_evaluate(example_dir, tmp_path):
    conf = dict(steps=6, enable_ema=True, ema_decay=0.7, max_ckpt_keep=2, ema_ckpt_keep=1)
    Trainer(example_config(example_dir, **conf), tmp_path / "a").run()
    a = tmp_path / "a"
    assert (a / "checkpoint").read_text().strip() == "model.ckpt-6.pt"
    assert sorted(p.name for p in a.glob("model_ema.ckpt-*.pt")) == ["model_ema.ckpt-6.pt"]
    assert sorted(p.name for p in a.glob("model.ckpt-*.pt")) == [
        "model.ckpt-3.pt",
        "model.ckpt-6.pt",
    ]
    assert os.readlink(a / "model_ema.ckpt.pt") == "model_ema.ckpt-6.pt"
    ema = read_file(a / "model_ema.ckpt-6.pt")
    live = read_file(a / "model.ckpt-6.pt")
    assert ema["optimizer"] is None and live["ema"] is not None
    for name, value in live["ema"]["model"].items():
        torch.testing.assert_close(ema["model_state"][name], value, rtol=0, atol=0)
    assert any(
        not torch.equal(ema["model_state"][n], live["model_state"][n]) for n in live["ema"]["model"]
    )

    # an interrupted run continues the average exactly
    b = tmp_path / "b"
    Trainer(example_config(example_dir, **conf), b, restart=str(a / "model.ckpt-3.pt")).run()
    again = read_file(b / "model_ema.ckpt-6.pt")
    for name, value in ema["model_state"].items():
        torch.testing.assert_close(again["model_state"][name], value, rtol=1e-12, atol=1e-14)

    from lamkit import DeepPot

    coord = torch.rand(1, 4, 3, dtype=torch.float64).numpy() * 3
    box = (torch.eye(3, dtype=torch.float64) * 6).reshape(1, 9).numpy()
    e_ema = DeepPot(str(a / "model_ema.ckpt-6.pt")).eval(coord, box, [0, 0, 1, 0])[0]
    e_live = DeepPot(str(a / "model.ckpt-6.pt")).eval(coord, box, [0, 0, 1, 0])[0]
    assert abs(float(e_ema.sum()) - float(e_live.sum())) > 1e-9

    with pytest.raises(ConfigError, match="EMA.*--init-model"):
        Trainer(
            example_config(example_dir, **conf),
            tmp_path / "c",
            restart=str(a / "model_ema.ckpt-6.pt"),
        )


def test_ckpt_keep_ratio_keeps_the_last_fraction(example_dir, tmp_path):
    conf = example_config(example_dir, steps=6, ckpt_keep_ratio=0.4)
    conf["training"]["save_freq"] = 1
    Trainer(conf, tmp_path).run()
    # ceil(0.4 * ceil(6 / 1)) = 3 checkpoints, the newest
    kept = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("model.ckpt-*.pt"))
    assert kept == [4, 5, 6]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ckpt_keep_ratio", 1.5, "fraction in"),
        ("ema_decay", 1.0, "decay < 1"),
        ("zero_stage", 2, "not supported"),
        ("neighbor_graph_method", "fast", "neighbor_graph_method"),
    ],
)
def test_out_json_keys_are_validated(example_dir, tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(example_config(example_dir, **{key: value}), tmp_path)


def test_the_reference_normalised_training_section_is_accepted(example_dir, tmp_path):
    # every training key DeePMD-kit 3.2 writes into out.json, at the values it writes
    written = {
        "stat_file_mode": "update",
        "save_dir": None,
        "max_ckpt_keep": 5,
        "ckpt_keep_ratio": None,
        "enable_ema": False,
        "ema_decay": 0.999,
        "ema_ckpt_keep": None,
        "change_bias_after_training": False,
        "disp_training": True,
        "time_training": True,
        "disp_avg": False,
        "profiling": False,
        "profiling_file": "timeline.json",
        "enable_profiler": False,
        "tensorboard": False,
        "tensorboard_log_dir": "log",
        "tensorboard_freq": 1,
        "acc_freq": 1,
        "zero_stage": 0,
        "neighbor_graph_method": "auto",
        "enable_compile": False,
        "enable_tf32": False,
    }
    conf = example_config(example_dir, steps=2, **written)
    conf["validating"] = {}
    Trainer(conf, tmp_path).run()
    assert json.loads((tmp_path / "out.json").read_text())["training"]["ema_decay"] == 0.999
