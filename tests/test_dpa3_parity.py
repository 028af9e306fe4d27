"""DPA-3 parity with the reference DeePMD-kit 3.2 (PyTorch backend) on the same weights.

One subprocess builds the reference's energy model (``deepmd.pt.model.model.get_model``) for
each option set below, with random weights (the residual weights, the normalisation std and
the output bias are re-drawn so that every term counts), saves it as a DeePMD-kit checkpoint
(``{"model": state dict with _extra_state.model_params}``) and evaluates it on a periodic
triclinic three-type system and a non-periodic cluster. lamkit loads each checkpoint file with
its DeePMD-kit reader and must reproduce energies, forces, virials, atomic energies and the
descriptor output to 1e-10 (float64; the example's options also in float32, to 1e-5).
A slow test trains a multi-task checkpoint with ``dp --pt train`` (two heads sharing a DPA-3)
and compares one head with ``deepmd.infer.DeepPot``. Skipped without the reference (a failure
in CI).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from lamkit import keys
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.nn.econf import SYMBOLS
from lamkit.testing import standard_system
from lamkit.testing.neighbors import check_sel_not_saturated
from lamkit.testing.physics import assert_close, predict
from lamkit.testing.reference_job import run_reference_job

from .conftest import require_reference

pytestmark = pytest.mark.reference

TYPE_MAP = ["O", "H", "C"]
RCUT = 5.0
BASE = {
    "type_map": TYPE_MAP,
    "descriptor": {
        "type": "dpa3",
        "precision": "float64",
        "seed": 1,
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
        },
    },
    "fitting_net": {"neuron": [16, 16], "precision": "float64", "seed": 1},
}
# name -> (repflow options, descriptor options) on top of BASE (argcheck defaults otherwise)
CASES = {
    "default": ({}, {}),
    # the options of the reference's examples/water/dpa3/input_torch.json at tiny sizes
    "water-example": (
        {
            "a_compress_rate": 1,
            "a_compress_e_rate": 2,
            "a_compress_use_split": True,
            "smooth_edge_update": True,
            "edge_init_use_dist": True,
            "use_exp_switch": True,
        },
        {"activation_function": "silut:10.0", "use_tebd_bias": False},
    ),
    "no-angle-update": ({"update_angle": False}, {}),
    "compress": ({"a_compress_rate": 1, "a_compress_e_rate": 2}, {"concat_output_tebd": True}),
    "compress-split": ({"a_compress_rate": 2, "a_compress_use_split": True}, {}),
    "dynamic-sel": ({"use_dynamic_sel": True, "smooth_edge_update": True}, {}),
    "plain-update-dist-exp": (
        {
            "optim_update": False,
            "edge_init_use_dist": True,
            "use_exp_switch": True,
            "n_multi_edge_message": 2,
            "update_style": "res_avg",
        },
        {"activation_function": "custom_silu:1.0", "use_tebd_bias": True},
    ),
    "res-incr-exclude": (
        {"update_style": "res_incr", "update_residual_init": "norm", "fix_stat_std": 0.0},
        {"exclude_types": [[0, 1]], "env_protection": 0.01},
    ),
}
# the example in its own precision, float32 (agreement to float32 rounding only)
# a pretrained-model-like setup (the OpenLAM DPA-3 models): econf type embedding over the whole
# periodic table (the systems' O, H, C are types 7, 0, 5 of 118), dynamic sel
CASES["econf-periodic-table-dynamic-sel"] = (
    {"use_dynamic_sel": True, "sel_reduce_factor": 10.0, "smooth_edge_update": True},
    {"use_econf_tebd": True, "use_tebd_bias": True},
)
FULL_TABLE = {"econf-periodic-table-dynamic-sel": list(SYMBOLS)}
CASES["water-example-float32"] = (CASES["water-example"][0], {**CASES["water-example"][1]})
CASES["water-example-float32"][1]["precision"] = "float32"
# fitting options on top of BASE, as in the example
EXAMPLE_FITTING = {"activation_function": "silut:10.0", "resnet_dt": True}
FITTING = {
    "water-example": EXAMPLE_FITTING,
    "water-example-float32": {**EXAMPLE_FITTING, "precision": "float32"},
}
# (rtol, atol) of the comparison; float64 unless named
TOLERANCE = {"water-example-float32": (1e-5, 1e-6)}
SYSTEMS = ("triclinic", "cluster")

# the reference side: argv = job json; writes <name>.pt checkpoints and results.pt
_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.pt.model.model import get_model

job = json.load(open(sys.argv[1]))
results = {}
for name, params in job["cases"].items():
    model = get_model(json.loads(json.dumps(params)))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("stddev"):
                value.copy_((0.2 + 0.1 * torch.rand(value.shape[0], 1, 1, generator=gen))
                            .expand_as(value))
            elif "residual" in key or key.endswith("out_bias"):
                value.copy_(0.3 * torch.randn(value.shape, generator=gen, dtype=value.dtype))
    state = {"_extra_state": {"model_params": params}}
    state.update({"model.Default." + k: v for k, v in model.state_dict().items()
                  if not k.startswith("_extra")})
    torch.save({"model": state}, f"{job['out']}/{name}.pt")
    seen = []
    model.atomic_model.descriptor.register_forward_hook(
        lambda mod, inp, out: seen.append(out[0].detach()))
    results[name] = {}
    for sys_name, s in job["systems"].items():
        seen.clear()
        coord = torch.tensor(s["coord"], dtype=torch.float64)[None]
        index = [params["type_map"].index(t) for t in job["type_map"]]
        atype = torch.tensor([index[t] for t in s["atype"]])[None]
        box = None if s["cell"] is None else torch.tensor(s["cell"], dtype=torch.float64)
        out = model(coord, atype, box=None if box is None else box.reshape(1, 9),
                    do_atomic_virial=False)
        res = {k: out[k].detach()[0] for k in ("energy", "force", "virial", "atom_energy")}
        res["descriptor"] = seen[0][0]
        results[name][sys_name] = res
torch.save(results, f"{job['out']}/results.pt")
"""


