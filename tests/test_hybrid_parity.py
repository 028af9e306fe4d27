"""hybrid descriptor parity with the reference DeePMD-kit 3.2 (PyTorch backend), same weights.

One subprocess builds the reference's energy model for each list of sub-descriptors below with
random statistics and output bias, saves it as a DeePMD-kit checkpoint and evaluates it on a
periodic triclinic three-type system and a non-periodic cluster. lamkit loads each checkpoint
with its DeePMD-kit reader and must reproduce energies, forces, virials, atomic energies and
the concatenated descriptor to 1e-10 (float64). The cases cover a type-sorted list (se_e2_a +
se_e2_r with different cutoffs), a mixed list (dpa1 + se_e3_tebd), the reference's
examples/water/hybrid mix (se_e2_a, se_e2_r and se_atten: type-sorted descriptors inside a
mixed list) and a message-passing DPA-3 next to se_e2_a. A slow test trains the water/hybrid
mix with ``dp --pt train`` on 4 water frames and compares lamkit's statistics of every
sub-descriptor and the checkpoint's predictions with it.
Skipped without the reference (a failure in CI).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.testing import standard_system
from lamkit.testing.physics import assert_close, predict
from lamkit.testing.reference_job import run_reference_job

from .conftest import require_reference

pytestmark = pytest.mark.reference

TYPE_MAP = ["O", "H", "C"]
RCUT = 5.0
F64 = {"precision": "float64", "seed": 1}
SEA = {
    "type": "se_e2_a",
    "rcut": 3.5,
    "rcut_smth": 0.5,
    "sel": [6, 8, 5],
    "neuron": [4, 8],
    "axis_neuron": 2,
    **F64,
}
SER = {
    "type": "se_e2_r",
    "rcut": RCUT,
    "rcut_smth": 1.0,
    "sel": [12, 14, 10],
    "neuron": [4, 6],
    **F64,
}
DPA1 = {
    "type": "dpa1",
    "rcut": 4.0,
    "rcut_smth": 1.5,
    "sel": 14,
    "neuron": [4, 8],
    "axis_neuron": 2,
    "attn": 8,
    "attn_layer": 1,
    "tebd_dim": 4,
    **F64,
}
TEBD3 = {
    "type": "se_e3_tebd",
    "rcut": RCUT,
    "rcut_smth": 2.0,
    "sel": 30,
    "neuron": [4, 6],
    "tebd_dim": 4,
    **F64,
}
ATTEN0 = {
    "type": "se_atten",
    "attn_layer": 0,
    "rcut": RCUT,
    "rcut_smth": 0.5,
    "sel": 36,
    "neuron": [4, 6],
    "tebd_dim": 4,
    **F64,
}
DPA3 = {
    "type": "dpa3",
    "repflow": {
        "n_dim": 8,
        "e_dim": 6,
        "a_dim": 4,
        "nlayers": 2,
        "e_rcut": RCUT,
        "e_rcut_smth": 4.0,
        "e_sel": 40,
        "a_rcut": 3.5,
        "a_rcut_smth": 3.0,
        "a_sel": 20,
        "axis_neuron": 2,
        "smooth_edge_update": True,
    },
    **F64,
}
CASES = {
    "sorted": [SEA, SER],
    "mixed": [DPA1, TEBD3],
    "water-example-mix": [SEA, SER, ATTEN0],
    "message-passing": [DPA3, SEA],
}
SYSTEMS = ("triclinic", "cluster")

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
            if key.endswith("stddev"):
                value.copy_((0.2 + 0.1 * torch.rand(value.shape[0], 1, value.shape[2],
                             generator=gen)).expand_as(value))
            elif key.endswith("mean") and "se_ttebd" not in key:
                value.copy_((0.1 * torch.rand(value.shape[0], 1, value.shape[2],
                             generator=gen)).expand_as(value))
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
        out = model(coord, atype, box=None if box is None else box.reshape(1, 9))
        res = {k: out[k].detach()[0] for k in ("energy", "force", "virial", "atom_energy")}
        res["descriptor"] = seen[0][0]
        results[name][sys_name] = res
torch.save(results, f"{job['out']}/results.pt")
"""


def _params(name: str) -> dict:
    return {
        "type_map": TYPE_MAP,
        "descriptor": {"type": "hybrid", "list": [dict(d) for d in CASES[name]]},
        "fitting_net": {"neuron": [8, 8], **F64},
    }


