"""Data-parallel training with ``torchrun`` on CPU (gloo): 2 processes with batch size 1 follow
the same trajectory as 1 process with batch size 2 (same lcurve, same weights, to rounding), for a
single-task and a multi-task input; only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from .train_inputs import multitask_config, single_config

STEPS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(config: dict, out, nproc: int) -> str:
    out.mkdir(parents=True)
    (out / "input.json").write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "lamkit"]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "lamkit",
        ]  # fmt: skip
    cmd += ["train", "input.json", "-o", "."]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def lcurve(out) -> np.ndarray:
    return np.loadtxt(out / "lcurve.out", ndmin=2)


def set_batch(config: dict, size: int) -> dict:
    tr = config["training"]
    for data in tr.get("data_dict", {"": tr}).values():
        data["training_data"]["batch_size"] = size
    tr["disp_freq"] = 1
    tr["save_freq"] = STEPS
    return config


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_two_processes_match_one_with_twice_the_batch(kind, tmp_path):
    from .conftest import need_shared

    def config():
        if kind == "single":
            return single_config([need_shared("water", "data_0")], steps=STEPS)
        return multitask_config(steps=STEPS)

    run(set_batch(config(), 2), tmp_path / "one", 1)
    log = run(set_batch(config(), 1), tmp_path / "two", 2)
    assert "data parallel: 2 processes" in log
    assert log.count("saved checkpoint") == 1  # rank 0 only
    a, b = lcurve(tmp_path / "one"), lcurve(tmp_path / "two")
    assert a.shape == b.shape and a.shape[0] == STEPS
    np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-10)
    wa = torch.load(tmp_path / "one" / f"model.ckpt-{STEPS}.pt", weights_only=False)
    wb = torch.load(tmp_path / "two" / f"model.ckpt-{STEPS}.pt", weights_only=False)
    for k, v in wa["model_state"].items():
        torch.testing.assert_close(wb["model_state"][k], v, rtol=1e-7, atol=1e-9)
    # rank 0 alone wrote the checkpoints: one set of files, no per-rank copies
    names = sorted(p.name for p in (tmp_path / "two").glob("model.ckpt*"))
    assert names == sorted(p.name for p in (tmp_path / "one").glob("model.ckpt*"))
