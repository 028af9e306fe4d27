"""``lam convert``: lamkit models as DeePMD-kit v3 checkpoints and back.

Tiny lamkit models of every kind both sides support are converted; the reference's own
``deepmd.infer`` classes (in a subprocess) must give lamkit's numbers on real water frames, and
``dp --pt test`` lamkit's ``lam test`` RMSEs. A checkpoint written by ``dp --pt train`` survives
DeePMD-kit -> lamkit -> DeePMD-kit bit for bit, and so does a multi-task one.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lamkit.cli.main import main as lam_main
from lamkit.errors import LamkitError
from lamkit.infer import DeepDipole, DeepPolar, DeepPot, DeepProperty
from lamkit.interop.convert import convert
from lamkit.model import build_model
from lamkit.model.io import atomic_save, model_payload, save_model
from lamkit.model.multitask import MultiTaskModel
from lamkit.testing.models import randomize_statistics

from .conftest import energy_input, require_reference
from .reference_finetune import DESCRIPTOR as DPA2_DESCRIPTOR
from .reference_finetune import reference_env, run_reference, subset_system

pytestmark = [pytest.mark.reference, pytest.mark.usefixtures("one_thread")]

NFRAMES = 2
RTOL = 1e-10
TYPE_MAP = ["O", "H"]
SE_A = {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 2, "seed": 1}
DPA1 = {"type": "dpa1", "sel": 40, "rcut": 4.0, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 2, "tebd_dim": 4, "attn": 8, "attn_layer": 1, "seed": 1}
SE_T = {"type": "se_e3_tebd", "sel": 10, "rcut": 3.0, "rcut_smth": 0.5, "neuron": [4, 8],
        "tebd_dim": 4, "seed": 1}
DPA2 = copy.deepcopy(DPA2_DESCRIPTOR)
DPA3 = {"type": "dpa3", "seed": 1, "repflow": {
    "n_dim": 8, "e_dim": 6, "a_dim": 4, "nlayers": 2, "e_rcut": 4.0, "e_rcut_smth": 3.0,
    "e_sel": 48, "a_rcut": 3.0, "a_rcut_smth": 2.0, "a_sel": 40, "axis_neuron": 2,
    "smooth_edge_update": True}}
FIT = {"neuron": [8, 8], "seed": 2}
# name -> (descriptor, fitting, reference/lamkit evaluator class name)
KINDS = {
    "se_e2_a": (SE_A, FIT, "DeepPot"),
    "se_e2_a_fparam": (SE_A, {**FIT, "numb_fparam": 1, "numb_aparam": 1}, "DeepPot"),
    "dpa1": (DPA1, FIT, "DeepPot"),
    "dpa2": (DPA2, FIT, "DeepPot"),
    "se_e3_tebd": (SE_T, FIT, "DeepPot"),
    "dpa3": (DPA3, FIT, "DeepPot"),
    "dipole": (SE_A, {**FIT, "type": "dipole"}, "DeepDipole"),
    "polar": (SE_A, {**FIT, "type": "polar"}, "DeepPolar"),
    "property": (DPA1, {**FIT, "type": "property", "property_name": "band", "task_dim": 3},
                 "DeepProperty"),
}
OWN = {"DeepPot": DeepPot, "DeepDipole": DeepDipole, "DeepPolar": DeepPolar,
       "DeepProperty": DeepProperty}
FROZEN = ["se_e2_a", "dpa2", "dpa3"]  # also through dp --pt freeze
MULTI = {"a": (SE_A, FIT), "b": (DPA1, {**FIT, "seed": 3})}
DP = [sys.executable, "-m", "deepmd", "--pt"]

# The reference side: evaluates each job's .pt with deepmd.infer, writes one .npz per job.
REF_EVAL = """
import json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
from deepmd.infer.deep_pot import DeepPot
from deepmd.infer.deep_dipole import DeepDipole
from deepmd.infer.deep_polar import DeepPolar
from deepmd.infer.deep_property import DeepProperty
jobs = json.load(open(sys.argv[1]))
for job in jobs:
    x = np.load(job["frames"])
    cls = {"DeepPot": DeepPot, "DeepDipole": DeepDipole, "DeepPolar": DeepPolar,
           "DeepProperty": DeepProperty}[job["cls"]]
    model = job["model"]
    if job.get("freeze"):  # dp --pt freeze: a TorchScript .pth, as LAMMPS loads it
        from deepmd.pt.entrypoints.main import freeze
        freeze(model=model, output=job["freeze"])
        model = job["freeze"]
    dp = cls(model, head=job.get("head"))
    extra = {k: x[k] for k in ("fparam", "aparam") if job.get(k)}
    out = dp.eval(x["coord"], x["box"], x["atype"].tolist(), **extra)
    out = out if isinstance(out, tuple) else (out,)
    np.savez(job["out"], *[np.asarray(o) for o in out])
