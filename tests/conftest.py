"""Shared fixtures: locations of the shared example data and small generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from . import areas

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need_shared(*parts: str) -> Path:
    """Path under ../shared/data; skip (fail in CI) when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if IN_CI:
            pytest.fail(f"CI must provide {path}")
        pytest.skip(f"{path} is not available")
    return path


def require_reference() -> Path:
    """Skip (fail under CI) unless the reference deepmd-kit PyTorch backend imports and the
    water example data is present; returns the water data folder."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import deepmd.pt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken op library raises OSError/RuntimeError
        msg = f"reference deepmd-kit unavailable: 'import deepmd.pt' failed ({exc!r})"
        if IN_CI:
            pytest.fail(f"{msg}; CI must run the reference parity tests")
        pytest.skip(msg)
    return need_shared("water")


def pytest_configure(config: pytest.Config) -> None:
    areas.register(config)  # area markers: python3 -m pytest -m db (see tests/areas.py)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    areas.mark(items)


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory) -> Path:
    """The built-in Cu-Au EMT example (small), written once per session."""
    from lamkit.examples import write_example

    return write_example(tmp_path_factory.mktemp("example"), nframes=8, steps=20)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is several times faster, and far steadier on a busy machine
    (a module uses it with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def energy_input(
    model: dict,
    train: list,
    steps: int,
    seed: int = 1,
    valid: list | None = None,
    stop_lr: float = 1e-5,
) -> dict:
    """A DeePMD-kit v3 input for an energy model (the water example's loss and exponential
    learning rate, batch size 1) that both lamkit and the reference train unchanged."""
    training = {
        "training_data": {"systems": [str(p) for p in train], "batch_size": 1},
        "numb_steps": steps,
        "seed": seed,
        "disp_freq": steps,
        "save_freq": steps,
    }
    if valid:
        training["validation_data"] = {
            "systems": [str(p) for p in valid],
            "batch_size": 1,
            "numb_btch": 1,
        }
    return {
        "model": model,
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": stop_lr, "decay_steps": 5000},
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02,
            "limit_pref_e": 1,
            "start_pref_f": 1000,
            "limit_pref_f": 1,
        },
        "training": training,
    }
