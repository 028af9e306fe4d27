"""Running the reference and lamkit command lines side by side in parity tests (not a test
module): the two commands, subprocesses started in the background and collected (a failure
fails the test with the end of the log), the water frames compared and the relative difference
used throughout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import SHARED_DATA
from .reference_finetune import reference_env

WATER = SHARED_DATA.resolve() / "water"
DP = [sys.executable, "-m", "deepmd", "--pt"]
LAM = [sys.executable, "-m", "lamkit.cli.main"]


def start_run(cmd: list[str], cwd: Path, log: str) -> subprocess.Popen:
    """Start ``cmd`` in ``cwd`` (2 threads, the reference's environment), output to ``cwd/log``."""
    fh = open(cwd / log, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish_run
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=reference_env(threads=2), stdout=fh, stderr=subprocess.STDOUT
    )
    proc.log = fh  # type: ignore[attr-defined]
    return proc


def finish_run(proc: subprocess.Popen, cwd: Path, log: str, timeout: float = 600) -> str:
    """Wait for a :func:`start_run` process; its log, or a test failure showing its end."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log.close()  # type: ignore[attr-defined]
    text = (cwd / log).read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, proc.args))} failed (rc {proc.returncode}) in {cwd}:\n"
            f"{text[-4000:]}"
        )
    return text


def water_frames(n: int = 4):
    """The first ``n`` frames of water data_3: coord [n, 192, 3] Å, box [n, 9] Å, atype [192]."""
    d = WATER / "data_3"
    coord = np.load(d / "set.000" / "coord.npy")[:n].astype(np.float64)
    box = np.load(d / "set.000" / "box.npy")[:n].astype(np.float64)
    atype = np.loadtxt(d / "type.raw", dtype=np.int64).reshape(-1)
    return coord.reshape(n, -1, 3), box.reshape(n, 9), atype


def rel_diff(ref: np.ndarray, got: np.ndarray) -> float:
    """max |ref - got| / max |ref| (the plain maximum when ``ref`` is all zero)."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ref - got).max() / (scale if scale > 0 else 1.0))
