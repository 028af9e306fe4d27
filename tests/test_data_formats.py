"""Data forms the reference reads besides deepmd/npy folders: deepmd/hdf5 files (whole file or
``file#/group``), ``rglob_patterns``, and the ``"filter:N"`` batch-size rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lamkit.data import DataRequirement, expand_systems, load_systems
from lamkit.data.writer import write_deepmd_system, write_hdf5_systems
from lamkit.errors import ConfigError, DataError
from lamkit.train import Trainer

from .conftest import require_reference
from .train_inputs import example_config

REQS = [
    DataRequirement("energy", 1, must=True),
    DataRequirement("force", 3, atomic=True, must=True),
    DataRequirement("virial", 9),
]


def _system(path, natoms, nframes, seed, periodic=True, types=("Cu", "Au")):
    rng = np.random.default_rng(seed)
    atype = rng.integers(0, len(types), natoms)
    coords = rng.uniform(0, 6, (nframes, natoms, 3))
    box = np.tile(np.diag([6.0, 6.5, 7.0]).reshape(1, 9), (nframes, 1)) if periodic else None
    labels = {
        "energy": rng.normal(-4 * natoms, 1, nframes),
        "force": rng.normal(0, 1, (nframes, natoms, 3)),
    }
    return write_deepmd_system(path, coords, atype, list(types), box, labels, set_size=3)


@pytest.fixture()
def npy_and_h5(tmp_path):
    dirs = {
        "bulk/a": _system(tmp_path / "npy/a", 5, 7, 1),
        "bulk/b": _system(tmp_path / "npy/b", 9, 4, 2),
        "mol": _system(tmp_path / "npy/mol", 3, 5, 3, periodic=False),
    }
    return dirs, write_hdf5_systems(dirs, tmp_path / "data.hdf5")


def _same(a, b):
    assert (a.natoms, a.nframes, a.type_map) == (b.natoms, b.nframes, b.type_map)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.atype, b.atype)
    assert (a.box is None) == (b.box is None)
    if a.box is not None:
        np.testing.assert_array_equal(a.box, b.box)
    for k in a.labels:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    assert a.find == b.find


def test_hdf5_systems_equal_their_npy_folders(npy_and_h5):
    dirs, h5 = npy_and_h5
    from_h5 = load_systems(str(h5), ["Au", "Cu"], REQS)
    assert [s.path.split("#")[1] for s in from_h5] == ["/bulk/a", "/bulk/b", "/mol"]
    for s, name in zip(from_h5, ["bulk/a", "bulk/b", "mol"]):
        _same(s, load_systems(str(dirs[name]), ["Au", "Cu"], REQS)[0])
    assert from_h5[2].box is None  # the nopbc dataset
    one = load_systems(f"{h5}#/bulk", ["Au", "Cu"], REQS)
    assert [s.path for s in one] == [f"{h5}#/bulk/a", f"{h5}#/bulk/b"]


def test_hdf5_errors_name_the_file_and_group(npy_and_h5, tmp_path):
    _, h5 = npy_and_h5
    with pytest.raises(DataError, match="no such group"):
        expand_systems(f"{h5}#/nothing")
    empty = write_hdf5_systems({}, tmp_path / "empty.h5")
    with pytest.raises(DataError, match="no group below it holds type.raw"):
        expand_systems(str(empty))
    bad = tmp_path / "bad.hdf5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError, match="cannot read .*bad.hdf5 as HDF5"):
        expand_systems(str(bad))


def test_the_reference_reads_the_same_hdf5_system(npy_and_h5):
    require_reference()
    from deepmd.utils.data import DeepmdData

    _, h5 = npy_and_h5
    ours = load_systems(f"{h5}#/bulk/a", ["Cu", "Au"], REQS)[0]
    ref = DeepmdData(f"{h5}#/bulk/a", type_map=["Cu", "Au"])
    ref.add("energy", 1, atomic=False, must=True)
    ref.add("force", 3, atomic=True, must=True)
    frames = [ref._load_set(d) for d in ref.dirs]
    coord = np.concatenate([f["coord"] for f in frames]).reshape(ours.coords.shape)
    np.testing.assert_array_equal(coord, ours.coords)
    np.testing.assert_array_equal(ref.atom_type[ref.idx_map], ours.atype[0])  # both sorted
    energy = np.concatenate([f["energy"] for f in frames]).reshape(-1)
    np.testing.assert_array_equal(energy, ours.labels["energy"].reshape(-1))


def test_rglob_patterns_pick_matching_systems(tmp_path):
    for name, n in (("run1/sys_a", 4), ("run1/sys_b", 5), ("run2/other", 6)):
        _system(tmp_path / name, n, 3, n)
    found = expand_systems(str(tmp_path), patterns=["sys_*"])
    assert [p.name for p in found] == ["sys_a", "sys_b"]
    with pytest.raises(DataError, match="rglob_patterns"):
        expand_systems(str(tmp_path), patterns=["none_*"])


def test_filter_batch_size_drops_large_systems(example_dir, tmp_path, caplog):
    big = _system(tmp_path / "big", 40, 3, 7)
    conf = example_config(example_dir, steps=1)
    data = conf["training"]["training_data"]
    data["systems"] = [*data["systems"], str(big)]
    natoms = sorted(s.natoms for s in load_systems(data["systems"], ["Cu", "Au"], []))
    small = natoms[0]  # keeps the smallest systems only
    dropped = sum(n > small for n in natoms)
    assert dropped >= 1
    data["batch_size"] = f"filter:{small}"
    with caplog.at_level(logging.WARNING, logger="lamkit"):
        t = Trainer(conf, tmp_path / "run")
    kept = t.tasks["Default"].train_systems
    assert len(kept) == len(natoms) - dropped and all(s.natoms <= small for s in kept)
    assert str(big) not in [s.path for s in kept]
    assert f"left out {dropped} system(s) of more than {small} atoms" in caplog.text
    sizes = t.tasks["Default"].batch_sizes
    natoms = [s.natoms for s in t.tasks["Default"].train_systems]
    assert sizes == [max(1, small // n) for n in natoms]
    data["batch_size"] = "filter:1"
    with pytest.raises(ConfigError, match="every system has more than 1 atoms"):
        Trainer(conf, tmp_path / "run2")


def test_training_reads_an_hdf5_file(example_dir, npy_and_h5, tmp_path):
    _, h5 = npy_and_h5
    conf = example_config(example_dir, steps=2)
    conf["training"]["training_data"]["systems"] = str(h5)
    conf["training"]["validation_data"]["systems"] = [f"{h5}#/mol"]
    t = Trainer(conf, tmp_path / "run")
    t.run()
    assert len(t.tasks["Default"].train_systems) == 3
    assert (tmp_path / "run" / "model.ckpt-2.pt").exists()
