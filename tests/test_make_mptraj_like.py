"""The MPtraj-like generator: labels are exact (-dE/dx, -dE/dstrain), complete over images.

The neighbour search of the generator (a fixed list of grid-site pairs) is checked against an
independent one (vesin), and its forces and virial against central finite differences of its
own energy.  The on-disk layout is the reference's mixed-type layout, read back by lamkit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_mptraj_like", ROOT / "benchmarks" / "make_mptraj_like.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load_generator()
POT = gen.Potential.default()


def _frames(n: int, nf: int, seed: int):
    rng = np.random.default_rng(seed)
    return gen.make_frames(rng, nf, n, gen.species_weights())


def _vesin_labels(coord, cell, atype):
    """Energy, force, virial with pairs from vesin (an independent neighbour search)."""
    from vesin import NeighborList

    nf, n, _ = coord.shape
    nl = NeighborList(cutoff=gen.RCUT, full_list=False)
    out = []
    for f in range(nf):
        i, j, d = nl.compute(coord[f], cell[f], True, quantities="ijD")
        i, j = i.astype(np.int64), j.astype(np.int64)
        e, fo, v = gen.label_pairs(
            POT,
            coord[f : f + 1],
            cell[f : f + 1],
            atype[f : f + 1],
            i,
            j,
            d - (coord[f][j] - coord[f][i]),
            np.zeros(len(i), dtype=np.int64),
        )
        out.append((e[0], fo[0], v[0]))
    return [np.stack(x) for x in zip(*out)]


@pytest.mark.parametrize("n", [1, 2, 7, 30, 65])
def test_pair_list_matches_vesin(n):
    coord, cell, atype, sites, dims = _frames(n, 4, seed=n)
    e, f, v = gen.label_frames(POT, coord, cell, atype, sites, dims)
    e_ref, f_ref, v_ref = _vesin_labels(coord, cell, atype)
    np.testing.assert_allclose(e, e_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-10)
    # a frame is not just atomic energies: pairs contribute
    assert np.abs(e - POT.e0[atype].sum(axis=1)).min() > 1e-3


@pytest.mark.parametrize("n", [1, 5, 24])
def test_force_and_virial_are_energy_derivatives(n):
    coord, cell, atype, sites, dims = _frames(n, 1, seed=100 + n)

    def energy(c, h):
        return gen.label_frames(POT, c, h, atype, sites, dims)[0][0]

    _, force, virial = gen.label_frames(POT, coord, cell, atype, sites, dims)
    h = 1e-5
    fd = np.zeros((n, 3))
    for a in range(n):
        for k in range(3):
            cp, cm = coord.copy(), coord.copy()
            cp[0, a, k] += h
            cm[0, a, k] -= h
            fd[a, k] = -(energy(cp, cell) - energy(cm, cell)) / (2 * h)
    np.testing.assert_allclose(force[0], fd, rtol=0, atol=1e-6)
    fd_v = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            plus = energy(coord @ (np.eye(3) + eps), cell @ (np.eye(3) + eps))
            minus = energy(coord @ (np.eye(3) - eps), cell @ (np.eye(3) - eps))
            fd_v[a, b] = -(plus - minus) / (2 * h)
    np.testing.assert_allclose(virial[0].reshape(3, 3), fd_v, rtol=0, atol=1e-6)
    assert np.abs(virial).max() > 1e-3
    assert n == 1 or np.abs(force).max() > 1e-3  # one atom: no net force by symmetry


def test_frame_counts_spread():
    counts = gen.frame_counts(1_580_000, 1, 444)
    assert sum(counts.values()) == 1_580_000
    assert min(counts) == 1 and max(counts) == 444 and len(counts) == 444
    n = np.array(list(counts))
    f = np.array(list(counts.values()))
    share = f[(n >= 8) & (n <= 80)].sum() / f.sum()
    assert 0.8 < share < 0.95
    assert f[n > 200].sum() > 1000  # a long tail


def test_written_dataset_reads_back(tmp_path):
    from lamkit.data import DataRequirement, load_system

    gen.main(
        [
            "--out",
            str(tmp_path),
            "--frames",
            "60",
            "--min-atoms",
            "3",
            "--max-atoms",
            "6",
            "--workers",
            "1",
        ]
    )
    systems = sorted(tmp_path.iterdir())
    assert [p.name for p in systems] == [f"natoms_{n:03d}" for n in range(3, 7)]
    reqs = [
        DataRequirement("energy", 1, must=True),
        DataRequirement("force", 3, atomic=True),
        DataRequirement("virial", 9),
    ]
    total = 0
    for path in systems:
        natoms = int(path.name.split("_")[1])
        assert (path / "type.raw").read_text().split() == ["0"] * natoms
        assert (path / "type_map.raw").read_text().split() == gen.ELEMENTS
        sysobj = load_system(path, gen.ELEMENTS, reqs)
        assert sysobj.mixed_type and sysobj.natoms == natoms and sysobj.pbc
        coord = sysobj.coords
        cell = sysobj.box.reshape(-1, 3, 3)
        e_ref, f_ref, v_ref = _vesin_labels(coord, cell, sysobj.atype)
        np.testing.assert_allclose(sysobj.labels["energy"][:, 0], e_ref, atol=1e-9)
        np.testing.assert_allclose(sysobj.labels["force"], f_ref, atol=1e-9)
        np.testing.assert_allclose(sysobj.labels["virial"], v_ref, atol=1e-9)
        total += sysobj.nframes
    assert total == 60


def test_large_files_are_memory_mapped(tmp_path, monkeypatch):
    from lamkit.data import DataRequirement, checks, load_system
    from lamkit.data.loader import frames_to_batch
    from lamkit.errors import DataError

    gen.main(
        [
            "--out",
            str(tmp_path),
            "--frames",
            "40",
            "--min-atoms",
            "12",
            "--max-atoms",
            "12",
            "--workers",
            "1",
        ]
    )
    path = tmp_path / "natoms_012"
    reqs = [DataRequirement("energy", 1, must=True), DataRequirement("force", 3, atomic=True)]
    in_memory = load_system(path, gen.ELEMENTS, reqs)
    monkeypatch.setattr(checks, "MMAP_MIN_BYTES", 0)
    monkeypatch.setattr(checks, "BLOCK_BYTES", 700)  # several blocks per file
    mapped = load_system(path, gen.ELEMENTS, reqs)
    assert not checks.is_mapped(in_memory.coords)
    for arr in (mapped.coords, mapped.atype, mapped.labels["force"], mapped.box):
        assert checks.is_mapped(arr)
    idx = np.array([5, 0, 33])
    a, b = frames_to_batch(in_memory, idx), frames_to_batch(mapped, idx)
    for key in a:
        if hasattr(a[key], "shape"):
            assert (a[key] == b[key]).all(), key
    np.testing.assert_array_equal(mapped.natoms_vec[idx], b["natoms"].numpy())
    # a bad value deep in a mapped file is still found, with its frame
    force = np.load(path / "set.000" / "force.npy")
    force[31, 7] = np.nan
    np.save(path / "set.000" / "force.npy", force)
    with pytest.raises(DataError, match=r"force.npy: frame 31, column 7 is nan"):
        load_system(path, gen.ELEMENTS, reqs)
    types = np.load(path / "set.000" / "real_atom_types.npy")
    types[27, 3] = 89
    np.save(path / "set.000" / "real_atom_types.npy", types)
    with pytest.raises(DataError, match=r"type index 89 at frame 27, atom 3"):
        load_system(path, gen.ELEMENTS, reqs[:1])