def _params(name: str) -> dict:
    rf, top = CASES[name]
    params = copy.deepcopy(BASE)
    params["type_map"] = FULL_TABLE.get(name, TYPE_MAP)
    params["descriptor"]["repflow"].update(rf)
    params["descriptor"].update(top)
    params["fitting_net"].update(FITTING.get(name, {}))
    return params


def _systems():
    return {name: standard_system(name, len(TYPE_MAP), RCUT, seed=7) for name in SYSTEMS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("dpa3_reference")
    systems = {}
    for name, s in _systems().items():
        check_sel_not_saturated(s, RCUT, [BASE["descriptor"]["repflow"]["e_sel"]], len(TYPE_MAP))
        cell = None if not s.periodic else np.asarray(s.cell).reshape(3, 3).tolist()
        systems[name] = {"coord": s.coord.tolist(), "atype": s.atype.tolist(), "cell": cell}
    cases = {n: _params(n) for n in CASES}
    job = {"out": str(out), "cases": cases, "systems": systems, "type_map": TYPE_MAP}
    (out / "job.json").write_text(json.dumps(job))
    return out, run_reference_job(out, _SCRIPT)


@pytest.mark.parametrize("case", list(CASES))
def test_dpa3_matches_reference(reference, case):
    out, results = reference
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    assert model.descriptor.__class__.__name__ == "DescrptDPA3"
    assert model.descriptor.type_embedding.econf == (case in FULL_TABLE)
    seen = []
    model.descriptor.register_forward_hook(
        lambda mod, inp, res: seen.append(res[keys.DESCRIPTOR].detach())
    )
    index = np.array([model.type_map.index(t) for t in TYPE_MAP])
    for sys_name, system in _systems().items():
        seen.clear()
        got = predict(model, dataclasses.replace(system, atype=index[system.atype]))
        want = {k: v.numpy() for k, v in results[case][sys_name].items()}
        tag = f"{case}/{sys_name}"
        assert np.abs(want["force"]).max() > 1e-4  # the forces are not trivially zero
        tol = TOLERANCE.get(case, (1e-10, 1e-12))
        for name in ("energy", "force", "virial", "atom_energy"):
            assert_close(f"{tag} {name}", np.ravel(got[name]), np.ravel(want[name]), *tol)
        assert_close(f"{tag} descriptor", seen[0][0].double().numpy(), want["descriptor"], *tol)


# --- a checkpoint written by ``dp --pt train``: multi-task, two heads sharing one DPA-3 ------
_TRAINED_EVAL = r"""
import sys, warnings
warnings.simplefilter("ignore")
import numpy as np
from deepmd.infer import DeepPot
data, out = sys.argv[1], sys.argv[2]
coord = np.load(f"{data}/set.000/coord.npy")[:1]
box = np.load(f"{data}/set.000/box.npy")[:1]
atype = np.loadtxt(f"{data}/type.raw", dtype=int)
e, f, v = DeepPot("model.ckpt.pt", head="water_b").eval(coord, box, atype)[:3]
np.savez(out, energy=e, force=f, virial=v)
"""


def _multitask_input(water) -> dict:
    desc = copy.deepcopy(CASES["water-example"][0])
    desc.update(n_dim=16, e_dim=8, a_dim=8, nlayers=2, e_rcut=6.0, e_rcut_smth=5.3, e_sel=120)
    desc.update(a_rcut=4.0, a_rcut_smth=3.5, a_sel=30)
    fit = {"neuron": [16, 16], "precision": "float64", **EXAMPLE_FITTING}
    loss = {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 20, "start_pref_f": 100}
    loss.update(limit_pref_f=60, start_pref_v=0.02, limit_pref_v=1)
    return {
        "model": {
            "shared_dict": {
                "tm": ["O", "H"],
                "dpa3": {
                    "type": "dpa3",
                    "repflow": desc,
                    "activation_function": "silut:10.0",
                    "precision": "float64",
                    "seed": 1,
                },
            },
            "model_dict": {
                head: {"type_map": "tm", "descriptor": "dpa3", "fitting_net": dict(fit, seed=s)}
                for head, s in (("water_a", 1), ("water_b", 2))
            },
        },
        "learning_rate": {"type": "exp", "decay_steps": 5000, "start_lr": 1e-3, "stop_lr": 3e-5},
        "loss_dict": {"water_a": loss, "water_b": loss},
        "training": {
            "model_prob": {"water_a": 0.5, "water_b": 0.5},
            "data_dict": {
                head: {"training_data": {"systems": [str(water / d)], "batch_size": 1}}
                for head, d in (("water_a", "data_0"), ("water_b", "data_1"))
            },
            "numb_steps": 2,
            "seed": 10,
            "disp_freq": 2,
            "save_freq": 2,
        },
    }


@pytest.mark.slow
def test_dp_trained_multitask_checkpoint(tmp_path):
    """Two steps of ``dp --pt train`` on a multi-task input whose heads share a DPA-3 descriptor
    with the water example's options; lamkit's reader gives ``deepmd.infer.DeepPot``'s energy,
    forces and virial for head water_b on a water frame."""
    water = require_reference()
    (tmp_path / "input.json").write_text(json.dumps(_multitask_input(water)))
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    cmd = [sys.executable, "-m", "deepmd", "--pt", "train", "input.json", "--skip-neighbor-stat"]
    proc = subprocess.run(cmd, **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp_path / "eval.py").write_text(_TRAINED_EVAL)
    data = water / "data_3"
    proc = subprocess.run([sys.executable, "eval.py", str(data), "ref.npz"], **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = np.load(tmp_path / "ref.npz")
    model = load_deepmd_checkpoint(tmp_path / "model.ckpt.pt", head="water_b")
    coord = np.load(data / "set.000" / "coord.npy")[:1].reshape(1, -1, 3)
    cell = np.load(data / "set.000" / "box.npy")[:1].reshape(1, 3, 3)
    atype = np.loadtxt(data / "type.raw", dtype=np.int64)[None]
    from lamkit.testing.physics import predict_batch

    got = predict_batch(model, coord, atype, cell, False)
    for name in ("energy", "force", "virial"):
        assert_close(f"trained {name}", np.ravel(got[name]), np.ravel(want[name]), 1e-10, 1e-12)
