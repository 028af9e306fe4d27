"""DP + pair-table (``use_srtab``, the reference's DPZBLModel) parity with DeePMD-kit 3.2.

A subprocess builds the reference's model (``get_model`` with ``use_srtab`` and the water
example's pair table, DPA-1 descriptors) with random weights and random
per-type biases of all three levels (DP model, table, combination), saves it as a checkpoint
and evaluates one water frame (O-H distances inside the switching region) and a dense
non-periodic cluster. lamkit loads the checkpoint and must match energy, forces, virial and
atomic energies to 1e-10 (float64). Skipped without the reference (a failure in CI).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.testing.neighbors import check_sel_not_saturated
from lamkit.testing.physics import assert_close, predict
from lamkit.testing.reference_job import run_reference_job
from lamkit.testing.systems import System, random_system

from .conftest import require_reference

pytestmark = pytest.mark.reference

TABLE = "/work/shared/data/tables/H2O_tab_potential.txt"
RCUT = 4.0
ZBL = {"smin_alpha": 0.1, "sw_rmin": 0.8, "sw_rmax": 1.2}
FIT = {"neuron": [8, 8], "precision": "float64", "seed": 1}
CASES = {
    "dpa1": {
        "type": "se_atten", "sel": 90, "rcut": RCUT, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 4, "attn": 8, "attn_layer": 1, "precision": "float64", "seed": 1,
        "smooth_type_embedding": False,
    },
    "dpa1-tebd-concat": {
        "type": "dpa1", "sel": 90, "rcut": RCUT, "rcut_smth": 2.0, "neuron": [4, 8],
        "axis_neuron": 4, "attn": 8, "attn_layer": 0, "tebd_input_mode": "strip",
        "smooth_type_embedding": True,
        "precision": "float64", "seed": 2,
    },
}

_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.pt.model.model import get_model

job = json.load(open(sys.argv[1]))
results = {}
for name, params in job["cases"].items():
    model = get_model(json.loads(json.dumps(params)))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("out_bias"):
                value.copy_(0.3 * torch.randn(value.shape, generator=gen, dtype=value.dtype))
            elif key.endswith("stddev"):
                value.fill_(0.3)
    state = {"_extra_state": {"model_params": params}}
    state.update({"model.Default." + k: v for k, v in model.state_dict().items()
                  if not k.startswith("_extra")})
    torch.save({"model": state}, f"{job['out']}/{name}.pt")
    results[name] = {}
    for sys_name, s in job["systems"].items():
        coord = torch.tensor(s["coord"], dtype=torch.float64)[None]
        atype = torch.tensor(s["atype"])[None]
        box = None if s["cell"] is None else torch.tensor(s["cell"], dtype=torch.float64)
        out = model(coord, atype, box=None if box is None else box.reshape(1, 9))
        res = {k: out[k].detach()[0] for k in ("energy", "force", "virial", "atom_energy")}
        if hasattr(model.atomic_model, "zbl_weight"):
            res["weight"] = model.atomic_model.zbl_weight.detach()[0]
        results[name][sys_name] = res
torch.save(results, f"{job['out']}/results.pt")
"""


def _water(data) -> System:
    d = data / "data_3"
    atype = np.loadtxt(d / "type.raw", dtype=int)
    coord = np.load(d / "set.000" / "coord.npy")[0].reshape(-1, 3)
    cell = np.load(d / "set.000" / "box.npy")[0].reshape(3, 3)
    return System(coord=coord, atype=atype, cell=cell)


def _systems(data) -> dict[str, System]:
    cluster = random_system(10, 2, None, extent=2.2, min_dist=0.45, seed=5)
    return {"water": _water(data), "cluster": cluster}


D3 = "/work/shared/data/tables/dftd3.txt"
# linear_ener: a DPA-1 model plus the D3 table with a larger cutoff (weights as the example)
LINEAR = {"d3-sum": "sum", "d3-list": [0.7, 1.3], "two-dp-d3": [0.6, 1.0, 0.9]}


