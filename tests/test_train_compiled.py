"""Compiled training (``training.enable_compile``, :mod:`lamkit.train.compiled`): the traced and
Inductor-compiled energy + force + virial graph trains exactly as eager mode: over several steps
of the built-in Cu-Au example (two systems of 32 and 48 atoms, one graph for both) the loss and
every parameter gradient equal eager training's to 1e-10 relative in float64, and a run restarted
from a checkpoint ends with the same weights as the straight run. Models that cannot be compiled
train eagerly with a log line that says why."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

from lamkit.train import Trainer
from lamkit.train.tasks import DEFAULT

from .conftest import IN_CI

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 4
DESCRIPTORS = {
    "dpa1": {
        "type": "se_atten",
        "sel": 40,
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 2,
        "tebd_dim": 4,
        "attn": 6,
        "attn_layer": 1,
        "seed": 1,
    },
    "dpa2": {
        "type": "dpa2",
        "repinit": {
            "tebd_dim": 4,
            "rcut": 4.0,
            "rcut_smth": 0.5,
            "nsel": 40,
            "neuron": [4, 8],
            "axis_neuron": 2,
            "use_three_body": True,
            "three_body_sel": 20,
            "three_body_rcut": 3.0,
            "three_body_rcut_smth": 2.5,
            "three_body_neuron": [2, 4],
        },
        "repformer": {
            "rcut": 3.0,
            "rcut_smth": 2.5,
            "nsel": 20,
            "nlayers": 2,
            "g1_dim": 8,
            "g2_dim": 4,
            "attn2_hidden": 4,
            "attn2_nhead": 2,
            "attn1_hidden": 4,
            "attn1_nhead": 2,
            "axis_neuron": 2,
            "update_g1_has_attn": True,
            "update_g2_has_attn": True,
        },
        "seed": 1,
    },
    "dpa3": {
        "type": "dpa3",
        "repflow": {
            "n_dim": 8,
            "e_dim": 6,
            "a_dim": 4,
            "nlayers": 2,
            "e_rcut": 4.0,
            "e_rcut_smth": 3.0,
            "e_sel": 40,
            "a_rcut": 3.0,
            "a_rcut_smth": 2.0,
            "a_sel": 20,
            "axis_neuron": 2,
        },
        "seed": 1,
    },
}


@pytest.fixture(scope="module", autouse=True)
def cxx_compiler():
    """Inductor builds C++ kernels: skip (fail under CI) without a compiler."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # no g++/clang++ on PATH
        if IN_CI:
            pytest.fail(f"CI must provide a C++ compiler for compiled training: {exc}")
        pytest.skip(f"no C++ compiler for Inductor: {exc}")


def _config(example_dir, descriptor: dict | None, compile_: bool, **training) -> dict:
    conf = json.loads((example_dir / "input.json").read_text())
    if descriptor is not None:
        conf["model"]["descriptor"] = copy.deepcopy(descriptor)
        conf["model"]["fitting_net"]["neuron"] = [8, 8]
    tr = conf["training"]
    for part in ("training_data", "validation_data"):
        tr[part]["systems"] = [str(example_dir / s) for s in tr[part]["systems"]]
    tr.update(numb_steps=STEPS, disp_freq=100, save_freq=2, enable_compile=compile_)
    tr.update(training)
    return conf


def _grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return float((a - b).norm()) <= rtol * float(b.norm()) + 1e-300


@pytest.mark.parametrize("name", ["dpa1", pytest.param("dpa2", marks=pytest.mark.slow), "dpa3"])
def test_compiled_training_equals_eager(example_dir, tmp_path, name):
    desc = DESCRIPTORS[name]
    eager = Trainer(_config(example_dir, desc, False), tmp_path / "eager")
    fast = Trainer(_config(example_dir, desc, True), tmp_path / "fast")
    assert not eager.compiled and set(fast.compiled) == {DEFAULT}
    for p, q in zip(eager.model.parameters(), fast.model.parameters()):
        assert torch.equal(p, q)  # the same start
    graph = fast.compiled[DEFAULT]
    natoms = set()

    def recording(coord, *args, **kw):
        natoms.add(coord.shape[1])
        return graph(coord, *args, **kw)

    fast.compiled[DEFAULT] = recording
    for step in range(STEPS):
        fast.model.train()
        eager.model.train()
        m_fast = fast.train_step(step)
        m_eager = eager.train_step(step)
        for key in ("rmse", "rmse_e", "rmse_f", "rmse_v"):
            assert m_fast[key] == pytest.approx(m_eager[key], rel=1e-10, abs=0), (step, key)
        g_eager, g_fast = _grads(eager), _grads(fast)
        assert g_fast.keys() == g_eager.keys() and len(g_eager) > 5
        for n in g_eager:
            assert _close(g_fast[n], g_eager[n], 1e-10), (step, n)
        assert any(float(g.norm()) > 0 for g in g_eager.values())
    assert graph.error is None
    # one graph for all atom counts (DPA-2: one per width of its trimmed lists)
    assert len(graph.graphs) == len({widths for _, widths, *_ in graph.graphs})
    if name != "dpa2":
        assert len(graph.graphs) == 1
    assert natoms == {32, 48}, natoms  # both systems of the example


