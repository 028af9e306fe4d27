"""Running a script against the reference DeePMD-kit in its own process (parity tests).

A parity test writes ``job.json`` into a folder ``out`` (the cases, systems and ``out``
itself), then :func:`run_reference_job` writes the script next to it, runs it with the current
interpreter on one thread, fails with the end of its stderr if it fails, and returns what the
script saved as ``out/results.pt``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch


def run_reference_job(out: str | Path, script: str, timeout: int = 600):
    """Run ``script`` as ``out/ref.py out/job.json``; the contents of ``out/results.pt``."""
    out = Path(out)
    (out / "ref.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, str(out / "ref.py"), str(out / "job.json")],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode != 0:
        raise AssertionError(f"the reference script failed:\n{proc.stderr[-3000:]}")
    return torch.load(out / "results.pt", weights_only=False)
