"""``lam learn``: trust-level selection, config errors, a whole loop with EMT labels (a labeller
that fails on some frames), resume after a kill between stages, convergence, Dask labelling."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from lamkit.cli.main import main
from lamkit.errors import ConfigError
from lamkit.learn import load_state, parse_config, parse_quantity, run_learn, select
from lamkit.learn.config import SelectSpec
from lamkit.learn.label import label_frames
from lamkit.testing.learn import learn_config as _conf
from lamkit.testing.learn import pretrain_cu_ni as _pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return _pretrain(tmp_path_factory.mktemp("pre"))


@pytest.fixture(scope="module")
def whole_run(pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("learn") / "a"
    state = run_learn(parse_config(_conf(pretrained)), out)
    return out, state


# -- selection ------------------------------------------------------------------------------
DEVI = np.array([0.01, 0.04, 0.05, 0.1, 0.149, 0.15, 0.3])


def test_fixed_trust_levels_classify_and_cap():
    sel = select(DEVI, SelectSpec(lo=0.05, hi=0.15, max_select=10), 0)
    assert (sel.accurate, sel.candidate, sel.failed) == (2, 3, 2)
    assert sel.chosen == [2, 3, 4]
    assert sel.ratios()["accurate"] == pytest.approx(2 / 7)
    capped = select(DEVI, SelectSpec(lo=0.05, hi=0.15, max_select=2), 0)
    assert len(capped.chosen) == 2 and set(capped.chosen) <= {2, 3, 4}
    assert capped.chosen == select(DEVI, SelectSpec(lo=0.05, hi=0.15, max_select=2), 0).chosen


def test_adaptive_lower_and_random_selection():
    spec = SelectSpec(method="adaptive-lower", hi=0.15, rate_candi=0.5, max_select=10)
    sel = select(DEVI, spec, 0)  # 5 frames below hi: the top 2 (0.1, 0.149) are candidates
    assert sel.lo == pytest.approx(0.1)
    assert (sel.accurate, sel.candidate, sel.failed) == (3, 2, 2)
    assert sel.chosen == [3, 4]
    rnd = select(DEVI, SelectSpec(method="random", lo=0.05, hi=0.15, max_select=4), 1)
    assert len(rnd.chosen) == 4 and len(set(rnd.chosen)) == 4
    assert (rnd.accurate, rnd.candidate, rnd.failed) == (2, 3, 2)  # ratios as fixed levels


# -- configuration errors -------------------------------------------------------------------
def test_quantities_need_units():
    assert parse_quantity("0.5 %", "x") == (0.005, "%")
    assert parse_quantity("10 meV", "x", "energy") == pytest.approx((0.01, "energy"))
    with pytest.raises(ConfigError, match="tol: 0.5 has no unit"):
        parse_quantity(0.5, "tol")
    with pytest.raises(ConfigError, match="is a pressure, expected a energy"):
        parse_quantity("1 GPa", "x", "energy")


def test_config_errors_before_any_work(pretrained, tmp_path):
    def bad(match, **over):
        with pytest.raises(ConfigError, match=match):
            parse_config(_conf(pretrained, **over))

    prop = {"name": "latice", "structure": "Cu", "tolerance": "1 %"}
    bad(r"properties\[0\].name: unknown property 'latice'.*Did you mean 'lattice'",
        properties=[prop])
    prop = {"name": "vacancy", "structure": "Cu", "tolerance": 0.1}
    bad(r"properties\[0\].tolerance.Ef: 0.1 has no unit", properties=[prop])
    prop = {"name": "vacancy", "structure": "Cu", "tolerance": "1 GPa"}
    bad(r"tolerance.Ef: '1 GPa' is a pressure, expected % or a energy", properties=[prop])
    prop = {"name": "lattice", "structure": "Al", "tolerance": "1 %"}
    bad(r"structure: 'Al' is not in structures", properties=[prop])
    bad(r"select.hi: 0.15 has no unit", select={"hi": 0.15})
    bad(r"learn config: unknown key 'explor'", explor={})
    # members must share the type map: a model with another type map fails at start
    other = _pretrain(tmp_path / "other", type_map=("Ni", "Cu"), steps=1)
    cfg = parse_config(_conf([pretrained, other]))
    with pytest.raises(ConfigError, match="different type maps"):
        run_learn(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "state.json").exists()
    # the CLI: one line, exit status 2
    path = tmp_path / "learn.json"
    path.write_text(json.dumps({**_conf(pretrained, labeller={"type": "emt"}),
                                "properties": [prop]}))
    assert main(["learn", str(path), "-o", str(tmp_path / "cli")]) == 2


# -- the loop -------------------------------------------------------------------------------
def _emt_lattice() -> float:
    at = bulk("Cu", "fcc", a=3.6, cubic=True)
    at.calc = EMT()
    BFGS(FrechetCellFilter(at), logfile=None).run(fmax=1e-5)
    return float(np.linalg.norm(at.cell[0]))


def _emt_vacancy(a: float) -> float:
    cell = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
    cell.calc = EMT()
    e_bulk = cell.get_potential_energy()
    vac = cell.copy()
    del vac[0]
    vac.calc = EMT()
    BFGS(vac, logfile=None).run(fmax=1e-4)
    return float(vac.get_potential_energy() - e_bulk * 31 / 32)


def test_whole_loop_with_a_failing_labeller(whole_run):
    out, state = whole_run
    assert state.finished == "max_iterations" and len(state.records) == 2
    # targets from the labeller agree with EMT computed directly
    a = _emt_lattice()
    assert state.targets["lattice:Cu"]["a"] == pytest.approx(a, abs=2e-3)
    assert state.targets["vacancy:Cu"]["Ef"] == pytest.approx(_emt_vacancy(a), abs=5e-3)
    # 4 initial frames; iteration 0 picks all 16 explored frames, the 4 of the vacancy cell fail
    first, last = state.records
    assert first["explored"] == 16 and first["selected"] == 16
    assert [f["frame"] for f in first["label_failures"]] == [12, 13, 14, 15]
    assert all("SCF did not converge" in f["error"] for f in first["label_failures"])
    assert first["labelled"] == 12 and state.labels == 16 and state.failed_labels == 4
    assert first["labels_before_train"] == 4 and last["labels_before_train"] == 16
    frames = sum(np.load(out / s / "set.000" / "energy.npy").size for s in state.data)
    assert frames == 16
    # the last iteration labels nothing (no training follows)
    assert "labelled" not in last and "label" not in state.done
    for rec in state.records:
        for q in rec["properties"].values():
            for e in q.values():
                assert e["error"] == pytest.approx(e["value"] - e["target"])
                assert e["ok"] == (abs(e["error"]) <= e["allowed"])
        assert sum(rec["devi_hist"]["counts"]) == rec["explored"]
    with open(out / "report.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["iteration"] for r in rows] == ["0", "1"] and rows[1]["labels"] == "16"
    for png in ("errors.png", "ratios.png", "labels.png", "devi_hist.png"):
        assert (out / png).stat().st_size > 1000


def test_resume_after_kill_gives_the_same_state(whole_run, pretrained, tmp_path):
    ref_dir, _ = whole_run
    out = tmp_path / "b"
    killed = run_learn(parse_config(_conf(pretrained)), out, max_stages=5)  # init + 4 stages
    assert killed.iteration == 0 and killed.done == ["train", "props", "explore", "select"]
    assert load_state(out).done == killed.done
    run_learn(parse_config(_conf(pretrained)), out)
    a = json.loads((ref_dir / "state.json").read_text())
    b = json.loads((out / "state.json").read_text())
    assert a == b
    assert (ref_dir / "report.csv").read_text() == (out / "report.csv").read_text()


def test_converges_when_properties_are_within_tolerance(pretrained, tmp_path):
    conf = _conf(
        pretrained,
        properties=[{"name": "lattice", "structure": "Cu", "tolerance": "50 %",
                     "target": "3.6 Å"}],
        labeller={"type": "emt"},
        train={"members": 1, "numb_steps": 5, "init_frames": 1},
        select={"lo": "0.05 eV/Å", "hi": "0.15 eV/Å", "max_select": 2},
        converge={"accurate_ratio": 0.5, "max_iterations": 3},
    )
    path = tmp_path / "learn.json"  # through the command line this time
    path.write_text(json.dumps(conf))
    assert main(["learn", str(path), "-o", str(tmp_path / "c")]) == 0
    state = load_state(tmp_path / "c")
    assert state.finished == "converged" and state.iteration == 0
    assert state.targets == {"lattice:Cu": {"a": 3.6}}
    assert state.records[0]["converged"] and state.labels == 3  # the initial frames only


def test_dask_workers_label_like_this_process():
    pytest.importorskip("distributed", reason="Dask labelling needs dask.distributed")
    frames = [bulk("Cu", "fcc", a=a, cubic=True) for a in (3.5, 3.6, 3.7)]
    frames.append(bulk("Cu", "fcc", a=3.6) * (1, 1, 1))
    frames[-1].pbc = False  # no cell: EMT still works, no virial
    local = label_frames(frames, {"type": "emt"})
    remote = label_frames(frames, {"type": "emt"}, workers=1)
    for x, y in zip(local, remote):
        assert x["energy"] == y["energy"]
        np.testing.assert_array_equal(x["forces"], y["forces"])
    assert local[-1]["virial"] is None and local[0]["virial"].shape == (3, 3)
    shutil.rmtree("dask-worker-space", ignore_errors=True)


# -- deformation pools and virial trust levels ------------------------------------------------
def test_virial_levels_flag_frames_the_forces_miss():
    spec = SelectSpec(lo=0.05, hi=0.15, max_select=10, lo_v=0.01, hi_v=0.5)
    devi_v = np.array([0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # frame 0: accurate forces only
    sel = select(DEVI, spec, 0, devi_v)
    assert sel.chosen == [0, 2, 3, 4] and (sel.accurate, sel.failed) == (1, 2)
    assert select(DEVI, spec, 0, np.full(7, 0.6)).failed == 7  # over hi_v: failed
    assert select(DEVI, SelectSpec(lo=0.05, hi=0.15), 0, devi_v).chosen == [2, 3, 4]


def test_virial_levels_need_units_and_both(pretrained):
    with pytest.raises(ConfigError, match="select.lo_v: 0.01 has no unit"):
        parse_config(_conf(pretrained, select={"lo_v": 0.01, "hi_v": "1 eV"}))
    with pytest.raises(ConfigError, match="both lo_v and hi_v"):
        parse_config(_conf(pretrained, select={"lo_v": "0.01 eV"}))
    with pytest.raises(ConfigError, match="select.hi_v: '1 GPa' is a pressure"):
        parse_config(_conf(pretrained, select={"lo_v": "0.01 eV", "hi_v": "1 GPa"}))


def test_elastic_pool_cells_give_emt_elastic_constants():
    """The pool's strained cells are the strains they claim: EMT stress differences over
    +-0.5 % give the elastic constants that lamkit.props computes (one-atom basis: no internal
    relaxation)."""
    from lamkit.learn.properties import deformation_pool
    from lamkit.props import compute_elastic

    a = _emt_lattice()
    cu = bulk("Cu", "fcc", a=a, cubic=True)
    pool = deformation_pool("elastic", cu)
    assert len(pool) == 36 and all(len(p) == 32 for p in pool)
    stress = []
    for p in pool:
        p.calc = EMT()
        stress.append(-p.get_stress() / units.GPa)  # ASE sign: tension positive -> GPa
    stress = np.array(stress).reshape(6, 6, 6)  # voigt j, amplitude, stress component
    c = (stress[:, 3] - stress[:, 2]) / 0.01  # amplitudes +-0.005
    ref = compute_elastic(EMT(), cu).cij
    np.testing.assert_allclose(-c, ref, atol=0.02 * ref[0, 0])
    assert ref[0, 0] > 100 and ref[3, 3] > 50


def test_loop_scores_the_pool(pretrained, tmp_path):
    conf = _conf(pretrained, labeller={"type": "emt"},
                 properties=[{"name": "lattice", "structure": "Cu", "tolerance": "0.5 %",
                              "target": "3.59 Å"}],
                 train={"members": 2, "numb_steps": 5, "init_frames": 1},
                 explore={"temperatures": [300], "steps": 10, "traj_freq": 5, "pool": True,
                          "pool_rattle": 0.01},
                 select={"lo": "1 eV/Å", "hi": "2 eV/Å", "lo_v": "0 eV", "hi_v": "100 eV",
                         "max_select": 50},
                 converge={"max_iterations": 1})
    state = run_learn(parse_config(conf), tmp_path / "run")
    first = state.records[0]
    assert first["explored"] == 3 * 2 + 4  # 3 lattice cells x 2 frames + 4 pool volumes
    it = tmp_path / "run" / "iter.000"
    devi_v = np.load(it / "max_devi_v.npy")
    assert devi_v.shape == (10,) and (devi_v[6:] > 0).all()
    # lo_v = 0: every frame is a candidate through its virial deviation
    assert first["selected"] == 10 and first["ratios"]["candidate"] == 1.0
    from ase.io import read

    pool = read(it / "explored.extxyz", index="6:")
    assert [f.info["source"] for f in pool] == [f"lattice:Cu:pool{k}" for k in range(4)]
    vols = [f.get_volume() / len(f) for f in pool]
    np.testing.assert_allclose(np.array(vols) / (3.6**3 / 4), [0.97, 0.985, 1.015, 1.03])


def test_init_pool_labels_the_property_cells(pretrained, tmp_path):
    """train.init_pool: the properties' own deformed cells (unrattled) join the initial
    labels, with the labeller's energies."""
    from lamkit.learn.properties import deformation_pool

    conf = _conf(pretrained, labeller={"type": "emt"},
                 properties=[{"name": "lattice", "structure": "Cu", "tolerance": "0.5 %",
                              "target": "3.59 Å"}],
                 train={"members": 1, "numb_steps": 5, "init_frames": 1, "init_pool": True})
    state = run_learn(parse_config(conf), tmp_path / "run", max_stages=1)
    assert state.initialized and state.labels == 3 + 4  # 3 perturbed lattice cells + 4 pool
    init = tmp_path / "run" / "data" / "init"
    energies = np.concatenate([np.load(p).ravel() for p in sorted(init.glob("*/set.*/energy.npy"))])
    assert energies.shape == (7,)
    for cell in deformation_pool("lattice", bulk("Cu", "fcc", a=3.6, cubic=True)):
        cell.calc = EMT()
        assert np.abs(energies - cell.get_potential_energy()).min() < 1e-8