def _systems():
    return {name: standard_system(name, len(TYPE_MAP), RCUT, seed=7) for name in SYSTEMS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("hybrid_reference")
    systems = {}
    for name, s in _systems().items():
        cell = None if not s.periodic else np.asarray(s.cell).reshape(3, 3).tolist()
        systems[name] = {"coord": s.coord.tolist(), "atype": s.atype.tolist(), "cell": cell}
    job = {"out": str(out), "cases": {n: _params(n) for n in CASES}, "systems": systems}
    (out / "job.json").write_text(json.dumps(job))
    return out, run_reference_job(out, _SCRIPT)


@pytest.mark.parametrize("case", list(CASES))
def test_hybrid_matches_reference(reference, case):
    out, results = reference
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    desc = model.descriptor
    assert type(desc).__name__ == "DescrptHybrid" and len(desc.descrpt_list) == len(CASES[case])
    assert desc.mixed_types == any(d.mixed_types for d in desc.descrpt_list)
    seen = []
    desc.register_forward_hook(lambda mod, inp, res: seen.append(res[keys.DESCRIPTOR].detach()))
    for sys_name, system in _systems().items():
        seen.clear()
        got = predict(model, system)
        want = {k: v.numpy() for k, v in results[case][sys_name].items()}
        tag = f"{case}/{sys_name}"
        assert np.abs(want["force"]).max() > 1e-4  # the forces are not trivially zero
        for name in ("energy", "force", "virial", "atom_energy"):
            assert_close(f"{tag} {name}", np.ravel(got[name]), np.ravel(want[name]), 1e-10, 1e-12)
        assert_close(f"{tag} descriptor", seen[0][0].numpy(), want["descriptor"], 1e-10, 1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_hybrid_round_trip_to_deepmd(reference, case):
    """lamkit -> DeePMD-kit checkpoint: every reference entry the reader uses comes back with
    the reference's value (the writer lays the file out with the reference's own model)."""
    from lamkit.interop.to_deepmd import deepmd_checkpoint

    out, _ = reference
    original = torch.load(out / f"{case}.pt", weights_only=False)["model"]
    model = load_deepmd_checkpoint(out / f"{case}.pt")
    written = deepmd_checkpoint({"Default": model}, multi_task=False)["model"]
    compared = 0
    for name, value in original.items():
        if name.startswith("_extra") or "descrpt_list" not in name:
            continue
        if "._networks." in name or ".compress_" in name or "type_embd_data" in name:
            continue
        torch.testing.assert_close(written[name], value, rtol=0, atol=0, msg=name)
        compared += 1
    assert compared > 10
    reread = load_deepmd_checkpoint({"model": written})
    sys_ = _systems()["triclinic"]
    a, b = predict(reread, sys_), predict(model, sys_)
    for name in ("energy", "force", "virial"):
        assert_close(f"{case} reread {name}", np.ravel(a[name]), np.ravel(b[name]), 1e-12, 1e-14)


# --- a checkpoint written by ``dp --pt train`` on water data_0: statistics and predictions ----
def _trained_config() -> dict:
    from .conftest import energy_input
    from .reference_runs import WATER

    subs = [
        {
            "type": "se_e2_a",
            "rcut": 4.0,
            "rcut_smth": 0.5,
            "sel": [20, 40],
            "neuron": [4, 8],
            "axis_neuron": 2,
            "set_davg_zero": False,
            **F64,
        },
        {
            "type": "se_e2_r",
            "rcut": 6.0,
            "rcut_smth": 0.5,
            "sel": [46, 92],
            "neuron": [4, 8],
            **F64,
        },
        {
            "type": "se_atten",
            "attn_layer": 0,
            "rcut": 6.0,
            "rcut_smth": 0.5,
            "sel": 138,
            "neuron": [4, 8],
            "axis_neuron": 2,
            "tebd_dim": 4,
            "set_davg_zero": False,
            **F64,
        },
    ]
    model = {
        "type_map": ["O", "H"],
        "descriptor": {"type": "hybrid", "list": subs},
        "fitting_net": {"neuron": [16, 16], **F64},
        "data_stat_nbatch": 10,  # >= the 4 frames: every frame, both codes
    }
    small = WATER.parent / "mixed_type_small" / "data_standard"  # 4 water frames: quick stats
    return energy_input(model, [small], 2, valid=[WATER / "data_3"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from .reference_runs import DP, finish_run, start_run

    require_reference()
    wd = tmp_path_factory.mktemp("dp_hybrid")
    (wd / "input.json").write_text(json.dumps(_trained_config(), indent=1))
    finish_run(
        start_run(DP + ["train", "input.json", "--skip-neighbor-stat"], wd, "train.log"),
        wd,
        "train.log",
    )
    return wd / "model.ckpt-2.pt"


@pytest.mark.slow
def test_dp_trained_statistics_and_predictions(trained, tmp_path):
    """davg/dstd of every sub-descriptor from lamkit's Trainer (every frame, as the reference)
    equal the dp-trained checkpoint's; the checkpoint predicts as DeepPot does."""
    import warnings

    from lamkit.train import Trainer

    from .reference_runs import rel_diff, water_frames

    sd = torch.load(str(trained), map_location="cpu", weights_only=False)["model"]
    model = Trainer(_trained_config(), tmp_path).model
    prefix = "model.Default.atomic_model.descriptor.descrpt_list."
    for i, block in enumerate(("sea.", "", "se_atten.")):  # se_e2_r: no block prefix
        d = model.descriptor.descrpt_list[i]
        for ref_key, own in (("mean", d.davg), ("stddev", d.dstd)):
            ref = sd[f"{prefix}{i}.{block}{ref_key}"].numpy()
            got = own.detach().numpy()
            got = np.broadcast_to(got.reshape(got.shape[0], 1, -1), ref.shape)
            assert rel_diff(ref, got) < 1e-10, (block, ref_key, rel_diff(ref, got))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deepmd.infer import DeepPot as RefDeepPot

        coord, box, atype = water_frames(2)
        want = RefDeepPot(str(trained)).eval(coord.reshape(2, -1), box, atype)[:3]
    loaded = load_deepmd_checkpoint(trained)
    out = loaded.evaluate(
        torch.tensor(coord), torch.tensor(np.tile(atype, (2, 1))), torch.tensor(box)
    )
    for name, ref in zip(("energy", "force", "virial"), want):
        got = out[name].detach().numpy()
        assert rel_diff(np.ravel(ref), np.ravel(got)) < 1e-10, name
