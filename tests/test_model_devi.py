"""``lam model-devi`` and the ensemble API: the deviation formulas on hand-made numbers, the same
file and numbers as the reference's ``dp model-devi`` on four DeePMD-kit checkpoints (standard,
non-periodic and mixed-type systems; plain, --atomic, --relative, --relative_v, --real_error,
-f), shared neighbour lists giving exactly the member-by-member results, the ASE calculator and
clear errors for incompatible members."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lamkit.cli.main import main
from lamkit.errors import ConfigError, DataError
from lamkit.infer import DeepPot
from lamkit.infer.ensemble import Ensemble, EnsembleCalculator
from lamkit.infer.model_devi import (
    deviation_table,
    energy_deviation,
    force_deviation,
    make_model_devi,
    virial_deviation,
)
from lamkit.model import build_model

from .conftest import energy_input, need_shared, require_reference

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_e2_a",
        "sel": [46, 92],
        "rcut": 6.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "seed": 1,
    },
    "fitting_net": {"neuron": [8], "seed": 1},
}


# --- formulas on numbers worked out by hand ----------------------------------------------------
def test_formulas_by_hand():
    # two models, one frame, two atoms: atom 0 gets F and -F -> std per component = |F_c|
    f = np.zeros((2, 1, 2, 3))
    f[0, 0, 0], f[1, 0, 0] = [3.0, 4.0, 0.0], [-3.0, -4.0, 0.0]
    f[:, 0, 1] = [1.0, 2.0, 2.0]  # atom 1: both agree
    devi = force_deviation(f)
    np.testing.assert_allclose(devi, [[5.0, 0.0]])
    # relative: |mean F| is 0 for atom 0 and 3 for atom 1
    np.testing.assert_allclose(force_deviation(f, relative=1.0), [[5.0, 0.0]])
    f[1, 0, 1] = [1.0, 2.0, 4.0]  # atom 1: z differs by 2 -> std 1, mean (1, 2, 3)
    np.testing.assert_allclose(force_deviation(f, relative=0.5), [[10.0, 1 / (14**0.5 + 0.5)]])
    # RMS error against labels instead of the spread
    real = np.zeros((1, 2, 3))
    np.testing.assert_allclose(force_deviation(f, real)[0, 0], 5.0)
    # virial: components 0 and 4 spread by 2 and 6 -> std 1 and 3
    v = np.zeros((2, 2, 9))
    v[0, :, 0], v[1, :, 0], v[0, :, 4], v[1, :, 4] = 1.0, 3.0, -3.0, 3.0
    vmax, vmin, vavg = virial_deviation(v)
    np.testing.assert_allclose(vmax, [3.0, 3.0])
    np.testing.assert_allclose(vmin, [0.0, 0.0])
    np.testing.assert_allclose(vavg, [10**0.5 / 3] * 2)
    # relative virial: the magnitude of each frame divides that frame only
    v[:, 1] *= 2.0
    mag = np.linalg.norm(v.mean(axis=0), axis=-1)
    np.testing.assert_allclose(virial_deviation(v, relative=1.0)[0], [3, 6] / (mag + 1.0))
    e = np.array([[[1.0], [2.0]], [[3.0], [2.0]]])
    np.testing.assert_allclose(energy_deviation(e), [1.0, 0.0])
    np.testing.assert_allclose(energy_deviation(e, np.array([[0.0], [2.0]])), [5**0.5, 0.0])


# --- lamkit ensembles (no reference needed) ---------------------------------------------------
def _lam_model(seed: int, **descriptor):
    torch.manual_seed(seed)
    conf = json.loads(json.dumps(CONFIG))
    conf["descriptor"].update(descriptor, seed=seed)
    conf["fitting_net"]["seed"] = seed
    return build_model(conf)


@pytest.fixture(scope="module")
def water_frames():
    water = need_shared("water", "data_0")
    coord = np.load(water / "set.000" / "coord.npy")[:2]
    box = np.load(water / "set.000" / "box.npy")[:2]
    types = np.loadtxt(water / "type.raw", dtype=np.int64)
    return coord, box, types


def test_shared_neighbours_equal_member_by_member(water_frames):
    coord, box, types = water_frames
    models = [_lam_model(1), _lam_model(2), _lam_model(3, sel=[40, 80])]
    ens = Ensemble(models, device="cpu")
    assert ens.nlayouts == 2  # two members share one list, the third has its own slots
    out = ens.eval(coord, box, types, atomic=True)
    assert out.force.shape == (3, 2, len(types), 3)
    for k, m in enumerate(models):
        # DeepPot measures memory on a one-frame call first (the ensemble takes both frames
        # at once): the same numbers up to the order of floating-point sums
        e, f, v, ae, av = DeepPot(m, device="cpu").eval(coord, box, types, atomic=True)
        for got, want in ((out.energy[k], e), (out.force[k], f), (out.virial[k], v),
                          (out.atom_energy[k], ae), (out.atom_virial[k], av)):  # fmt: skip
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.ptp(out.energy[:, 0, 0]) > 1e-3  # the members really differ


def test_identical_members_do_not_deviate(water_frames):
    coord, box, types = water_frames
    m = _lam_model(4)
    out = Ensemble([m, m, m], device="cpu").eval(coord, box, types)
    table = deviation_table(out, len(types), frequency=5)
    np.testing.assert_array_equal(table[:, 0], [0, 5])
    np.testing.assert_allclose(table[:, 1:], 0.0, atol=1e-15)  # std of equal numbers: ~1e-20


def test_calculator_reports_means_and_deviations(water_frames):
    from ase import Atoms

    from lamkit.infer import LamCalculator

    coord, box, types = water_frames
    models = [_lam_model(s) for s in (5, 6, 7)]
    symbols = ["O" if t == 0 else "H" for t in types]
    atoms = Atoms(symbols, positions=coord[0].reshape(-1, 3), cell=box[0].reshape(3, 3), pbc=True)
    atoms.calc = EnsembleCalculator(models, device="cpu")
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    singles = []
    for m in models:
        single = atoms.copy()
        single.calc = LamCalculator(DeepPot(m, device="cpu"))
        singles.append((single.get_potential_energy(), single.get_forces(), single.get_stress()))
    np.testing.assert_allclose(energy, np.mean([s[0] for s in singles]), rtol=1e-13)
    np.testing.assert_allclose(forces, np.mean([s[1] for s in singles], axis=0), atol=1e-13)
    np.testing.assert_allclose(stress, np.mean([s[2] for s in singles], axis=0), atol=1e-13)
    fs = np.array([s[1] for s in singles])
    devi = np.linalg.norm(fs.std(axis=0), axis=-1)
    res = atoms.calc.results
    np.testing.assert_allclose(res["devi_f"], devi, atol=1e-13)
    np.testing.assert_allclose(res["max_devi_f"], devi.max(), atol=1e-13)
    es = np.array([s[0] for s in singles]) / len(atoms)
    np.testing.assert_allclose(res["devi_e"], es.std(), rtol=1e-10)
    out = atoms.calc.ensemble.eval(coord[:1], box[:1], types)
    table = deviation_table(out, len(types))
    np.testing.assert_allclose(
        [res[k] for k in ("max_devi_v", "min_devi_v", "avg_devi_v")], table[0, 1:4], rtol=1e-12
    )
    assert res["max_devi_f"] > 0 and res["model_forces"].shape == (3, len(atoms), 3)


def test_incompatible_members_are_named(tmp_path):
    from lamkit.model import save_model

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    save_model(_lam_model(1), a)
    save_model(_lam_model(2, rcut=5.0), b)
    with pytest.raises(ConfigError, match=r"different cutoffs.*a\.pth: 6 Å.*b\.pth: 5 Å"):
        Ensemble([a, b], device="cpu")
    conf = json.loads(json.dumps(CONFIG))
    conf["type_map"] = ["H", "O"]
    save_model(build_model(conf), b)
    with pytest.raises(ConfigError, match=r"different type maps.*b\.pth: \['H', 'O'\]"):
        Ensemble([a, b], device="cpu")
    with pytest.raises(ConfigError, match="one or more models"):
        Ensemble([], device="cpu")
    conf = json.loads(json.dumps(CONFIG))
    conf["fitting_net"] = {"type": "property", "task_dim": 2, "property_name": "gap"}
    save_model(build_model(conf), b)
    with pytest.raises(ConfigError, match=r"ensemble member .*b\.pth: .*property model"):
        Ensemble([a, b], device="cpu")


def test_cli_writes_the_file_and_reports_errors(tmp_path, capsys):
    from lamkit.model import save_model

    water = need_shared("water", "data_0")
    sysdir = tmp_path / "data" / "w"
    _copy_frames(water, sysdir, 2)
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"m{k}.pth")
        save_model(_lam_model(10 + k), paths[-1])
    out = tmp_path / "md.out"
    argv = ["model-devi", "-m", *map(str, paths), "-s", str(tmp_path / "data"), "-o", str(out)]
    assert main([*argv, "-f", "10", "--atomic"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == f"# {sysdir}"
    assert lines[1].split()[1:] == [
        "step",
        "max_devi_v",
        "min_devi_v",
        "avg_devi_v",
        "max_devi_f",
        "min_devi_f",
        "avg_devi_f",
        "devi_e",
        "atm_devi_f(N)",
    ]
    rows = np.loadtxt(out)
    assert rows.shape == (2, 8 + 192)
    np.testing.assert_array_equal(rows[:, 0], [0, 10])
    table = make_model_devi(paths, sysdir, None, atomic=True, device="cpu")[0]
    np.testing.assert_allclose(rows[:, 1:], table[:, 1:], rtol=1e-6)
    np.testing.assert_allclose(rows[:, 4], rows[:, 8:].max(axis=1), rtol=1e-6)
    conf = json.loads(json.dumps(CONFIG))
    conf["type_map"] = ["H", "O"]
    save_model(build_model(conf), paths[2])
    assert main(argv) == 2
    assert "different type maps" in capsys.readouterr().err


def test_frame_and_atom_parameters_come_from_the_data(water_frames, tmp_path):
    coord, box, types = water_frames
    models = []
    for seed in (1, 2):
        conf = json.loads(json.dumps(CONFIG))
        conf["fitting_net"].update(numb_fparam=1, numb_aparam=2, seed=seed)
        torch.manual_seed(seed)
        models.append(build_model(conf))
    sysdir = tmp_path / "w"
    _copy_frames(need_shared("water", "data_0"), sysdir, 2)
    rng = np.random.default_rng(0)
    fparam, aparam = rng.normal(size=(2, 1)), rng.normal(size=(2, len(types) * 2))
    np.save(sysdir / "set.000" / "fparam.npy", fparam)
    np.save(sysdir / "set.000" / "aparam.npy", aparam)
    ens = Ensemble(models, device="cpu")
    table = make_model_devi(ens, sysdir, None)[0]
    out = ens.eval(coord, box, types, fparam=fparam, aparam=aparam)
    np.testing.assert_array_equal(table, deviation_table(out, len(types)))
    unused = deviation_table(ens.eval(coord, box, types, fparam=fparam, aparam=0 * aparam), 192)
    assert np.abs(unused[:, 4] - table[:, 4]).max() > 1e-8  # aparam really reached the models
    (sysdir / "set.000" / "aparam.npy").unlink()
    with pytest.raises(DataError, match="aparam"):
        make_model_devi(ens, sysdir, None)


def test_ase_trajectory_equals_the_npy_system(water_frames, tmp_path):
    from ase import Atoms
    from ase.io import write

    coord, box, types = water_frames
    symbols = ["O" if t == 0 else "H" for t in types]
    frames = [
        Atoms(symbols, positions=c.reshape(-1, 3), cell=b.reshape(3, 3), pbc=True)
        for c, b in zip(coord, box)
    ]
    write(tmp_path / "traj.extxyz", frames)
    ens = Ensemble([_lam_model(1), _lam_model(2)], device="cpu")
    from_file = make_model_devi(ens, tmp_path / "traj.extxyz", tmp_path / "md.out")[0]
    direct = deviation_table(ens.eval(coord, box, types), len(types))
    # extxyz keeps 8 decimals of the positions
    np.testing.assert_allclose(from_file, direct, rtol=1e-5, atol=1e-9)
    assert (tmp_path / "md.out").read_text().startswith(f"# {tmp_path / 'traj.extxyz'}\n")


# --- parity with dp model-devi ----------------------------------------------------------------
def _copy_frames(
    src: Path, dst: Path, n: int, nopbc: bool = False, virial: bool = False, swap: bool = False
):
    """The first ``n`` frames of a system (labels included) as a new system; ``swap``: the
    same atoms under the type map H O (types 1 - t), which readers must map back by name."""
    (dst / "set.000").mkdir(parents=True)
    for name in ("type.raw", "type_map.raw"):
        shutil.copy(src / name, dst / name)
    if swap:
        types = np.loadtxt(src / "type.raw", dtype=np.int64)
        np.savetxt(dst / "type.raw", 1 - types, fmt="%d")
        (dst / "type_map.raw").write_text("H\nO\n")
    for f in sorted((src / "set.000").glob("*.npy")):
        if nopbc and f.name == "box.npy":
            continue
        np.save(dst / "set.000" / f.name, np.load(f)[:n])
    if nopbc:
        (dst / "nopbc").touch()
    if virial:
        rng = np.random.default_rng(len(str(dst)))
        np.save(dst / "set.000" / "virial.npy", rng.normal(scale=0.5, size=(n, 9)))


DPA1 = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "dpa1",
        "sel": 60,
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "attn": 8,
        "attn_layer": 1,
        "tebd_dim": 4,
        # smooth attention: forces are well conditioned near rcut (docs/compatibility.md)
        "smooth_type_embedding": True,
        "precision": "float64",
        "seed": 1,
    },
    "fitting_net": {"neuron": [8], "precision": "float64", "seed": 1},
}


def _reference_checkpoints(root: Path, name: str, config: dict) -> list[Path]:
    """Four untrained DeePMD-kit checkpoints of one architecture (seeds 0-3), written as
    ``dp --pt train`` writes them (the model wrapper's state with its model_params)."""
    from deepmd.pt.model.model import get_model
    from deepmd.pt.train.wrapper import ModelWrapper
    from deepmd.utils.argcheck import normalize

    params = normalize(energy_input(config, ["unused"], 1))["model"]
    paths = []
    for seed in range(4):
        conf = copy.deepcopy(params)
        conf["descriptor"]["seed"], conf["fitting_net"]["seed"] = seed, seed + 10
        wrapper = ModelWrapper(get_model(copy.deepcopy(conf)), model_params=conf)
        paths.append(root / f"{name}.{seed:03d}.pt")
        torch.save({"model": wrapper.state_dict()}, paths[-1])
    return paths


@pytest.fixture(scope="module")
def reference_setup(tmp_path_factory):
    """Four se_e2_a and four DPA-1 DeePMD-kit checkpoints and two system folders: ``many``
    (a periodic system with virial labels, a non-periodic one with the type map H O and a
    mixed-type one with virtual atoms) and ``single`` (one frame each)."""
    import warnings

    water = require_reference()
    mixed = need_shared("mixed_type_small", "data_mixed_type")
    root = tmp_path_factory.mktemp("model_devi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "se_e2_a": _reference_checkpoints(root, "se_e2_a", CONFIG),
            "dpa1": _reference_checkpoints(root, "dpa1", DPA1),
        }
    for name, n in (("many", 3), ("single", 1)):
        _copy_frames(water / "data_0", root / name / "periodic", n, virial=True)
        _copy_frames(water / "data_1", root / name / "nopbc", n, nopbc=True, swap=True)
        _copy_frames(mixed, root / name / "mixed", min(n, 2))
        types_path = root / name / "mixed" / "set.000" / "real_atom_types.npy"
        types = np.load(types_path)
        types[:, -5:] = -1  # virtual (padding) atoms: zero forces, counted in natoms
        types[1:, :3] = -1
        np.save(types_path, types)
    return root, models


def _blocks(path: Path) -> dict[str, str]:
    """The deviation file's blocks by system header."""
    out: dict[str, str] = {}
    name = None
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("# ") and not line.startswith("# step"):
            name = line[2:].strip()
            out[name] = ""
        out[name] += line
    return out


@pytest.mark.reference
@pytest.mark.parametrize(
    "kind, folder, options",
    [
        ("se_e2_a", "many", {}),
        ("se_e2_a", "many", {"atomic": True, "frequency": 10}),
        ("se_e2_a", "many", {"relative": 1.0, "atomic": True}),
        ("se_e2_a", "many", {"real_error": True, "relative": 0.5, "atomic": True}),
        # the reference divides [nf, 9] deviations by [nf] magnitudes, right for one frame only
        ("se_e2_a", "single", {"relative_v": 0.5, "relative": 1.0}),
        ("dpa1", "single", {"atomic": True, "relative": 1.0, "frequency": 5}),
        ("dpa1", "single", {"relative_v": 0.5, "real_error": True}),
    ],
)
def test_matches_dp_model_devi(reference_setup, kind, folder, options, tmp_path, monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deepmd.common import expand_sys_str
        from deepmd.infer.model_devi import make_model_devi as reference

    root, all_models = reference_setup
    models = all_models[kind]
    monkeypatch.chdir(root)  # relative paths: the headers are the paths as given
    kw = {"frequency": 1, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference(
            models=list(map(str, models)), system=folder, output=str(tmp_path / "r"), **kw
        )
    ours = make_model_devi(models, folder, tmp_path / "l", device="cpu", **kw)
    order = expand_sys_str(folder)
    assert len(ours) == len(ref) == 3
    names = sorted(order)
    for name, table in zip(names, ours):
        want = ref[order.index(name)]
        assert table.shape == want.shape
        np.testing.assert_allclose(table, want, rtol=1e-10, atol=1e-15)
    assert _blocks(tmp_path / "l") == _blocks(tmp_path / "r")
    assert np.all(ours[0][:, 4] > 1e-5)  # the members disagree: the comparison means something
