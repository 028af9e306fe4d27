"""LMDB training data in DeePMD-kit 3.2's layout (``examples/lmdb_downsample_data``).

Water frames written as an LMDB read back equal to the deepmd/npy system they came from; a
run trained on the LMDB is the run trained on the npy folder (same learning curve); and the
reference, trained on the same LMDB, computes the same statistics (descriptor davg/dstd and
energy bias) as lamkit."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

pytest.importorskip("lmdb", reason="LMDB data needs the optional package lmdb (lamkit[lmdb])")
pytest.importorskip("msgpack", reason="LMDB data needs the optional package msgpack")

from lamkit.data import DataRequirement, load_systems  # noqa: E402
from lamkit.data.lmdb import is_lmdb, load_lmdb, read_frames, write_lmdb  # noqa: E402
from lamkit.errors import DataError  # noqa: E402
from lamkit.interop.deepmd import load_deepmd_checkpoint  # noqa: E402
from lamkit.train import Trainer  # noqa: E402

from . import reference_finetune as rf  # noqa: E402
from .conftest import need_shared, require_reference  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
NFRAMES = 4
REQS = [DataRequirement("energy", 1, must=True), DataRequirement("force", 3, atomic=True)]
MODEL = {  # the example's se_e2_a, shrunk
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_e2_a",
        "sel": [46, 92],
        "rcut_smth": 0.5,
        "rcut": 6.0,
        "neuron": [4, 8],
        "resnet_dt": False,
        "axis_neuron": 4,
        "seed": 1,
        "precision": "float64",
    },
    "fitting_net": {"neuron": [8, 8], "resnet_dt": True, "seed": 1, "precision": "float64"},
}


def water_frames(n: int = NFRAMES) -> list[dict]:
    """The first ``n`` frames of water data_0 as LMDB frames (file atom order, float64)."""
    src = rf.water(0)
    atype = np.loadtxt(src / "type.raw", dtype=np.int32)
    arrays = {k: np.load(src / "set.000" / f"{k}.npy")[:n] for k in ("coord", "box", "energy")}
    force = np.load(src / "set.000" / "force.npy")[:n]
    return [
        {
            "atom_types": atype,
            "coords": arrays["coord"][i].reshape(-1, 3).astype(np.float64),
            "cells": arrays["box"][i].reshape(3, 3).astype(np.float64),
            "energies": np.float64(arrays["energy"][i]),
            "forces": force[i].reshape(-1, 3).astype(np.float64),
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    need_shared("water")
    root = tmp_path_factory.mktemp("lmdb")
    return {
        "lmdb": write_lmdb(root / "water.lmdb", water_frames(), ["O", "H"]),
        "npy": rf.subset_system(rf.water(0), root / "water_npy", NFRAMES),
        "root": root,
    }


def lmdb_input(systems, steps: int = 2) -> dict:
    return {
        "model": copy.deepcopy(MODEL),
        "learning_rate": {"type": "exp", "decay_steps": 5000, "start_lr": 1e-3, "stop_lr": 3e-8},
        "loss": dict(rf.LOSS, start_pref_v=0, limit_pref_v=0),
        "training": {
            "training_data": {"systems": str(systems), "batch_size": "auto"},
            "validation_data": {"systems": str(systems), "batch_size": 1},
            "numb_steps": steps,
            "seed": 10,
            "disp_freq": 1,
            "save_freq": max(steps, 1),
        },
    }


def test_lmdb_reads_like_the_npy_system(data):
    assert is_lmdb(data["lmdb"]) and not is_lmdb(data["npy"])
    (lm,) = load_systems(str(data["lmdb"]), ["O", "H"], REQS)
    (npy,) = load_systems([data["npy"]], ["O", "H"], REQS)
    assert lm.path == str(data["lmdb"]) and not lm.mixed_type
    np.testing.assert_array_equal(lm.atype, npy.atype)
    np.testing.assert_array_equal(lm.atom_order, npy.atom_order)
    for a, b in [(lm.coords, npy.coords), (lm.box, npy.box)]:
        np.testing.assert_array_equal(a, b)
    for key in ("energy", "force"):
        np.testing.assert_array_equal(lm.labels[key], npy.labels[key])
        assert lm.find[key] == 1.0


def test_type_map_by_name_groups_by_atom_count_and_optional_labels(tmp_path):
    frames = water_frames(2)
    small = {
        "atom_types": np.array([1, 0, 1], np.int32),
        "coords": np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], np.float64),
        "energies": np.float64(-14.0),
        "forces": np.zeros((3, 3)),
        "atomic_charge": np.array([0.4, -0.8, 0.4]),
    }
    other = dict(small, atom_types=np.array([0, 1, 1], np.int32))
    reqs = [*REQS, DataRequirement("atom_charge", 1, atomic=True), DataRequirement("virial", 9)]
    unlabelled = {k: v for k, v in small.items() if k != "atomic_charge"}
    path = write_lmdb(tmp_path / "mix.lmdb", [small, unlabelled], ["O", "H"])
    with pytest.raises(DataError, match="label 'atom_charge' is missing in frame 1"):
        load_lmdb(path, ["H", "O", "C"], reqs)
    path = write_lmdb(tmp_path / "mix2.lmdb", [small, other, frames[0]], ["O", "H"])
    big, tiny = load_lmdb(path, ["H", "O", "C"], reqs, sort_atoms=False)
    assert tiny.path == f"{path}#nloc192" and big.path == f"{path}#nloc3"
    assert big.mixed_type and big.box is None and big.nframes == 2
    np.testing.assert_array_equal(big.atype, [[0, 1, 0], [1, 0, 0]])  # O=1, H=0 in the model
    np.testing.assert_allclose(big.labels["atom_charge"][0, :, 0], [0.4, -0.8, 0.4])
    assert big.find["atom_charge"] == 1.0 and big.find["virial"] == 0.0
    assert tiny.find["atom_charge"] == 0.0 and tiny.pbc
    with pytest.raises(DataError, match="element 'H' in .* is not in the model type_map"):
        load_lmdb(path, ["O", "C"], reqs)


def test_broken_datasets_are_named(tmp_path):
    with pytest.raises(DataError, match="no data.mdb"):
        read_frames(tmp_path)
    import lmdb

    env = lmdb.open(str(tmp_path / "bad.lmdb"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"000000000000", b"\x80")
    env.close()
    with pytest.raises(DataError, match="bad.lmdb: the LMDB has no __metadata__ entry"):
        load_lmdb(tmp_path / "bad.lmdb", ["O"], REQS)


def test_training_on_lmdb_is_training_on_the_npy_folder(data):
    curves = []
    for kind in ("lmdb", "npy"):
        out = data["root"] / f"train_{kind}"
        Trainer(lmdb_input(data[kind]), out).run()
        curves.append(np.loadtxt(out / "lcurve.out"))
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-10)


@pytest.mark.reference
def test_reference_statistics_from_the_same_lmdb(data):
    require_reference()
    config = lmdb_input(data["lmdb"], steps=0)
    workdir = data["root"] / "ref"
    workdir.mkdir()
    (workdir / "input.json").write_text(json.dumps(config))
    rf.run_reference(["train", "input.json", "--skip-neighbor-stat"], workdir)
    ckpt = rf.final_checkpoint(workdir)
    ref = rf.branch_tensors(rf.load_state(ckpt))
    model = Trainer(config, data["root"] / "lam_stat").model
    np.testing.assert_allclose(
        model.out_bias.reshape(-1).numpy(), ref["out_bias"].reshape(-1).numpy(), rtol=1e-10
    )
    ref_state = load_deepmd_checkpoint(ckpt).descriptor.state_dict()  # davg/dstd per type
    for key, value in model.descriptor.state_dict().items():
        if key.endswith(("davg", "dstd")):
            np.testing.assert_allclose(value.numpy(), ref_state[key].numpy(), rtol=1e-10)