"""


def _model(descriptor: dict, fitting: dict, seed: int = 0):
    model = build_model({"type_map": TYPE_MAP, "descriptor": descriptor, "fitting_net": fitting})
    randomize_statistics(model, seed=seed)
    if descriptor["type"] == "dpa3":  # the repflow block keeps a zero mean
        model.descriptor.repflows.davg.data.zero_()
    with torch.no_grad():  # non-trivial fparam/aparam statistics where there are any
        for name, buf in model.named_buffers():
            if name.endswith(("_avg", "_inv_std")) and buf.numel():
                buf.copy_(torch.rand_like(buf) + (0.5 if name.endswith("_inv_std") else 0.0))
    return model.double()


def _frames(path: Path, water: Path) -> Path:
    system = water / "data_3"
    atype = np.loadtxt(system / "type.raw", dtype=int)
    coord = np.load(system / "set.000" / "coord.npy")[:NFRAMES]
    box = np.load(system / "set.000" / "box.npy")[:NFRAMES]
    rng = np.random.default_rng(1)
    np.savez(path, coord=coord, box=box, atype=atype, fparam=rng.uniform(size=(NFRAMES, 1)),
             aparam=rng.uniform(size=(NFRAMES, len(atype), 1)))
    return path


def _assert_close(got, want, what: str) -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.size == want.size, f"{what}: shapes {got.shape} vs {want.shape}"
    got, want = got.reshape(want.shape), want
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)
    assert err <= RTOL, f"{what}: relative difference {err:.2e}"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Every kind as a lamkit file and its conversion, the multi-task model too, and the
    reference's predictions for all of them (one subprocess)."""
    water = require_reference()
    root = tmp_path_factory.mktemp("convert")
    frames = _frames(root / "frames.npz", water)
    jobs = []
    for name, (desc, fit, cls) in KINDS.items():
        save_model(_model(desc, fit), root / f"{name}.lam")
        assert convert(root / f"{name}.lam", root / f"{name}.pt") == ("lamkit", "deepmd")
        jobs.append({"model": str(root / f"{name}.pt"), "cls": cls, "frames": str(frames),
                     "out": str(root / f"{name}.ref.npz"), "name": name,
                     "fparam": "fparam" in name, "aparam": "fparam" in name})
    for name in FROZEN:
        jobs.append({**next(j for j in jobs if j["name"] == name),
                     "out": str(root / f"frozen_{name}.ref.npz"),
                     "freeze": str(root / f"frozen_{name}.pth")})
    branches = {h: _model(d, f, seed=i) for i, (h, (d, f)) in enumerate(MULTI.items())}
    atomic_save(model_payload(MultiTaskModel(branches, share=False)), root / "multi.lam")
    convert(root / "multi.lam", root / "multi.pt")
    for head in MULTI:
        jobs.append({"model": str(root / "multi.pt"), "cls": "DeepPot", "frames": str(frames),
                     "out": str(root / f"multi_{head}.ref.npz"), "head": head,
                     "name": f"multi_{head}"})
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "ref_eval.py").write_text(REF_EVAL)
    proc = subprocess.run([sys.executable, "ref_eval.py", "jobs.json"], cwd=root,
                          env=reference_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, frames, water


@pytest.mark.parametrize(
    "name", [*KINDS, *(f"multi_{h}" for h in MULTI), *(f"frozen_{k}" for k in FROZEN)]
)
def test_reference_evaluates_converted_model(work, name):
    root, frames, _ = work
    x = np.load(frames)
    ref = np.load(root / f"{name}.ref.npz")
    name = name.removeprefix("frozen_")
    if name.startswith("multi_"):
        head = name.split("_", 1)[1]
        own = DeepPot(str(root / "multi.lam"), head=head)
    else:
        own = OWN[KINDS[name][2]](str(root / f"{name}.lam"))
        head = None
    extra = {k: x[k] for k in ("fparam", "aparam") if "fparam" in name}
    got = own.eval(x["coord"], x["box"], x["atype"], **extra)
    got = got if isinstance(got, tuple) else (got,)
    want = [ref[f"arr_{i}"] for i in range(len(ref.files))]
    assert len(want) >= 1
    for i, w in enumerate(want[: len(got)]):
        _assert_close(got[i], w, f"{name} output {i}")
    if KINDS.get(name, (None, None, "DeepPot"))[2] == "DeepPot":
        assert len(want) == 3 and np.abs(want[1]).max() > 0  # energy, forces, virial


@pytest.mark.parametrize("name", [*KINDS, "multi"])
def test_lamkit_round_trip(work, tmp_path, name):
    """lamkit -> DeePMD-kit -> lamkit: every tensor and the model config come back unchanged."""
    root, _, _ = work
    convert(root / f"{name}.pt", tmp_path / "back.lam")
    before = torch.load(root / f"{name}.lam", weights_only=False)
    after = torch.load(tmp_path / "back.lam", weights_only=False)
    assert sorted(after["model_state"]) == sorted(before["model_state"])
    for key, value in before["model_state"].items():
        assert value.dtype == after["model_state"][key].dtype, key
        assert torch.equal(value, after["model_state"][key]), key
    heads = before["model_config"].get("model_dict", {"": before["model_config"]})
    for head, conf in heads.items():
        back = after["model_config"]["model_dict"][head] if head else after["model_config"]
        assert back == conf, head


def _metrics(text: str) -> dict[str, float]:
    found = {}
    for key in ("Energy RMSE", "Energy RMSE/Natoms", "Force  RMSE", "Energy MAE"):
        values = re.findall(re.escape(key) + r"\s*:\s*(\S+)", text)
        if values:
            found[key] = float(values[-1])
    return found


def test_dp_test_equals_lam_test(work, capsys):
    root, _, water = work
    system = str(water / "data_3")
    args = ["test", "-s", system, "-n", str(NFRAMES)]
    dp = subprocess.run(DP + args + ["-m", "se_e2_a.pt"], cwd=root, env=reference_env(),
                        capture_output=True, text=True, timeout=300)
    assert dp.returncode == 0, dp.stderr[-3000:]
    assert lam_main([*args, "-m", str(root / "se_e2_a.lam")]) == 0
    captured = capsys.readouterr()
    ref, got = _metrics(dp.stdout + dp.stderr), _metrics(captured.out + captured.err)
    assert len(ref) == 4 and set(got) == set(ref), (ref, got)
    for key, value in ref.items():
        assert abs(got[key] - value) <= 1e-8 * abs(value), (key, got[key], value)


def _same_checkpoints(a: Path, b: Path) -> None:
    sa = torch.load(a, weights_only=False)["model"]
    sb = torch.load(b, weights_only=False)["model"]
    assert sorted(sa) == sorted(sb)
    for key, value in sa.items():
        if key == "_extra_state":
            assert sb[key] == value  # model_params and train_infos
            continue
        assert value.dtype == sb[key].dtype and torch.equal(value, sb[key]), key


def test_reference_checkpoint_round_trip(work, tmp_path):
    """dp --pt train's own checkpoint -> lamkit -> DeePMD-kit: the same tensors, bit for bit.
    The training starts from a converted lamkit model (``--init-model``)."""
    root, _, water = work
    data = subset_system(water / "data_0", tmp_path / "data", 4)
    model = {"type_map": TYPE_MAP, "descriptor": DPA1, "fitting_net": FIT}
    (tmp_path / "input.json").write_text(json.dumps(energy_input(model, [data], steps=1)))
    init = ["--init-model", str(root / "dpa1.pt")]
    run_reference(["train", "input.json", "--skip-neighbor-stat", *init], tmp_path)
    ckpt = tmp_path / "model.ckpt-1.pt"
    trained = torch.load(ckpt, weights_only=True)["model"]
    start = torch.load(root / "dpa1.pt", weights_only=True)["model"]
    weights = [k for k in start if k.endswith(".matrix")]
    assert weights and all(torch.allclose(trained[k], start[k], atol=1e-2) for k in weights)
    assert lam_main(["convert", str(ckpt), str(tmp_path / "m.lam")]) == 0
    assert lam_main(["convert", str(tmp_path / "m.lam"), str(tmp_path / "back.pt")]) == 0
    _same_checkpoints(ckpt, tmp_path / "back.pt")


def test_multitask_round_trip_and_one_head(work, tmp_path):
    root, _, _ = work
    convert(root / "multi.pt", tmp_path / "multi.lam")
    convert(tmp_path / "multi.lam", tmp_path / "multi.pt")
    _same_checkpoints(root / "multi.pt", tmp_path / "multi.pt")
    # one head of a multi-task model as a single-task checkpoint, both directions
    convert(root / "multi.lam", tmp_path / "b.pt", head="b")
    params = torch.load(tmp_path / "b.pt", weights_only=False)["model"]["_extra_state"]
    assert params["model_params"]["descriptor"]["type"] == "dpa1"
    convert(root / "multi.pt", tmp_path / "b.lam", head="b")
    x = np.load(root / "frames.npz")
    e_one = DeepPot(str(tmp_path / "b.lam")).eval(x["coord"], x["box"], x["atype"])[0]
    e_multi = DeepPot(str(root / "multi.lam"), head="b").eval(x["coord"], x["box"], x["atype"])[0]
    assert np.array_equal(e_one, e_multi)


def test_clear_errors(work, tmp_path, capsys, monkeypatch):
    root, _, _ = work
    with pytest.raises(LamkitError, match="already a lamkit file"):
        convert(root / "se_e2_a.lam", tmp_path / "x.lam", to="lamkit")
    with pytest.raises(LamkitError, match="no head 'c'"):
        convert(root / "multi.lam", tmp_path / "x.pt", head="c")
    with pytest.raises(LamkitError, match="no head 'c'"):
        convert(root / "multi.pt", tmp_path / "x.lam", head="c")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert lam_main(["convert", str(tmp_path / "other.pt"), str(tmp_path / "x.lam")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "other.pt" in err and "neither a lamkit model" in err
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "frozen.pth"))
    with pytest.raises(LamkitError, match="frozen.pth: a TorchScript frozen model"):
        convert(tmp_path / "frozen.pth", tmp_path / "x.lam")
    # a model the reference cannot build (a lamkit-only option, as a future one would be)
    # names the kinds and the reference's reason, and writes nothing
    from lamkit.interop import to_deepmd

    plain = to_deepmd.reference_params
    monkeypatch.setattr(to_deepmd, "reference_params",
                        lambda conf: {**plain(conf), "descriptor": {**plain(conf)["descriptor"],
                                                                    "lamkit_only": 1}})
    with pytest.raises(LamkitError, match=r"DeePMD-kit cannot build this model \(se_e2_a \+ ener"):
        convert(root / "se_e2_a.lam", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    # without the reference package the error says what to install
    monkeypatch.setitem(sys.modules, "deepmd.pt.model.model", None)
    with pytest.raises(LamkitError, match="needs the deepmd-kit package"):
        convert(root / "se_e2_a.lam", tmp_path / "x.pt")


def test_reference_tools_accept_converted_files(work, tmp_path):
    """dp --pt change-bias refits the bias of a converted model as lam change-bias does, and
    dp --pt show reads the branches of a converted multi-task model."""
    root, _, water = work
    system = str(water / "data_3")
    cmds = {
        "bias": DP + ["change-bias", str(root / "se_e2_a.pt"), "-s", system, "-n", "0",
                      "-o", str(tmp_path / "cb.pt")],
        "show": DP + ["show", str(root / "multi.pt"), "model-branch", "type-map"],
    }
    procs = {k: subprocess.Popen(c, cwd=tmp_path, env=reference_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for k, c in cmds.items()}
    assert lam_main(["change-bias", str(root / "se_e2_a.lam"), "-s", system, "-n", "0",
                     "-o", str(tmp_path / "cb.lam")]) == 0
    logs = {k: p.communicate(timeout=300)[0] for k, p in procs.items()}
    for k, p in procs.items():
        assert p.returncode == 0, logs[k][-3000:]
    assert "Available model branches are ['a', 'b', 'RANDOM']" in logs["show"], logs["show"]
    convert(tmp_path / "cb.pt", tmp_path / "cb_back.lam")
    ref = torch.load(tmp_path / "cb_back.lam", weights_only=False)["model_state"]["out_bias"]
    own = torch.load(tmp_path / "cb.lam", weights_only=False)["model_state"]["out_bias"]
    before = torch.load(root / "se_e2_a.lam", weights_only=False)["model_state"]["out_bias"]
    assert (ref - before).abs().max() > 1.0  # the bias did change
    _assert_close(own.numpy(), ref.numpy(), "energy bias after change-bias")
