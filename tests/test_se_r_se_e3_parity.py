"""se_e2_r and se_e3 parity with the reference DeePMD-kit 3.2 (PyTorch backend) on the same
weights.

One subprocess builds the reference's energy model (``deepmd.pt.model.model.get_model``) for
each option set below, with random normalisation statistics (per type, as computed from data)
and output bias, saves it as a DeePMD-kit checkpoint (``{"model": state dict with
_extra_state.model_params}``) and evaluates it on a periodic triclinic three-type system and a
non-periodic cluster. lamkit loads each checkpoint with its DeePMD-kit reader and must
reproduce energies, forces, virials, atomic energies and the descriptor output to 1e-10
(float64; the float32 cases to 1e-5). The reference normalises each config with its argcheck
first, as ``dp train`` does (defaults and aliases). lamkit's DeePMD-kit writer must give the
checkpoints back tensor for tensor, and the resolved ``sel``, davg/dstd and energy bias of the
reference's two water examples (``dp --pt train``, 0 steps) must be lamkit's. Skipped without
the reference (a failure in CI).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.testing import standard_system
from lamkit.testing.neighbors import check_sel_not_saturated
from lamkit.testing.physics import assert_close, predict
from lamkit.testing.reference_job import run_reference_job

from .conftest import require_reference

pytestmark = pytest.mark.reference

TYPE_MAP = ["O", "H", "C"]
RCUT = 4.0
SEL = [24, 24, 24]
FITTING = {"neuron": [16, 16], "precision": "float64", "seed": 1}
# name -> (descriptor options, fitting options); argcheck defaults otherwise
CASES = {
    "r-default": ({"type": "se_e2_r"}, {}),
    # the options of the reference's examples/water/se_e2_r/input.json (smaller fitting)
    "r-example": (
        {"type": "se_e2_r", "neuron": [5, 10, 20], "resnet_dt": False},
        {"resnet_dt": True},
    ),
    "r-alias-exclude-resnet": (
        {
            "type": "se_r",
            "neuron": [4, 8, 16],
            "resnet_dt": True,
            "exclude_types": [[0, 1]],
            "env_protection": 0.01,
            "activation_function": "gelu",
        },
        {},
    ),
    "r-float32": ({"type": "se_e2_r", "precision": "float32"}, {"precision": "float32"}),
    "t-default": ({"type": "se_e3"}, {}),
    "t-alias-3be": ({"type": "se_a_3be", "activation_function": "gelu"}, {}),
    # the options of the reference's examples/water/se_e3/input.json (smaller fitting)
    "t-example": (
        {"type": "se_e3", "neuron": [2, 4, 8], "resnet_dt": False},
        {"resnet_dt": True},
    ),
    "t-alias-exclude-resnet": (
        {
            "type": "se_at",
            "neuron": [4, 8, 16],
            "resnet_dt": True,
            "exclude_types": [[1, 2]],
            "env_protection": 0.01,
        },
        {},
    ),
    "t-float32": ({"type": "se_t", "precision": "float32"}, {"precision": "float32"}),
}
TOLERANCE = {"r-float32": (1e-5, 1e-6), "t-float32": (1e-5, 1e-6)}
SYSTEMS = ("triclinic", "cluster")

# the reference side: argv = job json; writes <name>.pt checkpoints and results.pt
_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.pt.model.model import get_model
from deepmd.utils.argcheck import model_args

job = json.load(open(sys.argv[1]))
results = {}
for name, params in job["cases"].items():
    # normalised as ``dp train`` does: argcheck's defaults and aliases
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
    desc, fit = CASES[name]
    descriptor = {"sel": SEL, "rcut": RCUT, "rcut_smth": 3.0, "precision": "float64", "seed": 1}
    return {
        "type_map": TYPE_MAP,
        "descriptor": {**descriptor, **copy.deepcopy(desc)},
        "fitting_net": {**FITTING, **fit},
    }


def _systems():
    return {name: standard_system(name, len(TYPE_MAP), RCUT, seed=7) for name in SYSTEMS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("se_r_se_e3_reference")
    systems = {}
    for name, s in _systems().items():
        check_sel_not_saturated(s, RCUT, SEL, len(TYPE_MAP))
        cell = None if not s.periodic else np.asarray(s.cell).reshape(3, 3).tolist()
        systems[name] = {"coord": s.coord.tolist(), "atype": s.atype.tolist(), "cell": cell}
    job = {"out": str(out), "cases": {n: _params(n) for n in CASES}, "systems": systems}
    (out / "job.json").write_text(json.dumps(job))
    return out, run_reference_job(out, _SCRIPT)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(reference, case):
    out, results = reference
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    want_cls = "SeR" if case.startswith("r-") else "SeT"
    assert model.descriptor.__class__.__name__ == want_cls
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


@pytest.mark.parametrize("case", ["r-alias-exclude-resnet", "t-alias-exclude-resnet", "t-float32"])
def test_converted_back_to_reference(reference, case):
    """``lam convert --to deepmd``'s writer gives back every tensor of the reference checkpoint
    that lamkit read (names, shapes, dtypes and values)."""
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


# --- statistics and sel of the reference's own examples, computed by ``dp --pt train`` -------
@pytest.mark.parametrize("name", ["se_e2_r", "se_e3"])
def test_example_statistics_match_reference(name, tmp_path):
    """The example models (examples/water/se_e2_r and se_e3) set up by ``dp --pt train`` with 0
    steps on the first 4 frames of water data_0 (every frame enters the statistics): the
    resolved ``sel`` (se_e3 has "auto"), davg/dstd and the energy bias are lamkit's."""
    from lamkit.train import Trainer

    from .reference_finetune import run_reference, subset_system
    from .water_examples import EXAMPLE_MODELS

    water = require_reference()
    data = subset_system(water / "data_0", tmp_path / "data", 4)
    conf = {
        "model": {**copy.deepcopy(EXAMPLE_MODELS[name]), "data_stat_nbatch": 100},
        "learning_rate": {"type": "exp", "decay_steps": 5000, "start_lr": 1e-3, "stop_lr": 1e-8},
        "loss": {"type": "ener"},
        "training": {
            "training_data": {"systems": [str(data)], "batch_size": 1},
            "numb_steps": 0,
            "seed": 1,
            "disp_freq": 100,
            "save_freq": 1000,
        },
    }
    (tmp_path / "input.json").write_text(json.dumps(conf))
    skip = ["--skip-neighbor-stat"] if name == "se_e2_r" else []  # fixed sel there
    run_reference(["train", "input.json", *skip], tmp_path)
    ref = load_deepmd_checkpoint(tmp_path / "model.ckpt-0.pt")
    own = Trainer(copy.deepcopy(conf), tmp_path / "lam").model
    assert own.descriptor.sel == ref.descriptor.sel
    assert (ref.descriptor.davg[:, 0] > 0).all() and (ref.descriptor.dstd != 1).all()
    for key in ("davg", "dstd"):
        want = getattr(ref.descriptor, key).detach().numpy()
        assert_close(f"{name} {key}", getattr(own.descriptor, key).detach().numpy(), want, 1e-8)
    assert_close(f"{name} out_bias", own.out_bias.detach().numpy(), ref.out_bias.numpy(), 1e-8)
