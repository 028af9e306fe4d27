"""Float32 models of the DPA family (DPA-1 / se_atten, DPA-2, DPA-3).

DeePMD-kit keeps the geometry in float64, runs descriptor and fitting in their ``precision``
and sums the atomic energies in float64; lamkit does the same. Checked here, each for DPA-1,
DPA-2 and DPA-3:

* parity with the reference on the same float32 weights: a subprocess builds the reference's
  float32 model (``deepmd.pt.model.model.get_model``) with random weights, saves it as a
  checkpoint, evaluates it and computes its ``EnergyStdLoss`` and the gradients of the fitting
  parameters on one labelled frame; lamkit loads the checkpoint and must agree at float32
  tolerance (energy 1e-5 relative, forces and virial 1e-4 absolute, loss and gradients 1e-4);
* physics in float32: the float32 twin of a float64 model (same weights) gives the float64
  energies, forces and virials to float32 rounding; forces match finite differences of the
  float32 energy (loose, as float32 rounding limits the difference quotient); rotation,
  translation and permutation invariance; a padded batch equals frames one by one;
* training: parameters and their gradients stay float32, and a few optimiser steps on the
  energy + force + virial loss lower it as they do for the float64 twin.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from lamkit.model.build import build_model
from lamkit.testing import (
    brute_force_pairs,
    check_batch,
    check_forces,
    check_permutation,
    check_precision,
    check_rotation,
    check_translation,
    check_virial,
    copy_weights,
    random_rotation,
    randomize_statistics,
    standard_system,
    strain_system,
)
from lamkit.testing.neighbors import check_sel_not_saturated
from lamkit.testing.physics import assert_close, predict
from lamkit.testing.reference_job import run_reference_job
from lamkit.train.loss import build_loss

from .conftest import require_reference

TYPE_MAP = ["O", "H", "C"]
RCUT = 5.0
FITTING = {"neuron": [16, 16], "resnet_dt": True, "seed": 1}
DESCRIPTORS = {
    "dpa1": {
        "type": "se_atten",
        "sel": 48,
        "rcut": RCUT,
        "rcut_smth": 0.5,
        "neuron": [4, 8, 16],
        "axis_neuron": 4,
        "attn": 16,
        "attn_layer": 2,
        "tebd_dim": 8,
        # explicit: get_model's constructor default (true) differs from the input default
        "smooth_type_embedding": False,
        "seed": 1,
    },
    "dpa2": {
        "type": "dpa2",
        "seed": 1,
        "repinit": {
            "rcut": RCUT,
            "rcut_smth": 0.5,
            "nsel": 48,
            "neuron": [4, 8],
            "axis_neuron": 4,
            "use_three_body": True,
            "three_body_sel": 20,
            "three_body_rcut": 3.5,
            "three_body_rcut_smth": 3.0,
            "three_body_neuron": [2, 4],
        },
        "repformer": {
            "rcut": 3.5,
            "rcut_smth": 3.0,
            "nsel": 20,
            "nlayers": 2,
            "g1_dim": 16,
            "g2_dim": 8,
            "attn1_hidden": 8,
            "attn1_nhead": 2,
            "attn2_hidden": 8,
            "attn2_nhead": 2,
            "axis_neuron": 4,
            "update_style": "res_residual",
            "update_residual": 0.01,
            "attn2_has_gate": True,
        },
    },
    "dpa3": {
        "type": "dpa3",
        "seed": 1,
        "activation_function": "silut:10.0",
        "use_tebd_bias": False,
        "repflow": {
            "n_dim": 16,
            "e_dim": 8,
            "a_dim": 8,
            "nlayers": 2,
            "e_rcut": RCUT,
            "e_rcut_smth": 4.0,
            "e_sel": 48,
            "a_rcut": 3.5,
            "a_rcut_smth": 3.0,
            "a_sel": 20,
            "axis_neuron": 4,
            "a_compress_rate": 1,
            "a_compress_e_rate": 2,
            "a_compress_use_split": True,
            "smooth_edge_update": True,
            "edge_init_use_dist": True,
            "use_exp_switch": True,
        },
    },
}
FAMILY = list(DESCRIPTORS)
LOSS = {
    "type": "ener",
    "start_pref_e": 0.02,
    "limit_pref_e": 1.0,
    "start_pref_f": 1000.0,
    "limit_pref_f": 1.0,
    "start_pref_v": 0.5,
    "limit_pref_v": 2.0,
}
START_LR, LR = 1e-3, 3e-4
# float32 tolerances: (rtol, atol) per output
F32_TOL = {
    "energy": (1e-5, 1e-6),
    "atom_energy": (1e-5, 1e-5),
    "force": (0.0, 1e-4),
    "virial": (0.0, 1e-4),
}


def model_params(kind: str, precision: str) -> dict:
    desc = copy.deepcopy(DESCRIPTORS[kind])
    desc["precision"] = precision
    return {
        "type_map": list(TYPE_MAP),
        "descriptor": desc,
        "fitting_net": {**FITTING, "precision": precision},
    }


def make_model(kind: str, precision: str = "float64"):
    """A model with random statistics; DPA-1 and DPA-2 keep ``davg`` zero as their default
    ``set_davg_zero`` does: otherwise the empty neighbour slots, which read extended atom 0
    (the reference's convention), would enter and the energy would depend on atom order."""
    model = randomize_statistics(build_model(model_params(kind, precision)), seed=3)
    if kind in ("dpa1", "dpa2"):
        for name, buf in model.named_buffers():
            if name.endswith("davg"):
                buf.zero_()
    return model


def twins(kind: str):
    """A float64 model and its float32 twin with the same weights."""
    high = make_model(kind, "float64")
    return high, copy_weights(high, make_model(kind, "float32"))


def systems() -> dict:
    out = {n: standard_system(n, len(TYPE_MAP), RCUT, seed=7) for n in ("triclinic", "cluster")}
    for s in out.values():
        check_sel_not_saturated(s, RCUT, [48], len(TYPE_MAP))
    return out


def labels(system, seed: int = 3) -> dict:
    """Random energy, force and virial labels for one frame (the loss only needs values)."""
    rng = np.random.default_rng(seed)
    n = system.nloc
    return {
        "energy": rng.normal(-3.0 * n, 1.0, (1, 1)),
        "force": rng.normal(0.0, 0.8, (1, n, 3)),
        "virial": rng.normal(0.0, 2.0, (1, 9)),
    }


# --- the reference side (subprocess): argv = job json; writes checkpoints and results.pt ----
_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.pt.loss import EnergyStdLoss
from deepmd.pt.model.model import get_model

job = json.load(open(sys.argv[1]))
results = {}
for name, params in job["cases"].items():
    model = get_model(json.loads(json.dumps(params)))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("stddev"):
                shape = (value.shape[0],) + (1,) * (value.ndim - 1)
                value.copy_((0.2 + 0.1 * torch.rand(shape, generator=gen)).expand_as(value))
            elif "residual" in key or key.endswith("out_bias"):
                value.copy_(0.3 * torch.randn(value.shape, generator=gen, dtype=value.dtype))
    state = {"_extra_state": {"model_params": params}}
    state.update({"model.Default." + k: v for k, v in model.state_dict().items()
                  if not k.startswith("_extra")})
    torch.save({"model": state}, f"{job['out']}/{name}.pt")
    res = {"dtypes": sorted({str(p.dtype) for p in model.parameters()})}
    for sys_name, s in job["systems"].items():
        coord = torch.tensor(s["coord"], dtype=torch.float64)[None]
        atype = torch.tensor(s["atype"])[None]
        box = None if s["cell"] is None else torch.tensor(s["cell"], dtype=torch.float64)
        out = model(coord, atype, box=None if box is None else box.reshape(1, 9))
        res[sys_name] = {k: out[k].detach()[0] for k in ("energy", "force", "virial",
                                                         "atom_energy")}
    s = job["systems"]["triclinic"]
    inputs = {"coord": torch.tensor(s["coord"], dtype=torch.float64)[None],
              "atype": torch.tensor(s["atype"])[None],
              "box": torch.tensor(s["cell"], dtype=torch.float64).reshape(1, 9)}
    label = {k: torch.tensor(v, dtype=torch.float64) for k, v in job["label"].items()}
    label.update(find_energy=1.0, find_force=1.0, find_virial=1.0)
    model.train()
    _, loss, _ = EnergyStdLoss(starter_learning_rate=job["start_lr"], **job["prefs"])(
        inputs, model, label, len(s["atype"]), job["lr"])
    loss.backward()
    res["loss"] = loss.item()
    res["grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                    if "fitting_net" in n and p.grad is not None}
    results[name] = res
torch.save(results, f"{job['out']}/results.pt")
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("float32_reference")
    sys_json = {}
    for name, s in systems().items():
        cell = None if not s.periodic else np.asarray(s.cell).reshape(3, 3).tolist()
        sys_json[name] = {"coord": s.coord.tolist(), "atype": s.atype.tolist(), "cell": cell}
    label = {k: v.tolist() for k, v in labels(systems()["triclinic"]).items()}
    prefs = {k: v for k, v in LOSS.items() if k != "type"}
    job = {
        "out": str(out),
        "cases": {k: model_params(k, "float32") for k in FAMILY},
        "systems": sys_json,
        "label": label,
        "prefs": prefs,
        "start_lr": START_LR,
        "lr": LR,
    }
    (out / "job.json").write_text(json.dumps(job))
    return out, run_reference_job(out, _SCRIPT)


def _loss_and_grads(model, system, label: dict) -> tuple[float, dict]:
    """lamkit's energy loss on one labelled frame and the gradients of the fitting weights."""
    coord, atype, box = system.tensors()
    model.train()
    nbr = model.neighbor_builder()(coord, atype, box)
    pred = model(coord, atype, box, nbr, create_graph=True)
    batch = {k: torch.as_tensor(v) for k, v in label.items()}
    batch.update(find_energy=1.0, find_force=1.0, find_virial=1.0)
    loss, _ = build_loss(dict(LOSS), START_LR)(pred, batch, LR)
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("fitting.")}
    return loss.item(), grads


@pytest.mark.reference
@pytest.mark.parametrize("kind", FAMILY)
def test_float32_parity_with_reference(reference, kind):
    from lamkit.interop.deepmd import load_deepmd_checkpoint

    out, results = reference
    want_all = results[kind]
    assert want_all["dtypes"] == ["torch.float32"]  # the reference model really is float32
    model = load_deepmd_checkpoint(out / f"{kind}.pt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for sys_name, system in systems().items():
        got = predict(model, system)
        want = {k: v.double().numpy() for k, v in want_all[sys_name].items()}
        assert np.abs(want["force"]).max() > 1e-3  # the forces are not trivially zero
        for name, tol in F32_TOL.items():
            got_v, want_v = np.ravel(got[name]), np.ravel(want[name])
            assert_close(f"{kind}/{sys_name} {name}", got_v, want_v, *tol)
    # training: the same loss and the same fitting-parameter gradients, in float32
    loss, grads = _loss_and_grads(model, systems()["triclinic"], labels(systems()["triclinic"]))
    assert loss == pytest.approx(want_all["loss"], rel=1e-4)
    ref = want_all["grads"]
    assert grads and all(g.dtype == torch.float32 for g in grads.values())
    ref_by_shape = _match_fitting_grads(grads, ref)
    for name, g in grads.items():
        r = ref_by_shape[name]
        assert_close(f"{kind} grad {name}", g.double().numpy(), r.double().numpy(), 1e-4, 1e-6)


def _match_fitting_grads(grads: dict, ref: dict) -> dict:
    """Pair lamkit's ``fitting.nets.0.layers.L.{matrix,bias,idt}`` with the reference's
    ``...fitting_net.filter_layers.networks.0.layers.L.{matrix,bias,idt}``."""
    out = {}
    for name in grads:
        parts = name.split(".")
        layer, leaf = parts[-2], parts[-1]
        key = f"atomic_model.fitting_net.filter_layers.networks.0.layers.{layer}.{leaf}"
        assert key in ref, (name, sorted(ref))
        out[name] = ref[key]
    return out


# --- physics of the float32 models (no reference needed) -----------------------------------
# float32 agreement: (rtol, atol) on energies, forces, virials of a few eV / eV/Å
RTOL32, ATOL32 = 1e-5, 1e-5
CUTOFF_MARGIN = 0.05  # Å


def clean_cluster():
    """A cluster with no pair within CUTOFF_MARGIN of rcut. The switch 1 - S(u) rounds to about
    1e-7 absolute in float32 (as in the reference), so a pair a hundredth of an Å inside rcut gets
    a switch of the wrong size or sign; with non-smooth attention (DPA-1 here) that neighbour
    still takes a full share of the softmax and its direction enters through ``attn_dotr``, which
    moves the energy by ~1e-4 eV under a rotation. The rest of the suite avoids such pairs."""
    system = standard_system("cluster", len(TYPE_MAP), RCUT, seed=11)
    dist = np.asarray(brute_force_pairs(system, RCUT + 1.0).dist)
    assert np.abs(dist - RCUT).min() > CUTOFF_MARGIN
    check_sel_not_saturated(system, RCUT, [48], len(TYPE_MAP))
    return system


@pytest.fixture(scope="module", params=FAMILY)
def pair(request):
    return request.param, *twins(request.param)


def test_float32_internals_and_float64_outputs(pair):
    """Weights and descriptor run in float32; energies and derivatives come out in float64
    (geometry and the sum over atoms stay float64, as in the reference)."""
    kind, high, low = pair
    assert {p.dtype for p in low.parameters()} == {torch.float32}
    assert low.descriptor.dtype == torch.float32 and low.fitting.dtype == torch.float32
    seen = []
    low.descriptor.register_forward_hook(lambda mod, inp, res: seen.append(res))
    coord, atype, box = systems()["triclinic"].tensors()
    out = low.evaluate(coord, atype, box)
    assert seen and next(iter(seen[0].values())).dtype == torch.float32
    for name in ("energy", "force", "virial"):
        assert out[name].dtype == torch.float64, (kind, name)


@pytest.mark.parametrize("sys_name", ["triclinic", "cluster"])
def test_float32_matches_float64_twin(pair, sys_name):
    kind, high, low = pair
    system = clean_cluster() if sys_name == "cluster" else systems()[sys_name]
    check_precision(low, high, system, rtol=RTOL32, atol=ATOL32)


def test_float32_forces_and_virial_finite_difference(pair):
    """Forces and virial are the derivatives of the float32 energy: a central difference with a
    step large enough that float32 rounding of the energy (~1e-7 relative) stays below 1e-4."""
    kind, _, low = pair
    system = systems()["triclinic"]
    check_forces(low, system, h=1e-3, rtol=1e-3, atol=2e-3)
    check_virial(low, system, h=1e-3, rtol=1e-3, atol=2e-3)


def test_float32_invariances(pair):
    kind, _, low = pair
    rng = np.random.default_rng(11)
    system = clean_cluster()
    check_rotation(low, system, random_rotation(rng), rtol=RTOL32, atol=ATOL32)
    check_translation(low, system, rng.normal(scale=3.0, size=3), rtol=RTOL32, atol=ATOL32)
    check_permutation(low, system, rng.permutation(system.nloc), rtol=RTOL32, atol=ATOL32)


def test_float32_batch_equals_frames(pair):
    """A padded batch of frames of different sizes gives each frame's own results."""
    kind, _, low = pair
    tri = systems()["triclinic"]
    cubic = standard_system("cubic", len(TYPE_MAP), RCUT, seed=8)
    frames = [tri, strain_system(tri, np.random.default_rng(16), 0.05), cubic]
    check_batch(low, frames, rtol=RTOL32, atol=ATOL32, rng=np.random.default_rng(17))


def _train(model, system, steps: int) -> list[float]:
    """Adam steps on the energy + force + virial loss of one labelled frame; the losses."""
    coord, atype, box = system.tensors()
    batch = {k: torch.as_tensor(v) for k, v in labels(system).items()}
    batch.update(find_energy=1.0, find_force=1.0, find_virial=1.0)
    loss_fn = build_loss(dict(LOSS), START_LR)
    opt = torch.optim.Adam(model.parameters(), lr=START_LR)
    model.train()
    nbr = model.neighbor_builder()(coord, atype, box)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = loss_fn(model(coord, atype, box, nbr, create_graph=True), batch, START_LR)
        loss.backward()
        assert all(p.grad.dtype == p.dtype for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    return losses


def test_float32_training_follows_float64(pair):
    """Training the float32 twin lowers the loss along the float64 model's path."""
    kind, high, low = pair
    high, low = copy.deepcopy(high), copy.deepcopy(low)
    system = systems()["triclinic"]
    l64, l32 = _train(high, system, 4), _train(low, system, 4)
    assert {p.dtype for p in low.parameters()} == {torch.float32}
    assert l32[-1] < l32[0], (kind, l32)
    np.testing.assert_allclose(l32, l64, rtol=1e-3, err_msg=kind)
