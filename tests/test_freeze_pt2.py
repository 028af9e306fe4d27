"""``lam freeze --format pt2`` (:mod:`lamkit.infer.export_pt2`): an AOTInductor package that
gives DeepPot's energies, forces, virials and atom energies for any atom count, in a periodic
triclinic cell, loaded by torch alone in a process where lamkit cannot be imported; the
non-periodic and the type-sorted (se_e2_a) programs; models it cannot package are refused
with a one-line error. One package is compiled for the module
(35 s to 2 minutes on one core)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lamkit.cli.main import main
from lamkit.errors import ConfigError, ModelFileError
from lamkit.infer import DeepPot, freeze
from lamkit.infer.export_pt2 import export_program, metadata
from lamkit.model import build_model, load_model
from lamkit.model.io import save_model
from lamkit.testing import randomize_statistics, standard_system
from lamkit.testing.factories import make_dpa1

from .conftest import IN_CI
from .screen_common import tiny_model_file

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
LOADER = ROOT / "examples" / "pt2" / "load_pt2.py"
IMAGES = 2  # the triclinic test cell is thinner than rcut


@pytest.fixture(scope="module", autouse=True)
def cxx_compiler():
    """AOTInductor builds C++: skip (fail under CI) without a compiler."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # no g++/clang++ on PATH
        if IN_CI:
            pytest.fail(f"CI must provide a C++ compiler for AOTInductor: {exc}")
        pytest.skip(f"no C++ compiler for AOTInductor: {exc}")


