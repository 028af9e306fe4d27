"""Spin models: parity with the reference DeePMD-kit 3.2 (PyTorch backend) on the same weights.

One subprocess builds the reference's spin energy model (``deepmd.pt.model.model.get_model``
with a ``spin`` section, normalised by its argcheck as ``dp train`` does) for each case below
(se_e2_a, DPA-1, DPA-2 and DPA-3 backbones), with random normalisation statistics and output
bias, saves it as a DeePMD-kit checkpoint and evaluates it (energy, force, magnetic force,
magnetic mask, virial, atomic energy and virial) on a periodic triclinic system, a larger
periodic box with a non-magnetic type and a non-periodic cluster, with random spins. lamkit
reads each checkpoint with its DeePMD-kit reader and must give the same numbers to 1e-10
(float64); its DeePMD-kit writer (``lam convert --to deepmd``) must give the checkpoints back
tensor for tensor. Every ``sel`` is above the neighbour counts of the doubled system: from a
saturated list the two codes may keep different ones of equally distant neighbours (a
placeholder sits on its atom). Skipped without the reference (a failure in CI).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.model.spin import SpinEnergyModel
from lamkit.testing import standard_system
from lamkit.testing.physics import assert_close
from lamkit.testing.reference_job import run_reference_job
from lamkit.testing.systems import System, random_system

from .conftest import require_reference

pytestmark = pytest.mark.reference

TYPE_MAP = ["Ni", "O", "Fe"]
RCUT = 4.0
FITTING = {"neuron": [16, 16], "resnet_dt": True, "precision": "float64", "seed": 1}
SEA = {"type": "se_e2_a", "sel": [40, 40, 40], "rcut": RCUT, "rcut_smth": 3.2,
       "neuron": [4, 8, 16], "axis_neuron": 4, "precision": "float64", "seed": 1}
DPA1 = {"type": "se_atten", "sel": 80, "rcut": RCUT, "rcut_smth": 3.2, "neuron": [4, 8, 16],
        "axis_neuron": 4, "attn": 8, "attn_layer": 1, "tebd_dim": 4, "precision": "float64",
        "seed": 1}
DPA2 = {"type": "dpa2", "precision": "float64", "seed": 1,
        "repinit": {"rcut": RCUT, "rcut_smth": 0.5, "nsel": 80, "neuron": [4, 8],
                    "axis_neuron": 4},
        "repformer": {"rcut": 3.0, "rcut_smth": 2.5, "nsel": 40, "nlayers": 2, "g1_dim": 8,
                      "g2_dim": 4, "attn1_hidden": 4, "attn1_nhead": 1, "attn2_hidden": 4,
                      "attn2_nhead": 1, "axis_neuron": 4}}
DPA3 = {"type": "dpa3", "precision": "float64", "seed": 1,
        "repflow": {"n_dim": 8, "e_dim": 8, "a_dim": 4, "nlayers": 2, "e_rcut": RCUT,
                    "e_rcut_smth": 3.2, "e_sel": 160, "a_rcut": 3.0, "a_rcut_smth": 2.5,
                    "a_sel": 100, "axis_neuron": 4}}
# name -> (descriptor, spin section, extra model keys)
CASES = {
    # the spin section of the reference's examples/spin/se_e2_a (one scale per magnetic type)
    "sea-example": (SEA, {"use_spin": [True, False, False], "virtual_scale": [0.314]}, {}),
    "sea-two-magnetic": (
        SEA,
        {"use_spin": ["Ni", "Fe"], "virtual_scale": [0.3, 0.0, 0.45]},
        {"pair_exclude_types": [[1, 1]]},
    ),
    "dpa1-indices": (DPA1, {"use_spin": [0, 2], "virtual_scale": 0.35}, {}),
    "dpa2": (DPA2, {"use_spin": [True, False, False], "virtual_scale": [0.314]}, {}),
    "dpa3": (DPA3, {"use_spin": ["Fe"], "virtual_scale": [0.4]}, {}),
}
SYSTEMS = ("triclinic", "box", "cluster")

_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.pt.model.model import get_model
from deepmd.utils.argcheck import model_args

job = json.load(open(sys.argv[1]))
results = {}
for name, params in job["cases"].items():
    params = model_args().normalize_value(params, trim_pattern="_*")
    model = get_model(json.loads(json.dumps(params)))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            nt = value.shape[0] if value.dim() else 0
            if key.endswith("stddev"):
                value.copy_((0.2 + 0.1 * torch.rand(nt, 1, 1, generator=gen)).expand_as(value))
            elif key.endswith("mean"):
                mean = torch.zeros(nt, 1, value.shape[-1], dtype=value.dtype)
                mean[..., 0] = 0.03 + 0.05 * torch.rand(nt, 1, generator=gen)
                value.copy_(mean.expand_as(value))
            elif key.endswith("out_bias"):
                value.copy_(0.3 * torch.randn(value.shape, generator=gen, dtype=value.dtype))
    state = {"_extra_state": {"model_params": params}}
    state.update({"model.Default." + k: v for k, v in model.state_dict().items()
                  if not k.startswith("_extra")})
    torch.save({"model": state}, f"{job['out']}/{name}.pt")
    results[name] = {}
    for sys_name, s in job["systems"].items():
        coord = torch.tensor(s["coord"], dtype=torch.float64)[None]
        atype = torch.tensor(s["atype"])[None]
        spin = torch.tensor(s["spin"], dtype=torch.float64)[None]
        box = None if s["cell"] is None else torch.tensor(s["cell"], dtype=torch.float64)
        out = model(coord, atype, spin, box=None if box is None else box.reshape(1, 9),
                    do_atomic_virial=True)
        results[name][sys_name] = {k: v.detach()[0] for k, v in out.items()}
torch.save(results, f"{job['out']}/results.pt")
"""