def test_narrower_lists_run_the_widest_graph(example_dir, tmp_path, monkeypatch):
    """Batches whose trimmed DPA-2 lists are narrower than the widest seen so far run that
    width's graph (padded with empty slots): no new compile, and each step equals eager."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # traced graphs, not compiled
    conf = lambda c: _config(example_dir, DESCRIPTORS["dpa2"], c)  # noqa: E731
    eager, fast = Trainer(conf(False), tmp_path / "eager"), Trainer(conf(True), tmp_path / "fast")
    graph = fast.compiled[DEFAULT]
    graph.width_step = 1  # every width its own shape
    widest = {"repinit": 21, "three_body": 15, "repformer": 15}  # as if met in an earlier batch
    graph.widest = dict(widest)
    natural = []
    trim = fast.model.descriptor.graph_inputs

    def recording(*args, **kw):
        lists = trim(*args, **kw)
        natural.append({name: t.shape[-1] for name, t in lists.items()})
        return lists

    monkeypatch.setattr(fast.model.descriptor, "graph_inputs", recording)
    for step in range(STEPS):
        m_fast, m_eager = fast.train_step(step), eager.train_step(step)
        assert m_fast["rmse_f"] == pytest.approx(m_eager["rmse_f"], rel=1e-10, abs=0), step
        g_eager, g_fast = _grads(eager), _grads(fast)
        assert all(_close(g_fast[n], g_eager[n], 1e-10) for n in g_eager), step
    assert graph.error is None and len(natural) == STEPS
    assert all(w[k] < widest[k] for w in natural for k in widest), natural
    assert [key[1] for key in graph.graphs] == [tuple(widest.values())]


def test_restart_of_a_compiled_run_is_exact(example_dir, tmp_path):
    desc = DESCRIPTORS["dpa1"]
    straight = tmp_path / "a"
    Trainer(_config(example_dir, desc, True), straight).run()
    part = tmp_path / "b"
    Trainer(_config(example_dir, desc, True), part, restart=str(straight / "model.ckpt-2.pt")).run()
    eager = tmp_path / "c"
    Trainer(_config(example_dir, desc, False), eager).run()
    a = torch.load(straight / f"model.ckpt-{STEPS}.pt", weights_only=False)
    b = torch.load(part / f"model.ckpt-{STEPS}.pt", weights_only=False)
    c = torch.load(eager / f"model.ckpt-{STEPS}.pt", weights_only=False)
    moved = 0
    first = torch.load(straight / "model.ckpt-2.pt", weights_only=False)
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
        assert _close(a["model_state"][k], c["model_state"][k], 1e-10), k
        moved += not torch.equal(a["model_state"][k], first["model_state"][k])
    assert moved > 5  # the steps after the restart changed the weights
    assert a["sampler"] == b["sampler"]


def test_type_sorted_model_trains_eagerly_with_a_reason(example_dir, tmp_path, caplog):
    """The example's se_e2_a model sorts atoms by type: not compiled, trained eagerly."""
    with caplog.at_level(logging.WARNING, logger="lamkit.train"):
        trainer = Trainer(_config(example_dir, None, True, numb_steps=1), tmp_path)
    assert trainer.compiled == {}
    lines = [r.getMessage() for r in caplog.records if "compiled training" in r.getMessage()]
    assert len(lines) == 1 and "selects atoms by type" in lines[0], lines
    trainer.run()
    assert (tmp_path / "model.ckpt-1.pt").exists()