def _params(name: str) -> dict:
    if name in LINEAR:
        dp = {"descriptor": CASES["dpa1"], "fitting_net": FIT}
        table = {"type": "pairtab", "tab_file": D3, "rcut": 6.0, "sel": 200}
        models = [dp, table]
        if name == "two-dp-d3":  # a second DP model after the table (the members' order)
            models.append({"descriptor": CASES["dpa1-tebd-concat"], "fitting_net": FIT})
        return {"type": "linear_ener", "weights": LINEAR[name], "type_map": ["O", "H"],
                "models": models}
    return {"type_map": ["O", "H"], "use_srtab": TABLE, **ZBL, "descriptor": CASES[name],
            "fitting_net": FIT}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    data = require_reference()
    out = tmp_path_factory.mktemp("zbl_reference")
    systems = {}
    for name, s in _systems(data).items():
        check_sel_not_saturated(s, RCUT, [90], 2)
        cell = None if not s.periodic else np.asarray(s.cell).reshape(3, 3).tolist()
        systems[name] = {"coord": s.coord.tolist(), "atype": s.atype.tolist(), "cell": cell}
    job = {"out": str(out), "cases": {n: _params(n) for n in [*CASES, *LINEAR]}, "systems": systems}
    (out / "job.json").write_text(json.dumps(job))
    return data, out, run_reference_job(out, _SCRIPT)


@pytest.mark.parametrize("case", list(LINEAR))
def test_linear_matches_reference(reference, case):
    data, out, results = reference
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    assert type(model).__name__ == "LinearEnergyModel" and model.rcut == 6.0
    assert float(model.pair_tables[0].out_bias.abs().sum()) > 0
    assert len(model.dp_models) == (1 if case == "two-dp-d3" else 0)
    for sys_name, system in _systems(data).items():
        got = predict(model, system)
        want = {k: v.numpy() for k, v in results[case][sys_name].items()}
        for name in ("energy", "force", "virial", "atom_energy"):
            assert_close(f"{case}/{sys_name} {name}", np.ravel(got[name]),
                         np.ravel(want[name]), 1e-10, 1e-10)


def test_pair_table_matches_reference(reference):
    """The spline coefficients built from the table file are the reference's."""
    from lamkit.model.pair_tab import read_pair_table

    _, out, _ = reference
    sd = torch.load(out / "dpa1.pt", weights_only=False)["model"]
    info, data = read_pair_table(TABLE, RCUT)
    key = "model.Default.atomic_model.models.1."
    np.testing.assert_array_equal(info, sd[key + "tab_info"].numpy())
    ref = sd[key + "tab_data"].numpy()
    assert np.abs(data - ref).max() <= 1e-12 * np.abs(ref).max()


@pytest.mark.parametrize("case", list(CASES))
def test_zbl_matches_reference(reference, case):
    data, out, results = reference
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    assert type(model).__name__ == "ZBLEnergyModel"
    assert float(model.tab_out_bias.abs().sum()) > 0 and float(model.dp_out_bias.abs().sum()) > 0
    for sys_name, system in _systems(data).items():
        got = predict(model, system)
        want = {k: v.numpy() for k, v in results[case][sys_name].items()}
        w = want["weight"]
        assert ((w > 0) & (w < 1)).any()  # some atoms lie inside the switching region
        for name in ("energy", "force", "virial", "atom_energy"):
            assert_close(f"{case}/{sys_name} {name}", np.ravel(got[name]),
                         np.ravel(want[name]), 1e-10, 1e-10)


def test_lamkit_models_convert_to_deepmd_and_back():
    """lam convert's writer lays out ZBL and linear_ener models as the reference's get_model
    does (every name is mapped, no tensor left over); reading the file back gives the model."""
    require_reference()
    from lamkit.interop.to_deepmd import deepmd_checkpoint

    from .zbl_models import linear_model, zbl_model

    system = random_system(8, 2, np.eye(3) * 6.0, min_dist=0.7, seed=3)
    for model in (zbl_model(), linear_model(), linear_model(second_dp=True)):
        back = load_deepmd_checkpoint(deepmd_checkpoint({"m": model}, False))
        want, got = predict(model, system), predict(back, system)
        for name in ("energy", "force", "virial"):
            np.testing.assert_array_equal(got[name], want[name])