def _params(name: str) -> dict:
    desc, spin, extra = CASES[name]
    return {
        "type_map": TYPE_MAP,
        "descriptor": copy.deepcopy(desc),
        "fitting_net": copy.deepcopy(FITTING),
        "spin": copy.deepcopy(spin),
        **copy.deepcopy(extra),
    }


def _systems() -> dict[str, tuple[System, np.ndarray]]:
    rng = np.random.default_rng(11)
    out = {}
    for name in SYSTEMS:
        if name == "box":  # 16 atoms, every type, in a cell wider than the cutoff
            s = random_system(16, len(TYPE_MAP), np.eye(3) * 1.4 * RCUT, min_dist=1.2, seed=5)
        else:
            s = standard_system(name, len(TYPE_MAP), RCUT, seed=7)
        out[name] = (s, rng.normal(scale=1.5, size=(s.nloc, 3)))
    return out


def spin_predict(model: SpinEnergyModel, system: System, spin: np.ndarray) -> dict:
    coord = torch.tensor(system.coord)[None]
    atype = torch.tensor(system.atype)[None]
    box = None if system.cell is None else torch.tensor(system.cell).reshape(1, 9)
    out = model.evaluate(coord, atype, box, spin=torch.tensor(spin)[None], do_atomic_virial=True)
    return {k: v.detach()[0].double().numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("spin_reference")
    systems = {}
    for name, (s, spin) in _systems().items():
        cell = None if s.cell is None else s.cell.tolist()
        systems[name] = {
            "coord": s.coord.tolist(), "atype": s.atype.tolist(), "cell": cell,
            "spin": spin.tolist(),
        }
    job = {"out": str(out), "cases": {n: _params(n) for n in CASES}, "systems": systems}
    (out / "job.json").write_text(json.dumps(job))
    return out, run_reference_job(out, _SCRIPT)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(reference, case):
    out, results = reference
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    assert isinstance(model, SpinEnergyModel)
    assert model.type_map == TYPE_MAP
    for sys_name, (system, spin) in _systems().items():
        got = spin_predict(model, system, spin)
        want = {k: v.numpy() for k, v in results[case][sys_name].items()}
        tag = f"{case}/{sys_name}"
        assert np.abs(want["force_mag"]).max() > 1e-5  # magnetic forces are not trivially zero
        assert (got[keys.MASK_MAG].reshape(-1) == want["mask_mag"].reshape(-1)).all(), tag
        for name in ("energy", "force", "force_mag", "virial", "atom_energy", "atom_virial"):
            assert_close(f"{tag} {name}", np.ravel(got[name]), np.ravel(want[name]), 1e-10)


@pytest.mark.parametrize("case", ["sea-two-magnetic", "dpa1-indices"])
def test_converted_back_to_reference(reference, case):
    """``lam convert --to deepmd``'s writer gives back every tensor of the reference spin
    checkpoint that lamkit read (names, shapes, dtypes and values)."""
    from lamkit.interop.to_deepmd import deepmd_checkpoint

    out, _ = reference
    original = torch.load(out / f"{case}.pt", weights_only=False)["model"]
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    written = deepmd_checkpoint({"Default": model}, False)["model"]
    names = [k for k in original if k != "_extra_state"]
    assert sorted(names) == sorted(k for k in written if k != "_extra_state")
    for key in names:
        a, b = original[key], written[key]
        assert a.dtype == b.dtype and torch.equal(a, b), key
    assert written["_extra_state"]["model_params"]["spin"]["use_spin"] == model.config["spin"][
        "use_spin"
    ]