@pytest.fixture(scope="module")
def model():
    m = make_dpa1(attn_layer=1).eval()
    m.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def package(model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pt2")
    frozen = tmp / "model.pth"
    save_model(model, frozen)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = freeze(frozen, tmp / "model.pt2", images=IMAGES)  # format from the suffix
    finally:
        torch.set_num_threads(before)
    assert out == tmp / "model.pt2" and out.is_file()
    return out


def systems(rcut: float) -> dict[str, tuple]:
    """name -> coord [n, 3], atype [n], box [9]: 4 atoms in a skewed cell, 12 atoms (some
    outside the cell) in a cube, and 48 in its 2x2x1 supercell (more atoms than any size
    limit Inductor could have guessed from the 7 traced ones)."""
    out = {}
    for name, seed in (("triclinic", 3), ("cubic", 5)):
        s = standard_system(name, 2, rcut, seed=seed)
        out[name] = (s.coord.reshape(-1, 3), s.atype, s.cell.reshape(9))
    coord, atype, box = out["cubic"]
    cell = box.reshape(3, 3)
    shifts = np.array([(i, j, 0) for i in range(2) for j in range(2)]) @ cell
    big = (coord[None] + shifts[:, None]).reshape(-1, 3)
    out["supercell"] = (big, np.tile(atype, 4), (cell * [[2], [2], [1]]).reshape(9))
    return out


def reference(model, coord, atype, box):
    e, f, v, ae, _ = DeepPot(model).eval(
        coord.reshape(1, -1), box.reshape(1, 9), atype, atomic=True
    )
    return {"energy": e, "force": f, "virial": v, "atom_energy": ae}


def test_matches_deep_pot_for_two_atom_counts(model, package):
    pot = torch._inductor.aoti_load_package(str(package))
    for name, (coord, atype, box) in systems(model.rcut).items():
        got = pot(
            torch.tensor(coord).reshape(1, -1, 3),
            torch.tensor(atype, dtype=torch.int64).reshape(1, -1),
            torch.tensor(box).reshape(1, 9),
        )
        want = reference(model, coord, atype, box)
        for key, value in zip(("energy", "force", "virial", "atom_energy"), got):
            ref = want[key].reshape(value.shape)
            np.testing.assert_allclose(
                value.numpy(), ref, rtol=1e-10, atol=1e-12, err_msg=f"{name} {key}"
            )
        assert np.abs(want["force"]).max() > 1e-3  # forces that could be wrong


def test_metadata_and_a_cell_too_thin_for_the_images(model, package):
    pot = torch._inductor.aoti_load_package(str(package))
    meta = pot.get_metadata()
    assert json.loads(meta["type_map"]) == ["O", "H"]
    assert float(meta["rcut"]) == model.rcut and int(meta["images"]) == IMAGES
    assert json.loads(meta["outputs"]) == ["energy", "force", "virial", "atom_energy"]
    assert json.loads(meta["units"])["force"] == "eV/Angstrom"
    coord, atype, box = systems(model.rcut)["cubic"]
    thin = box.reshape(3, 3).copy()
    thin[2] *= 0.4 * model.rcut / np.linalg.norm(thin[2])  # height 0.4 rcut < rcut / 2
    e, f, v, ae = pot(
        torch.tensor(coord).reshape(1, -1, 3),
        torch.tensor(atype, dtype=torch.int64).reshape(1, -1),
        torch.tensor(thin).reshape(1, 9),
    )
    assert all(torch.isnan(x).all() for x in (e, f, v, ae))


def test_loads_and_runs_without_lamkit(model, package, tmp_path):
    """The example loader (docs/md-engines.md) in a process where ``import lamkit`` fails."""
    coord, atype, box = systems(model.rcut)["supercell"]  # with input checks on: no size cap
    np.savez(tmp_path / "s.npz", coord=coord, atype=atype, box=box)
    code = (
        "import runpy, sys\n"
        "sys.modules['lamkit'] = None  # any import of lamkit now raises ImportError\n"
        "import torch\n"
        f"sys.argv = ['load_pt2.py', {str(package)!r}, {str(tmp_path / 's.npz')!r}, "
        f"{str(tmp_path / 'out.npz')!r}]\n"
        f"pot = runpy.run_path({str(LOADER)!r}, run_name='__main__')['pot']\n"
        "try:  # the loader turns AOTInductor's input checks on\n"
        "    x = torch.zeros(1, 3, 3, dtype=torch.float32)  # float32 coordinates\n"
        "    pot(x, torch.zeros(1, 3, dtype=torch.int64), torch.eye(3).double().reshape(1, 9))\n"
        "except RuntimeError as exc:\n"
        "    print('refused:', exc)\n"
        "assert not any(m == 'lamkit' or m.startswith('lamkit.') for m in sys.modules"
        " if sys.modules[m] is not None)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "type_map ['O', 'H']" in run.stdout
    assert "refused: input_handles[0]: unmatched dtype" in run.stdout
    got = np.load(tmp_path / "out.npz")
    want = reference(model, coord, atype, box)
    for key in ("energy", "force", "virial", "atom_energy"):
        np.testing.assert_allclose(
            got[key], want[key].reshape(got[key].shape), rtol=1e-10, atol=1e-12, err_msg=key
        )


def test_non_periodic_program(model):
    """``periodic=False`` (``--no-pbc``): coord and atype only; checked on the exported
    program (the packaging step is the same as above)."""
    s = standard_system("cluster", 2, model.rcut, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's pytree internals
        program = export_program(model, periodic=False)
    coord, atype = s.coord.reshape(-1, 3), s.atype
    got = program.module()(
        torch.tensor(coord).reshape(1, -1, 3), torch.tensor(atype, dtype=torch.int64).reshape(1, -1)
    )
    e, f, v = DeepPot(model).eval(coord.reshape(1, -1), None, atype)
    for value, ref, key in zip(got, (e, f, v), ("energy", "force", "virial")):
        np.testing.assert_allclose(
            value.numpy(), ref.reshape(value.shape), rtol=1e-10, atol=1e-12, err_msg=key
        )


def test_type_sorted_se_e2_a_program(tmp_path):
    """se_e2_a with per-type networks runs them densely inside the program (export_dense)."""
    model = load_model(tiny_model_file(tmp_path / "se_a.pth")).eval()
    model.requires_grad_(False)
    s = standard_system("cubic", 2, model.rcut, seed=11)
    coord, atype, box = s.coord.reshape(-1, 3), s.atype, s.cell.reshape(9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's pytree internals
        program = export_program(model)
    got = program.module()(
        torch.tensor(coord).reshape(1, -1, 3),
        torch.tensor(atype, dtype=torch.int64).reshape(1, -1),
        torch.tensor(box).reshape(1, 9),
    )
    want = reference(model, coord, atype, box)
    for value, key in zip(got, ("energy", "force", "virial", "atom_energy")):
        np.testing.assert_allclose(
            value.numpy(), want[key].reshape(value.shape), rtol=1e-10, atol=1e-12, err_msg=key
        )
    assert "forward" not in vars(model.fitting) and "_rows" not in vars(model.descriptor)


def _other_model(kind: str):
    if kind == "dpa2":
        from lamkit.testing.factories import make_dpa2

        return make_dpa2(update_g2_has_attn=True, update_residual=0.2)
    from lamkit.testing.factories import make_se_e3_tebd

    return make_se_e3_tebd()


@pytest.mark.parametrize("kind", ["dpa2", "se_e3_tebd"])
def test_dpa2_and_se_e3_tebd_programs(kind):
    """DPA-2 (several neighbour lists, message passing through the mapping) and se_e3_tebd
    export too; the triclinic cell needs two images."""
    model = _other_model(kind).eval()
    model.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's pytree internals
        program = export_program(model, images=IMAGES)
    for name in ("triclinic", "cubic"):
        coord, atype, box = systems(model.rcut)[name]
        got = program.module()(
            torch.tensor(coord).reshape(1, -1, 3),
            torch.tensor(atype, dtype=torch.int64).reshape(1, -1),
            torch.tensor(box).reshape(1, 9),
        )
        want = reference(model, coord, atype, box)
        for value, key in zip(got, ("energy", "force", "virial", "atom_energy")):
            np.testing.assert_allclose(
                value.numpy(),
                want[key].reshape(value.shape),
                rtol=1e-10,
                atol=1e-12,
                err_msg=f"{kind} {name} {key}",
            )


def test_frame_and_atomic_parameters(tmp_path):
    """fparam [1, nfp] and aparam [1, natoms, nap] become inputs of the program."""
    model = build_model(
        {
            "type_map": ["O", "H"],
            "descriptor": {"type": "dpa1", "sel": 30, "rcut": 4.0, "neuron": [4, 8], "seed": 2},
            "fitting_net": {"neuron": [8], "numb_fparam": 2, "numb_aparam": 1, "seed": 2},
        }
    )
    randomize_statistics(model, 2)
    model.eval().requires_grad_(False)
    s = standard_system("cubic", 2, model.rcut, seed=13)
    coord, atype, box = s.coord.reshape(-1, 3), s.atype, s.cell.reshape(9)
    rng = np.random.default_rng(0)
    fparam, aparam = rng.normal(size=(1, 2)), rng.normal(size=(1, len(atype), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's pytree internals
        program = export_program(model)
    got = program.module()(
        torch.tensor(coord).reshape(1, -1, 3),
        torch.tensor(atype, dtype=torch.int64).reshape(1, -1),
        torch.tensor(box).reshape(1, 9),
        torch.tensor(fparam),
        torch.tensor(aparam),
    )
    dp = DeepPot(model)
    want = dp.eval(coord.reshape(1, -1), box.reshape(1, 9), atype, fparam=fparam, aparam=aparam)
    frame = (coord.reshape(1, -1), box.reshape(1, 9), atype)
    plain = dp.eval(*frame, fparam=fparam * 0, aparam=aparam)
    assert abs(plain[0] - want[0]).max() > 1e-6  # fparam matters
    for value, ref, key in zip(got, want, ("energy", "force", "virial")):
        np.testing.assert_allclose(
            value.numpy(), ref.reshape(value.shape), rtol=1e-10, atol=1e-12, err_msg=key
        )
    inputs = json.loads(metadata(model, True, 1)["inputs"])
    assert inputs == ["coord", "atype", "box", "fparam", "aparam"]


def test_models_it_cannot_package_are_refused(tmp_path, capsys):
    model = build_model(
        {
            "type_map": ["O", "H"],
            "descriptor": {"type": "dpa1", "sel": 20, "rcut": 4.0, "neuron": [4, 8]},
            "fitting_net": {"type": "property", "task_dim": 2, "neuron": [8]},
        }
    )
    path = str(tmp_path / "property.pth")
    save_model(model.eval(), path)
    with pytest.raises(ModelFileError, match="energy models only"):
        freeze(path, tmp_path / "property.pt2")
    assert not (tmp_path / "property.pt2").exists()
    # through the CLI: one line, no traceback, exit code 2
    assert main(["freeze", "-c", path, "-o", str(tmp_path / "x.pt2")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("lam freeze: error:")]
    assert len(lines) == 1 and "--format pt2 packages energy models only" in lines[0]
    with pytest.raises(ConfigError, match="unknown format 'onnx'"):
        freeze(path, tmp_path / "x.onnx", format="onnx")
    with pytest.raises(ConfigError, match="images"):
        freeze(path, tmp_path / "x.pt2", images=0)
