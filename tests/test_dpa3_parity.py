"""DPA-3 parity with the reference DeePMD-kit 3.2 (PyTorch backend) on the same weights.

One subprocess builds the reference's energy model (``deepmd.pt.model.model.get_model``) for
each option set below, with random weights (the residual weights, the normalisation std and
the output bias are re-drawn so that every term counts), saves it as a DeePMD-kit checkpoint
(``{"model": state dict with _extra_state.model_params}``) and evaluates it on a periodic
triclinic three-type system and a non-periodic cluster. lamkit loads each checkpoint file with
its DeePMD-kit reader and must reproduce energies, forces, virials, atomic energies and the
descriptor output to 1e-10 (float64). Skipped without the reference (a failure in CI).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.testing import standard_system
from lamkit.testing.neighbors import check_sel_not_saturated
from lamkit.testing.physics import assert_close, predict

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
        atype = torch.tensor(s["atype"])[None]
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
    job = {"out": str(out), "cases": {n: _params(n) for n in CASES}, "systems": systems}
    (out / "job.json").write_text(json.dumps(job))
    (out / "ref.py").write_text(_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(out / "ref.py"), str(out / "job.json")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, torch.load(out / "results.pt", weights_only=False)


@pytest.mark.parametrize("case", list(CASES))
def test_dpa3_matches_reference(reference, case):
    out, results = reference
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    assert model.descriptor.__class__.__name__ == "DescrptDPA3"
    seen = []
    model.descriptor.register_forward_hook(
        lambda mod, inp, res: seen.append(res[keys.DESCRIPTOR].detach())
    )
    for sys_name, system in _systems().items():
        seen.clear()
        got = predict(model, system)
        want = {k: v.numpy() for k, v in results[case][sys_name].items()}
        tag = f"{case}/{sys_name}"
        assert np.abs(want["force"]).max() > 1e-4  # the forces are not trivially zero
        tol = TOLERANCE.get(case, (1e-10, 1e-12))
        for name in ("energy", "force", "virial", "atom_energy"):
            assert_close(f"{tag} {name}", np.ravel(got[name]), np.ravel(want[name]), *tol)
        assert_close(f"{tag} descriptor", seen[0][0].double().numpy(), want["descriptor"], *tol)
