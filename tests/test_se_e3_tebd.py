"""se_e3_tebd: physics of small models, parity with the reference DeePMD-kit, a training smoke run.

The parity tests train the reference (``dp --pt train``) 2 steps on water data_0 for the concat
and strip type-embedding modes, load its checkpoints with ``lamkit.model.load_model`` and
compare predictions on data_3 frames with ``deepmd.infer.DeepPot``; they also compare the
descriptor statistics with lamkit's ``Trainer`` on the same frames. Without the reference they
are skipped, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.descriptor import build_descriptor
from lamkit.errors import ConfigError
from lamkit.examples import water_se_e2_a_config
from lamkit.testing import standard_system
from lamkit.testing.factories import RCUT
from lamkit.testing.factories import make_se_e3_tebd as make_e3
from lamkit.testing.suite import ModelPhysicsTests

from .conftest import require_reference

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
WATER = DATA / "water"
MIXED = DATA / "mixed_type_small" / "data_mixed_type"
NFRAMES = 3
RTOL = 1e-8
PREFIX = "model.Default.atomic_model."


pytestmark = pytest.mark.usefixtures("one_thread")


# --- the physics suite --------------------------------------------------------------------

E3_VARIANTS = {
    "concat": ("concat", {}),
    "strip": ("strip", {}),
    "strip-nonsmooth-excl": (
        "strip",
        {"smooth": False, "exclude_types": [[0, 1]], "concat_output_tebd": False},
    ),
}


class TestSeE3TebdPhysics(ModelPhysicsTests):
    @pytest.fixture(params=list(E3_VARIANTS))
    def model_factory(self, request):
        mode, extra = E3_VARIANTS[request.param]

        def make(precision: str = "float64"):
            return make_e3(mode, precision, **extra)

        return make


# --- descriptor details -------------------------------------------------------------------


def _neighbors(model, sys_):
    coord, atype, box = sys_.tensors(torch.float64)
    nbr = model.neighbor_builder()(coord, atype, box)
    ext, eat = model.extend(coord, atype, box, nbr)
    return ext, eat, nbr[keys.NLIST]


def _direct(desc, ext, eat, nlist):
    """The descriptor written as in its definition: the full concatenated / stripped input."""
    theta, sw = desc._angles(ext, eat, nlist)
    table = desc.type_embedding.table()
    nt = desc._neighbor_types(eat, nlist)
    n, nnei = nt.shape
    a = table[nt]
    if desc.tebd_input_mode == "concat":
        x = torch.cat(
            [
                theta.unsqueeze(-1),
                a.unsqueeze(2).expand(-1, -1, nnei, -1),
                a.unsqueeze(1).expand(-1, nnei, -1, -1),
            ],
            dim=-1,
        )
        gg = desc.embedding(x)
    else:
        g_s = desc.embedding(theta.unsqueeze(-1))
        pair = torch.cat(
            [a.unsqueeze(2).expand(-1, -1, nnei, -1), a.unsqueeze(1).expand(-1, nnei, -1, -1)],
            dim=-1,
        )
        g_t = desc.embedding_strip(pair)
        if desc.smooth:
            g_t = g_t * (sw.unsqueeze(2) * sw.unsqueeze(1)).unsqueeze(-1)
        gg = g_s * (1 + g_t)
    return (theta.unsqueeze(-1) * gg).sum((1, 2)) / nnei**2


@pytest.mark.parametrize(
    "mode,neuron", [("concat", [4, 8]), ("concat", [9, 18]), ("strip", [4, 8])]
)
def test_descriptor_matches_its_definition(mode, neuron):
    """The split first layer (and the first-layer skip when neuron[0] = 1 + 2 tebd_dim)."""
    model = make_e3(mode, neuron=neuron)
    desc = model.descriptor
    ext, eat, nlist = _neighbors(model, standard_system("cubic", 2, RCUT, seed=3))
    got = desc(ext, eat, nlist)[keys.DESCRIPTOR]
    nf, nloc = nlist.shape[:2]
    assert got.shape == (nf, nloc, neuron[-1] + 4)
    ref = _direct(desc, ext, eat, nlist).reshape(nf, nloc, -1)
    assert torch.allclose(got[..., : neuron[-1]], ref, rtol=1e-12, atol=1e-14)
    centre = desc.type_embedding.table()[eat[:, :nloc]]
    assert torch.equal(got[..., neuron[-1] :], centre)


def test_empty_slots_add_nothing():
    """More slots only change the 1/J^2 normalisation."""
    small, big = make_e3(), make_e3(sel=96)
    sys_ = standard_system("cluster", 2, RCUT, seed=5)
    d = []
    for m in (small, big):
        ext, eat, nlist = _neighbors(m, sys_)
        d.append(m.descriptor(ext, eat, nlist)[keys.DESCRIPTOR][..., :8] * nlist.shape[-1] ** 2)
    assert torch.allclose(d[0], d[1], rtol=1e-12, atol=1e-13)


def test_config_defaults_and_errors():
    desc = build_descriptor({"type": "se_e3_tebd", "sel": 20}, ["O", "H"])
    assert desc.mixed_types and desc.sel == [20]
    assert desc.neuron == [10, 20, 40] and desc.tebd_dim == 8
    assert desc.set_davg_zero and desc.smooth and desc.concat_output_tebd
    assert desc.type_embedding.net.layers[0].bias is not None  # use_tebd_bias: true
    assert desc.dim_out == 48
    with pytest.raises(ConfigError, match="use_econf_tebd: 'Xx' is not an element"):
        build_descriptor({"type": "se_e3_tebd", "sel": 20, "use_econf_tebd": True}, ["Xx"])
    with pytest.raises(ConfigError, match="tebd_input_mode"):
        build_descriptor({"type": "se_e3_tebd", "sel": 20, "tebd_input_mode": "x"}, ["O"])


# --- reference parity -----------------------------------------------------------------------


def water_config(mode: str) -> dict:
    conf = water_se_e2_a_config(
        [str(WATER / "data_0")], [str(WATER / "data_3")], steps=2, data_stat_nbatch=100
    )
    conf["model"]["descriptor"] = {
        "type": "se_e3_tebd",
        "sel": 40,
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8, 16],
        "tebd_dim": 8,
        "tebd_input_mode": mode,
        "precision": "float64",
        "seed": 1,
    }
    conf["model"]["fitting_net"]["neuron"] = [32, 32]
    conf["training"].update(disp_freq=2, save_freq=2)
    return conf


MODES = ("concat", "strip")


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory) -> dict[str, Path]:
    """Train the reference 2 steps in both modes (concurrently)."""
    require_reference()
    env = dict(
        os.environ,
        NUM_WORKERS="0",
        OMP_NUM_THREADS="2",
        DP_INTRA_OP_PARALLELISM_THREADS="2",
        DP_INTER_OP_PARALLELISM_THREADS="1",
    )
    procs = {}
    for mode in MODES:
        wd = tmp_path_factory.mktemp(f"dp_e3_{mode}")
        (wd / "input.json").write_text(json.dumps(water_config(mode), indent=1))
        log = open(wd / "train.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
        cmd = [
            sys.executable,
            "-m",
            "deepmd",
            "--pt",
            "train",
            "input.json",
            "--skip-neighbor-stat",
        ]
        procs[mode] = (
            wd,
            log,
            subprocess.Popen(cmd, cwd=wd, env=env, stdout=log, stderr=subprocess.STDOUT),
        )
    out = {}
    for mode, (wd, log, proc) in procs.items():
        try:
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
        text = (wd / "train.log").read_text(errors="replace")
        assert proc.returncode == 0, f"dp --pt train failed in {wd}:\n{text[-3000:]}"
        ckpt = wd / "model.ckpt-2.pt"
        assert ckpt.is_file(), f"the reference wrote no {ckpt.name} in {wd}"
        out[mode] = ckpt
    return out


def water_frames(n: int = NFRAMES):
    d = WATER / "data_3"
    coord = np.load(d / "set.000" / "coord.npy")[:n].astype(np.float64)
    box = np.load(d / "set.000" / "box.npy")[:n].astype(np.float64)
    atype = np.loadtxt(d / "type.raw", dtype=np.int64).reshape(-1)
    return coord.reshape(n, -1, 3), box.reshape(n, 9), atype


def rel_diff(ref, got) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(ref.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ref - got).max() / (scale if scale > 0 else 1.0))


NAMES = ("energy", "force", "virial", "atom_energy", "atom_virial")


@pytest.mark.reference
@pytest.mark.parametrize("mode", MODES)
def test_load_model_matches_reference(mode, reference_runs):
    from lamkit.model import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deepmd.infer import DeepPot as RefDeepPot

        coord, box, atype = water_frames()
        res = RefDeepPot(str(reference_runs[mode])).eval(
            coord.reshape(NFRAMES, -1), box, atype, atomic=True
        )
    ref = dict(zip(NAMES, res))
    model = load_model(reference_runs[mode])
    assert model.descriptor.tebd_input_mode == mode
    out = model.evaluate(
        torch.tensor(coord),
        torch.tensor(np.tile(atype, (NFRAMES, 1))),
        torch.tensor(box),
        do_atomic_virial=True,
    )
    diffs = {k: rel_diff(ref[k], out[k].detach().numpy()) for k in NAMES}
    assert all(d < RTOL for d in diffs.values()), diffs


@pytest.mark.reference
def test_statistics_match_reference(reference_runs, tmp_path):
    """dstd (every slot; davg stays 0) and out_bias before training, all 80 frames of data_0."""
    from lamkit.train import Trainer

    sd = torch.load(str(reference_runs["concat"]), map_location="cpu", weights_only=False)
    sd = sd["model"]
    mean = sd[PREFIX + "descriptor.se_ttebd.mean"].numpy()  # [ntypes, nnei, 4]
    stddev = sd[PREFIX + "descriptor.se_ttebd.stddev"].numpy()
    bias = sd[PREFIX + "out_bias"].numpy().reshape(-1)
    model = Trainer(water_config("concat"), tmp_path).model
    davg = model.descriptor.davg.detach().numpy()
    dstd = model.descriptor.dstd.detach().numpy()
    assert np.all(mean == 0) and np.all(davg == 0)
    assert rel_diff(stddev, np.broadcast_to(dstd[:, None, :], stddev.shape)) < 1e-10
    assert rel_diff(bias, model.out_bias.detach().numpy().reshape(-1)) < 1e-6


# --- training smoke run on mixed-type data --------------------------------------------------


def test_train_smoke_mixed_type(tmp_path):
    if not MIXED.is_dir():
        pytest.skip(f"example data not found: {MIXED}")
    from lamkit.model import load_model
    from lamkit.train import Trainer

    conf = water_config("strip")
    conf["model"]["descriptor"]["neuron"] = [4, 8]
    conf["model"]["data_stat_nbatch"] = 2
    conf["training"]["training_data"]["systems"] = [str(MIXED)]
    conf["training"]["validation_data"]["systems"] = [str(MIXED)]
    Trainer(copy.deepcopy(conf), tmp_path).run()
    rows = [
        ln.split()
        for ln in (tmp_path / "lcurve.out").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rows and rows[-1][0] == "2"
    assert all(np.isfinite(float(x)) for x in rows[-1][1:])
    model = load_model(tmp_path / "model.ckpt-2.pt")
    assert model.descriptor.tebd_input_mode == "strip"
    assert float(model.descriptor.dstd.min()) > 0
