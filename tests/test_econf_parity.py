"""``use_econf_tebd`` (electronic-configuration type embedding) in DPA-1, DPA-2 and se_e3_tebd:
a DeePMD-kit 3.2 model with random weights, saved as a checkpoint, gives the same energies,
forces and virials in lamkit (float64, 1e-10); DPA-3's case is in tests/test_dpa3_parity.py.
Changing the type map of an econf model keeps every weight and moves each element's embedding
with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.model.type_map import change_type_map
from lamkit.testing import standard_system
from lamkit.testing.neighbors import check_sel_not_saturated
from lamkit.testing.physics import assert_close, predict
from lamkit.testing.reference_job import run_reference_job

from .conftest import require_reference

pytestmark = pytest.mark.reference

TYPE_MAP = ["O", "H", "C"]
RCUT = 4.0
DESCRIPTORS = {
    "dpa1": {
        "type": "dpa1",
        "sel": 64,
        "rcut": RCUT,
        "rcut_smth": 0.5,
        "neuron": [6, 12],
        "axis_neuron": 4,
        "attn": 8,
        "attn_layer": 1,
        "smooth_type_embedding": False,  # the schema's default (the reference's class says True)
        "tebd_dim": 8,
        "use_econf_tebd": True,
    },
    "dpa2": {
        "type": "dpa2",
        "repinit": {
            "rcut": RCUT,
            "rcut_smth": 0.5,
            "nsel": 64,
            "neuron": [6, 12],
            "axis_neuron": 4,
            "tebd_dim": 8,
        },
        "repformer": {
            "rcut": 3.0,
            "rcut_smth": 0.5,
            "nsel": 40,
            "nlayers": 1,
            "g1_dim": 12,
            "g2_dim": 6,
            "attn2_hidden": 4,
            "attn2_nhead": 1,
            "attn1_hidden": 6,
            "attn1_nhead": 1,
            "axis_neuron": 4,
        },
        "use_econf_tebd": True,
    },
    "se_e3_tebd": {
        "type": "se_e3_tebd",
        "sel": 40,
        "rcut": 3.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "tebd_dim": 8,
        "use_econf_tebd": True,
        "use_tebd_bias": True,
    },
}

_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.pt.model.model import get_model
job = json.load(open(sys.argv[1]))
out = {}
for name, params in job["cases"].items():
    model = get_model(json.loads(json.dumps(params)))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("stddev"):
                shape = (value.shape[0], 1, value.shape[-1]) if value.dim() == 3 else value.shape
                draw = 0.3 + 0.1 * torch.rand(shape, generator=gen, dtype=value.dtype)
                value.copy_(draw.expand_as(value))
            elif key.endswith("out_bias"):
                value.copy_(0.3 * torch.randn(value.shape, generator=gen, dtype=value.dtype))
    state = {"_extra_state": {"model_params": params}}
    state.update({"model.Default." + k: v for k, v in model.state_dict().items()
                  if not k.startswith("_extra")})
    torch.save({"model": state}, f"{job['out']}/{name}.pt")
    s = job["system"]
    res = model(torch.tensor(s["coord"], dtype=torch.float64)[None], torch.tensor(s["atype"])[None],
                box=torch.tensor(s["cell"], dtype=torch.float64).reshape(1, 9))
    out[name] = {k: res[k].detach()[0] for k in ("energy", "force", "virial")}
torch.save(out, f"{job['out']}/results.pt")
"""


def _system():
    s = standard_system("triclinic", len(TYPE_MAP), RCUT, seed=3)
    check_sel_not_saturated(s, RCUT, [64], len(TYPE_MAP))
    check_sel_not_saturated(s, 3.0, [40], len(TYPE_MAP))
    return s


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("econf_reference")
    s = _system()
    cases = {
        name: {
            "type_map": TYPE_MAP,
            "descriptor": {**desc, "precision": "float64", "seed": 1},
            "fitting_net": {"neuron": [8, 8], "precision": "float64", "seed": 2},
        }
        for name, desc in DESCRIPTORS.items()
    }
    system = {
        "coord": s.coord.tolist(),
        "atype": s.atype.tolist(),
        "cell": np.asarray(s.cell).reshape(9).tolist(),
    }
    (out / "job.json").write_text(json.dumps({"out": str(out), "cases": cases, "system": system}))
    return out, run_reference_job(out, _SCRIPT)


@pytest.mark.parametrize("name", list(DESCRIPTORS))
def test_econf_models_match_the_reference(reference, name):
    out, results = reference
    model = load_deepmd_checkpoint(out / f"{name}.pt")
    assert model.descriptor.type_embedding.econf
    got = predict(model, _system())
    want = {k: v.numpy() for k, v in results[name].items()}
    assert np.abs(want["force"]).max() > 1e-4
    for key in ("energy", "force", "virial"):
        assert_close(f"{name} {key}", np.ravel(got[key]), np.ravel(want[key]), 1e-10, 1e-12)


def test_changing_the_type_map_of_an_econf_model_keeps_the_physics(reference):
    out, _ = reference
    model = load_deepmd_checkpoint(out / "dpa1.pt")
    new = change_type_map(model, ["C", "N", "O", "H"])  # reordered, N added
    assert new.descriptor.type_embedding.net.layers[0].matrix.shape == (118, 8)
    s = _system()
    index = np.array([new.type_map.index(t) for t in TYPE_MAP])
    import dataclasses

    a = predict(model, s)
    b = predict(new, dataclasses.replace(s, atype=index[s.atype]))
    for key in ("energy", "force", "virial"):
        assert_close(f"type map {key}", np.ravel(b[key]), np.ravel(a[key]), 1e-12, 1e-13)
    table = new.descriptor.type_embedding.table()
    assert torch.all(table[1] != 0)  # N gets its econf embedding from the shared weights
