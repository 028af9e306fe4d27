"""``lam learn`` from DeePMD-kit v3 checkpoints: a single-task one and a branch of a multi-task
one (made with ``lam convert`` from tiny lamkit models; the conversion needs the reference
package). The members start from the chosen branch's weights: after one step at a negligible
learning rate their forces are the branch's own (and not the other branch's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from lamkit.cli.main import main
from lamkit.errors import ConfigError
from lamkit.infer import DeepPot
from lamkit.interop.convert import convert, read_file, source_format
from lamkit.learn import load_state, parse_config, run_learn
from lamkit.model.io import atomic_save, load_model, model_payload
from lamkit.model.multitask import MultiTaskModel
from lamkit.testing.learn import learn_config as _conf
from lamkit.testing.learn import pretrain_cu_ni as _pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


def _need_reference() -> None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import deepmd.pt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken op library raises OSError/RuntimeError
        pytest.skip(f"lam convert to DeePMD-kit needs the reference deepmd-kit ({exc!r})")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A DeePMD-kit single-task checkpoint and a two-branch multi-task one (branches a, b)."""
    _need_reference()
    root = tmp_path_factory.mktemp("dp")
    a = _pretrain(root / "a", steps=30)
    b = _pretrain(root / "b", steps=60)
    convert(a, root / "single_dp.pt", to="deepmd")
    multi = MultiTaskModel({"a": load_model(a), "b": load_model(b)}, share=False)
    atomic_save(model_payload(multi), root / "multi.lam")
    convert(root / "multi.lam", root / "multi_dp.pt", to="deepmd")
    for name in ("single_dp.pt", "multi_dp.pt"):
        assert source_format(read_file(root / name), name) == "deepmd"
    return root


def _forces(model, head=None) -> np.ndarray:
    at = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    at.positions += np.random.default_rng(5).normal(0, 0.08, at.positions.shape)
    dp = DeepPot(str(model), head=head)
    types = [dp.get_type_map().index(s) for s in at.get_chemical_symbols()]
    _, f, _ = dp.eval(at.positions[None], at.cell.array.reshape(1, 9), types)
    return f[0]


def _learn_conf(model, **over):
    return _conf(
        str(model),
        labeller={"type": "emt"},
        properties=[{"name": "lattice", "structure": "Cu", "tolerance": "0.5 %",
                     "target": "3.59 Å"}],
        train={"members": 2, "numb_steps": 1, "init_frames": 1, "start_lr": 1e-12,
               "stop_lr": 1e-12},
        explore={"temperatures": [300], "steps": 5, "traj_freq": 5},
        converge={"max_iterations": 1},
        **over,
    )


def test_single_task_deepmd_checkpoint(checkpoints, tmp_path):
    model = checkpoints / "single_dp.pt"
    state = run_learn(parse_config(_learn_conf(model)), tmp_path / "run")
    assert state.finished == "max_iterations" and len(state.models) == 2
    want = _forces(model)
    for m in state.models:
        np.testing.assert_allclose(_forces(tmp_path / "run" / m), want, atol=1e-7)
    assert state.records[0]["explored"] == 3 and "lattice:Cu" in state.records[0]["properties"]


def test_branch_of_a_multitask_deepmd_checkpoint(checkpoints, tmp_path):
    model = checkpoints / "multi_dp.pt"
    fa, fb = _forces(model, "a"), _forces(model, "b")
    assert np.abs(fa - fb).max() > 1e-3  # the branches differ
    with pytest.raises(ConfigError, match=r"head: .*multi_dp.pt is a multi-task model"):
        run_learn(parse_config(_learn_conf(model)), tmp_path / "nohead")
    with pytest.raises(ConfigError, match="head"):
        run_learn(parse_config(_learn_conf(model, head="c")), tmp_path / "badhead")
    conf = _learn_conf(model, head="b")
    path = tmp_path / "learn.json"
    path.write_text(json.dumps(conf))
    assert main(["learn", str(path), "-o", str(tmp_path / "run")]) == 0  # the command line
    state = load_state(tmp_path / "run")
    assert state.finished == "max_iterations" and len(state.models) == 2
    for m in state.models:
        got = _forces(tmp_path / "run" / m)
        np.testing.assert_allclose(got, fb, atol=1e-7)
        assert np.abs(got - fa).max() > 1e-3
