"""Training keys of the reference's schema that change what a run reports or writes:
disp_avg, disp_training, time_training, tensorboard, profiling, change_bias_after_training,
stat_file_mode, save_dir; and the other backends' keys (mixed_precision, acc_freq) that the
reference's PyTorch backend accepts without applying."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.errors import ConfigError
from lamkit.model.io import read_file
from lamkit.train import Trainer
from lamkit.train.lcurve import LcurveWriter

from .train_inputs import example_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _spy(trainer, monkeypatch):
    """Per-step training metrics and the training columns written to lcurve.out."""
    steps, rows = [], {}
    run_step = trainer.train_step

    def train_step(step, task="Default"):
        more = run_step(step, task)
        steps.append(dict(more))
        return more

    def write(self, step, trn, val, lr):
        rows[step] = dict(trn["Default"])

    monkeypatch.setattr(trainer, "train_step", train_step)
    monkeypatch.setattr(LcurveWriter, "write", write)
    return steps, rows


def test_disp_avg_shows_the_mean_of_the_display_interval(example_dir, tmp_path, monkeypatch):
    t = Trainer(example_config(example_dir, steps=6, disp_freq=3, disp_avg=True), tmp_path)
    steps, rows = _spy(t, monkeypatch)
    t.run()
    assert sorted(rows) == [1, 3, 6]
    for at, interval in ((1, [0]), (3, [1, 2]), (6, [3, 4, 5])):
        for k, v in rows[at].items():
            assert v == pytest.approx(np.mean([steps[i][k] for i in interval]), rel=1e-12)
    # without disp_avg the row is the displayed step's own batch
    t = Trainer(example_config(example_dir, steps=6, disp_freq=3), tmp_path / "b")
    steps, rows = _spy(t, monkeypatch)
    t.run()
    assert rows[6] == pytest.approx(steps[5], rel=1e-12)
    assert rows[6]["rmse_f"] != pytest.approx(np.mean([s["rmse_f"] for s in steps[3:]]))


def test_disp_training_false_writes_no_learning_curve_but_saves(example_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lamkit"):
        Trainer(example_config(example_dir, steps=4, disp_training=False), tmp_path).run()
    assert not (tmp_path / "lcurve.out").exists()
    assert (tmp_path / "model.ckpt-4.pt").exists()
    assert not [r for r in caplog.records if r.getMessage().startswith("step ")]


@pytest.mark.parametrize("timing", [True, False])
def test_time_training_controls_the_timing_in_the_log(example_dir, tmp_path, caplog, timing):
    with caplog.at_level(logging.INFO, logger="lamkit"):
        Trainer(example_config(example_dir, steps=4, time_training=timing), tmp_path).run()
    lines = [r.getMessage() for r in caplog.records]
    steps = [m for m in lines if m.startswith("step ")]
    assert steps and all(("ETA" in m) == timing for m in steps)
    assert any(m.startswith("average training time") for m in lines) == timing


def test_tensorboard_writes_each_tasks_scalars(example_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package (lamkit[train])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    conf = example_config(
        example_dir, steps=5, tensorboard=True, tensorboard_freq=2, gradient_max_norm=10.0
    )
    Trainer(conf, tmp_path).run()
    acc = EventAccumulator(str(tmp_path / "log"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("Default/lr", "Default/loss", "Default/rmse_f", "Default/grad/total_norm"):
        assert tag in tags
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 4]
    assert all(e.value > 0 for e in acc.Scalars("Default/loss"))


def test_tensorboard_without_the_package_is_a_clear_error(example_dir, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    t = Trainer(example_config(example_dir, steps=2, tensorboard=True), tmp_path)
    with pytest.raises(ConfigError, match="training/tensorboard.*pip install"):
        t.run()


def test_profiling_writes_a_chrome_trace(example_dir, tmp_path):
    conf = example_config(example_dir, steps=6, profiling=True, profiling_file="trace.json")
    Trainer(conf, tmp_path).run()
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert trace["traceEvents"]


def _residual_counts(trainer) -> np.ndarray:
    """``N^T (E_label - E_model)`` over the statistics frames: zero at a least-squares bias."""
    model = trainer.model.eval()
    out = np.zeros(model.ntypes)
    for b in trainer._stat_batches(trainer.tasks["Default"]):
        pred = model.evaluate(b[keys.COORD], b[keys.ATYPE], b.get(keys.BOX), do_force=False)
        r = b[keys.ENERGY].numpy().reshape(-1) - pred[keys.ENERGY].detach().numpy().reshape(-1)
        out += b[keys.NATOMS][:, 2:].numpy().T @ r
    return out


def test_change_bias_after_training_fits_the_residual(example_dir, tmp_path):
    plain = Trainer(example_config(example_dir, steps=4), tmp_path / "a")
    plain.run()
    before = _residual_counts(plain)
    conf = example_config(example_dir, steps=4, change_bias_after_training=True)
    t = Trainer(conf, tmp_path / "b")
    t.run()
    after = _residual_counts(t)
    assert np.abs(before).max() > 1e-3  # 4 steps leave the bias off
    assert np.abs(after).max() < 1e-8 * np.abs(before).max() + 1e-9
    saved = read_file(tmp_path / "b" / "model.ckpt-4.pt")["model_state"]
    torch.testing.assert_close(saved["out_bias"], t.model.out_bias.detach().cpu())
    a = read_file(tmp_path / "a" / "model.ckpt-4.pt")["model_state"]
    assert all(torch.equal(a[k], saved[k]) for k in a if k != "out_bias")
    assert not torch.equal(a["out_bias"], saved["out_bias"])


def test_stat_file_mode_read_needs_a_complete_file(example_dir, tmp_path):
    stat = tmp_path / "stat.hdf5"
    with pytest.raises(ConfigError, match="stat_file_mode: 'read' needs training/stat_file"):
        Trainer(example_config(example_dir, steps=1, stat_file_mode="read"), tmp_path / "a")
    read = example_config(example_dir, steps=1, stat_file=str(stat), stat_file_mode="read")
    with pytest.raises(ConfigError, match="stat_file.*'read'.*does not exist"):
        Trainer(read, tmp_path / "b")
    Trainer(example_config(example_dir, steps=1, stat_file=str(stat)), tmp_path / "c")
    written = stat.read_bytes()
    t = Trainer(read, tmp_path / "d")
    assert stat.read_bytes() == written
    ref = Trainer(example_config(example_dir, steps=1), tmp_path / "e")
    torch.testing.assert_close(t.model.descriptor.dstd, ref.model.descriptor.dstd)
    with pytest.raises(ConfigError, match="stat_file_mode.*one of"):
        Trainer(example_config(example_dir, steps=1, stat_file_mode="write"), tmp_path / "f")


def test_save_dir_holds_the_step_files_and_restart_finds_them(example_dir, tmp_path):
    conf = example_config(example_dir, steps=6, save_dir="ckpts", max_ckpt_keep=2)
    Trainer(conf, tmp_path).run()
    assert sorted(p.name for p in (tmp_path / "ckpts").glob("*.pt")) == [
        "model.ckpt-3.pt",
        "model.ckpt-6.pt",
    ]
    assert (tmp_path / "checkpoint").read_text().strip() == "ckpts/model.ckpt-6.pt"
    assert (tmp_path / "model.ckpt.pt").resolve() == (tmp_path / "ckpts/model.ckpt-6.pt").resolve()
    more = example_config(example_dir, steps=8, save_dir="ckpts")
    t = Trainer(more, tmp_path, restart=str(tmp_path))
    assert t.start_step == 6


def test_other_backends_keys_are_accepted_and_said_to_be_ignored(example_dir, tmp_path, caplog):
    mp = {"compute_prec": "float16", "output_prec": "float64"}
    conf = example_config(example_dir, steps=1, mixed_precision=mp, acc_freq=4)
    with caplog.at_level(logging.WARNING, logger="lamkit"):
        Trainer(conf, tmp_path)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "training/mixed_precision" in text and "training/acc_freq 4" in text
    with pytest.raises(ConfigError, match="mixed_precision.*unknown key"):
        bad = example_config(example_dir, steps=1, mixed_precision={"compute": "float16"})
        Trainer(bad, tmp_path / "b")
