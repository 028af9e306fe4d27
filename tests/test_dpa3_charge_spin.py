"""DPA-3 with ``add_chg_spin_ebd`` (each frame's charge and spin enter the type embedding, as in
the OpenLAM model DPA3-Omol-Large): a DeePMD-kit 3.2 model with random weights, saved as a
checkpoint, gives the same energies, forces and virials in lamkit for several charge/spin
pairs; ``default_chg_spin`` stands in when a frame has none; training reads
``set.*/charge_spin.npy``."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from lamkit.infer import DeepPot
from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.testing import standard_system
from lamkit.testing.neighbors import check_sel_not_saturated
from lamkit.testing.reference_job import run_reference_job

from .conftest import require_reference

pytestmark = pytest.mark.reference

TYPE_MAP = ["O", "H", "C"]
RCUT = 4.0
PARAMS = {
    "type_map": TYPE_MAP,
    "descriptor": {
        "type": "dpa3",
        "precision": "float64",
        "seed": 1,
        "add_chg_spin_ebd": True,
        "default_chg_spin": [0, 1],
        "activation_function": "silut:3.0",
        "repflow": {
            "n_dim": 16, "e_dim": 8, "a_dim": 8, "nlayers": 2, "e_rcut": RCUT,
            "e_rcut_smth": 3.5, "e_sel": 64, "a_rcut": 3.0, "a_rcut_smth": 2.5, "a_sel": 32,
            "axis_neuron": 4, "smooth_edge_update": True,
        },
    },
    "fitting_net": {"neuron": [16, 16], "precision": "float64", "seed": 1},
}  # fmt: skip
PAIRS = [[0, 1], [1, 2], [-2, 3]]

_SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
from deepmd.pt.model.model import get_model
job = json.load(open(sys.argv[1]))
params = job["params"]
model = get_model(json.loads(json.dumps(params)))
gen = torch.Generator().manual_seed(4)
with torch.no_grad():
    for key, value in model.state_dict().items():
        if key.endswith("out_bias"):
            value.copy_(0.3 * torch.randn(value.shape, generator=gen, dtype=value.dtype))
state = {"_extra_state": {"model_params": params}}
state.update({"model.Default." + k: v for k, v in model.state_dict().items()
              if not k.startswith("_extra")})
torch.save({"model": state}, f"{job['out']}/model.pt")
s = job["system"]
coord = torch.tensor(s["coord"], dtype=torch.float64)[None]
atype = torch.tensor(s["atype"])[None]
box = torch.tensor(s["cell"], dtype=torch.float64).reshape(1, 9)
out = {}
for cs in job["pairs"]:
    res = model(coord, atype, box=box, charge_spin=torch.tensor([cs], dtype=torch.float64))
    out[str(cs)] = {k: res[k].detach()[0] for k in ("energy", "force", "virial")}
torch.save(out, f"{job['out']}/results.pt")
"""


def _system():
    s = standard_system("triclinic", len(TYPE_MAP), RCUT, seed=4)
    check_sel_not_saturated(s, RCUT, [64], len(TYPE_MAP))
    return s


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    require_reference()
    out = tmp_path_factory.mktemp("dpa3_charge_spin")
    s = _system()
    system = {"coord": s.coord.tolist(), "atype": s.atype.tolist(),
              "cell": np.asarray(s.cell).reshape(9).tolist()}  # fmt: skip
    job = {"out": str(out), "params": PARAMS, "system": system, "pairs": PAIRS}
    (out / "job.json").write_text(json.dumps(job))
    return out, run_reference_job(out, _SCRIPT)


def test_charge_and_spin_match_the_reference(reference):
    out, results = reference
    dp = DeepPot(str(out / "model.pt"))
    s = _system()
    cell = np.asarray(s.cell).reshape(1, 9)
    energies = []
    for cs in PAIRS:
        e, f, v = dp.eval(s.coord.reshape(1, -1), cell, s.atype, charge_spin=[cs])[:3]
        want = {k: t.numpy() for k, t in results[str(cs)].items()}
        for got, key in ((e, "energy"), (f, "force"), (v, "virial")):
            np.testing.assert_allclose(np.ravel(got), np.ravel(want[key]), rtol=1e-10, atol=1e-12)
        energies.append(float(e.ravel()[0]))
    assert len({round(x, 8) for x in energies}) == len(PAIRS)  # the input matters
    default = dp.eval(s.coord.reshape(1, -1), cell, s.atype)[0]  # default_chg_spin [0, 1]
    np.testing.assert_allclose(default.ravel(), results[str(PAIRS[0])]["energy"].numpy().ravel())


def test_out_of_range_charge_is_refused(reference):
    out, _ = reference
    model = load_deepmd_checkpoint(out / "model.pt")
    s = _system()
    with pytest.raises(ValueError, match=r"charge must lie in \[-100, 99\]"):
        model.evaluate(
            torch.tensor(s.coord)[None], torch.tensor(s.atype)[None],
            torch.tensor(np.asarray(s.cell).reshape(1, 9)),
            charge_spin=torch.tensor([[150.0, 1.0]]),
        )  # fmt: skip


def test_training_reads_charge_spin_files(example_dir, tmp_path):
    from lamkit.data.writer import write_deepmd_system
    from lamkit.train import Trainer

    from .train_inputs import example_config

    rng = np.random.default_rng(0)
    systems = []
    for k, cs in enumerate(([0, 1], [1, 2])):
        coords = rng.uniform(0, 5, (4, 5, 3))
        labels = {"energy": rng.normal(-20, 1, 4), "force": rng.normal(0, 1, (4, 5, 3)),
                  "charge_spin": np.tile(cs, (4, 1))}  # fmt: skip
        box = np.tile(np.diag([5.0, 5.0, 5.0]).reshape(1, 9), (4, 1))
        systems.append(write_deepmd_system(tmp_path / f"s{k}", coords, [0, 1, 1, 0, 1],
                                           ["Cu", "Au"], box, labels))  # fmt: skip
    conf = example_config(example_dir, steps=2)
    plain = conf["training"]["training_data"]["systems"]  # no charge_spin.npy
    desc = copy.deepcopy(PARAMS["descriptor"])
    desc.pop("default_chg_spin")
    desc["precision"] = "float64"
    conf["model"]["descriptor"] = desc
    conf["training"]["training_data"]["systems"] = [str(s) for s in systems]
    conf["training"]["validation_data"]["systems"] = [str(systems[0])]
    t = Trainer(conf, tmp_path / "run")
    t.run()
    assert (tmp_path / "run" / "model.ckpt-2.pt").exists()
    conf["training"]["training_data"]["systems"] = plain
    with pytest.raises(Exception, match="charge_spin"):
        Trainer(conf, tmp_path / "run2")  # no charge_spin.npy and no default_chg_spin


def test_ase_calculator_reads_charge_and_spin_from_atoms_info(reference):
    from ase import Atoms

    from lamkit.infer import LamCalculator

    out, results = reference
    s = _system()
    atoms = Atoms([TYPE_MAP[t] for t in s.atype], positions=s.coord, cell=s.cell, pbc=True)
    atoms.calc = LamCalculator(str(out / "model.pt"))
    atoms.info.update(charge=1, spin=2)
    want = results[str([1, 2])]["energy"].numpy().ravel()[0]
    assert atoms.get_potential_energy() == pytest.approx(want, rel=1e-10)
