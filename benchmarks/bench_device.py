"""``--device`` for the benchmark scripts: cpu by default, cuda (or cuda:N) when asked.

A script calls :func:`add_device_argument` on its parser and :func:`resolve_device` on the
parsed value; asking for CUDA on a machine without it stops the script with one line that says
so, before any work starts.
"""

from __future__ import annotations

import argparse


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device for models and tensors: cpu (default), cuda or cuda:N",
    )


def resolve_device(name: str):
    """The ``torch.device`` for ``name``; ``SystemExit`` with a message when CUDA is asked for
    and not available, or the name is not a device."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SystemExit(f"--device: '{name}' is not a torch device ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemExit(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif device.type != "cpu":
        raise SystemExit(f"--device {name}: use cpu or cuda[:N]")
    return device


def device_env(env: dict, device) -> dict:
    """``env`` for child processes (``lam``, ``dp``) that should run on ``device``: on the CPU
    no CUDA device is visible to them and the reference's ``DEVICE`` switch says cpu; on
    ``cuda:N`` only card N is visible (it is their ``cuda:0``)."""
    env = dict(env)
    if str(device) == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", DEVICE="cpu")
    else:
        env.pop("DEVICE", None)
        index = getattr(device, "index", None)
        if index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
    return env


def malloc_env() -> dict:
    """Environment variables that give a child process the glibc malloc settings lamkit applies
    in its own process (``lamkit.runtime.tune_allocator``: no ``mmap`` for large blocks, no
    trimming), so that tools in other processes allocate alike."""
    return {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
