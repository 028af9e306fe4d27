"""Shared fixtures: locations of the shared example data and small generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
