"""``lam freeze --format pth`` (:mod:`lamkit.infer.export_pth`): TorchScript for DeePMD-kit.

The reference's Python ``deepmd.infer.DeepPot`` loads the file and gives lamkit DeepPot's
energies, forces, virials, atom energies and atom virials (float64, 1e-10) for a water-like
DPA-1 model and a periodic metal (se_e2_a with per-type networks); a process that cannot
import lamkit loads it with torch alone and calls ``forward_lower`` the way DeePMD-kit's C++
side does, with an engine's neighbour list (unsorted, wider than ``sel``, holding atoms beyond
the cutoff and -1 padding); model kinds the C++ side cannot run are refused by name; one branch
of a multi-task checkpoint (``--head``) runs in LAMMPS."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lamkit.cli.main import main
from lamkit.errors import ModelFileError
from lamkit.infer import DeepPot, freeze
from lamkit.infer.export_pth import export_pth
from lamkit.model import build_model, load_model
from lamkit.model.io import save_model
from lamkit.testing import randomize_statistics, standard_system
from lamkit.testing.factories import make_dpa1

from .pth_lammps import lmp, run_lammps, voigt  # noqa: F401 - lmp is a fixture
from .screen_common import tiny_model_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    """(lamkit model, .pth) for a small O/H DPA-1 model, frozen through the CLI."""
    tmp = tmp_path_factory.mktemp("pth_water")
    model = make_dpa1(attn_layer=1).eval()
    model.requires_grad_(False)
    save_model(model, tmp / "model.pth")
    out = tmp / "water.pth"
    assert main(["freeze", "-c", str(tmp / "model.pth"), "-o", str(out), "--format", "pth"]) == 0
    return model, out


@pytest.fixture(scope="module")
def metal(tmp_path_factory):
    """(lamkit model, .pth) for a Cu/Au se_e2_a model (type-sorted networks)."""
    tmp = tmp_path_factory.mktemp("pth_metal")
    src = tiny_model_file(tmp / "model.pth")
    out = freeze(src, tmp / "metal.pth", format="pth")
    model = load_model(src).eval()
    model.requires_grad_(False)
    return model, out


def fcc_metal(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rattled, sheared 2x2x2 fcc cell of 32 Cu/Au atoms (a = 3.7 Å; box 7.4 Å > rcut)."""
    rng = np.random.default_rng(seed)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.array([(i, j, k) for i in range(2) for j in range(2) for k in range(2)])
    frac = (cells[:, None, :] + basis[None]).reshape(-1, 3) / 2
    cell = 7.4 * np.eye(3) + np.array([[0, 0, 0], [0.6, 0, 0], [0.3, -0.4, 0]])
    coord = frac @ cell + rng.normal(scale=0.1, size=(32, 3))
    atype = rng.integers(0, 2, size=32)
    return coord, atype, cell.reshape(9)


def _systems(name: str, rcut: float) -> dict[str, tuple]:
    if name == "metal":
        return {"fcc": fcc_metal(1)}
    out = {}
    for kind, seed in (("cubic", 5), ("triclinic", 3)):
        s = standard_system(kind, 2, rcut, seed=seed)
        out[kind] = (s.coord.reshape(-1, 3), s.atype, s.cell.reshape(9))
    s = standard_system("cluster", 2, rcut, seed=7)
    out["cluster"] = (s.coord.reshape(-1, 3), s.atype, None)
    return out


def _lamkit(model, coord, atype, box):
    b = None if box is None else box.reshape(1, 9)
    return DeepPot(model).eval(coord.reshape(1, -1), b, atype, atomic=True)


@pytest.mark.parametrize("which", ["water", "metal"])
def test_reference_deep_pot_agrees(which, request):
    """deepmd.infer.DeepPot(x.pth).eval == lamkit DeepPot.eval, virials included."""
    dp_infer = pytest.importorskip("deepmd.infer", reason="the reference DeePMD-kit")
    model, path = request.getfixturevalue(which)
    ref = dp_infer.DeepPot(str(path))
    assert ref.get_type_map() == list(model.type_map)
    assert ref.get_rcut() == pytest.approx(model.rcut)
    assert ref.get_dim_fparam() == 0 and ref.get_dim_aparam() == 0
    for name, (coord, atype, box) in _systems(which, model.rcut).items():
        want = _lamkit(model, coord, atype, box)
        b = None if box is None else box.reshape(1, 9)
        got = ref.eval(coord.reshape(1, -1), b, atype, atomic=True)
        for key, w, g in zip(
            ("energy", "force", "virial", "atom_energy", "atom_virial"), want, got
        ):
            np.testing.assert_allclose(
                g, w.reshape(g.shape), rtol=1e-10, atol=1e-10, err_msg=f"{which} {name} {key}"
            )
        assert np.abs(want[1]).max() > 1e-3  # forces that could be wrong


def _engine_inputs(coord, atype, box, rcut, seed):
    """What an MD engine hands ``forward_lower``: the local atoms (wrapped into the cell)
    then ghosts (all 26 neighbouring images of the wrapped atoms, in a shuffled order), and a
    full neighbour list of every other extended atom within rcut + 1 Å (a skin), unsorted,
    followed by -1 padding."""
    rng = np.random.default_rng(seed)
    cell = box.reshape(3, 3)
    frac = coord @ np.linalg.inv(cell)
    local = (frac - np.floor(frac)) @ cell
    nloc = len(coord)
    shifts = np.array(
        [
            (i, j, k)
            for i in (-1, 0, 1)
            for j in (-1, 0, 1)
            for k in (-1, 0, 1)
            if (i, j, k) != (0, 0, 0)
        ]
    )
    ghost = (local[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    gmap = np.tile(np.arange(nloc), len(shifts))
    perm = rng.permutation(len(ghost))
    ext = np.concatenate([local, ghost[perm]])
    mapping = np.concatenate([np.arange(nloc), gmap[perm]])
    d = np.linalg.norm(ext[None] - local[:, None], axis=-1)
    rows = []
    for i in range(nloc):
        near = np.flatnonzero((d[i] < rcut + 1.0) & (np.arange(len(ext)) != i))
        rows.append(rng.permutation(near))
    width = max(len(r) for r in rows) + 3
    nlist = np.full((nloc, width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        nlist[i, : len(r)] = r
    assert (d[np.arange(nloc)[:, None], np.maximum(nlist, 0)] > rcut).any()  # beyond rcut
    return ext, atype[mapping], nlist, mapping


def test_forward_lower_without_lamkit(water, metal, tmp_path):
    """torch.jit.load in a process where ``import lamkit`` fails; forward_lower on an engine's
    list gives extended forces that add up to DeepPot's forces, and the virials."""
    inputs = {}
    want = {}
    for which, (model, path) in (("water", water), ("metal", metal)):
        coord, atype, box = _systems(which, model.rcut)["cubic" if which == "water" else "fcc"]
        ext, ext_atype, nlist, mapping = _engine_inputs(coord, atype, box, model.rcut, seed=3)
        inputs[which] = str(path)
        np.savez(
            tmp_path / f"{which}.npz", ext=ext, ext_atype=ext_atype, nlist=nlist, mapping=mapping
        )
        want[which] = _lamkit(model, coord, atype, box)
    code = (
        "import sys\n"
        "sys.modules['lamkit'] = None  # any import of lamkit now raises ImportError\n"
        "import numpy as np, torch\n"
        f"for which, path in {inputs!r}.items():\n"
        "    m = torch.jit.load(path)\n"
        "    d = np.load(which + '.npz')\n"
        "    out = m.forward_lower(torch.tensor(d['ext']).reshape(1, -1),\n"
        "        torch.tensor(d['ext_atype']).reshape(1, -1), torch.tensor(d['nlist'])[None],\n"
        "        None, None, None, True)\n"
        "    mapping = torch.tensor(d['mapping'])\n"
        "    nloc = d['nlist'].shape[0]\n"
        "    f = torch.zeros(nloc, 3, dtype=torch.float64).index_add(\n"
        "        0, mapping, out['extended_force'][0])\n"
        "    av = torch.zeros(nloc, 9, dtype=torch.float64).index_add(\n"
        "        0, mapping, out['extended_virial'][0])\n"
        "    np.savez(which + '_out.npz', energy=out['energy'].numpy(), force=f.numpy(),\n"
        "        virial=out['virial'].numpy(), atom_energy=out['atom_energy'].numpy(),\n"
        "        atom_virial=av.numpy(), type_map=m.get_type_map(), rcut=m.get_rcut(),\n"
        "        mp=m.has_message_passing())\n"
        "assert not any(k == 'lamkit' or k.startswith('lamkit.') for k in sys.modules\n"
        "    if sys.modules[k] is not None)\n"
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
    for which, (model, _) in (("water", water), ("metal", metal)):
        got = np.load(tmp_path / f"{which}_out.npz")
        assert list(got["type_map"]) == list(model.type_map) and not got["mp"]
        assert float(got["rcut"]) == model.rcut
        for key, w in zip(("energy", "force", "virial", "atom_energy", "atom_virial"), want[which]):
            np.testing.assert_allclose(
                got[key],
                w.reshape(got[key].shape),
                rtol=1e-10,
                atol=1e-10,
                err_msg=f"{which} {key}",
            )


def test_kinds_the_cxx_side_cannot_run_are_refused(tmp_path):
    """A dipole model: a one-line error naming the model kind."""
    model = build_model(
        {
            "type_map": ["O", "H"],
            "descriptor": {
                "type": "se_e2_a",
                "sel": [8, 8],
                "rcut": 3.0,
                "neuron": [4],
                "axis_neuron": 2,
                "seed": 1,
            },
            "fitting_net": {"type": "dipole", "neuron": [4], "seed": 1},
        }
    )
    randomize_statistics(model, 1)
    with pytest.raises(ModelFileError, match="dipole"):
        export_pth(model.eval(), tmp_path / "d.pth")
    assert not (tmp_path / "d.pth").exists()
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("which", ["water", "metal"])
def test_lammps_pair_style_deepmd(which, request, lmp, tmp_path):  # noqa: F811
    """LAMMPS ``pair_style deepmd`` (deepmd-kit 3.2.0's C++ DeepPotPT, torch 2.11) runs the
    lamkit-frozen file: energy, forces and virial of lamkit DeepPot to 1e-10. The metal's
    ``pair_coeff`` lists the elements in the other order than the model's type map."""
    model, path = request.getfixturevalue(which)
    if which == "water":
        coord, atype, box = _systems(which, model.rcut)["cubic"]
        names = list(model.type_map)
    else:
        coord, atype, box = fcc_metal(2)
        names = list(model.type_map)[::-1]
    cell = box.reshape(3, 3)
    frac = coord @ np.linalg.inv(cell)
    coord = (frac - np.floor(frac)) @ cell  # inside the box for read_data
    lmp_type = np.array([names.index(model.type_map[t]) for t in atype])
    want_e, want_f, want_v = DeepPot(model).eval(coord.reshape(1, -1), box.reshape(1, 9), atype)
    assert np.abs(want_f).max() > 1e-3
    for ranks in (1, 2) if which == "metal" else (1,):
        e, f, v = run_lammps(lmp, path, coord, lmp_type, cell, names, tmp_path, ranks=ranks)
        np.testing.assert_allclose(e, want_e.item(), rtol=1e-10, err_msg=f"{ranks} ranks")
        np.testing.assert_allclose(f, want_f.reshape(-1, 3), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(v, voigt(want_v), rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def e3_params(tmp_path_factory):
    """(lamkit model, .pth) for se_e3_tebd with 2 frame parameters and 1 atomic parameter."""
    model = build_model(
        {
            "type_map": ["O", "H"],
            "descriptor": {
                "type": "se_e3_tebd",
                "sel": 40,
                "rcut": 4.0,
                "rcut_smth": 0.5,
                "neuron": [4, 8],
                "tebd_dim": 4,
                "seed": 3,
            },
            "fitting_net": {"neuron": [8], "numb_fparam": 2, "numb_aparam": 1, "seed": 3},
        }
    )
    randomize_statistics(model, 3)
    model.eval().requires_grad_(False)
    return model, export_pth(model, tmp_path_factory.mktemp("pth_e3") / "e3.pth")


def test_se_e3_tebd_with_frame_and_atomic_parameters(e3_params):
    """se_e3_tebd with fparam and aparam: the reference's DeepPot passes them to the file and
    gets lamkit's numbers; a different fparam changes the energy."""
    dp_infer = pytest.importorskip("deepmd.infer", reason="the reference DeePMD-kit")
    model, path = e3_params
    ref = dp_infer.DeepPot(str(path))
    assert ref.get_dim_fparam() == 2 and ref.get_dim_aparam() == 1
    coord, atype, box = _systems("water", model.rcut)["triclinic"]
    rng = np.random.default_rng(0)
    fparam, aparam = rng.normal(size=(1, 2)), rng.normal(size=(1, len(atype), 1))
    frame = (coord.reshape(1, -1), box.reshape(1, 9), atype)
    want = DeepPot(model).eval(*frame, fparam=fparam, aparam=aparam, atomic=True)
    got = ref.eval(*frame, fparam=fparam, aparam=aparam, atomic=True)
    for key, w, g in zip(("energy", "force", "virial", "atom_energy", "atom_virial"), want, got):
        np.testing.assert_allclose(g, w.reshape(g.shape), rtol=1e-10, atol=1e-10, err_msg=key)
    other = ref.eval(*frame, fparam=fparam + 1.0, aparam=aparam)
    assert abs(other[0] - got[0]).max() > 1e-6  # fparam reaches the fitting
    # two frames in one call (the file evaluates them one by one)
    two = np.concatenate([frame[0], frame[0] + 0.05 * rng.normal(size=frame[0].shape)])
    boxes = np.repeat(frame[1], 2, axis=0)
    fp2, ap2 = np.concatenate([fparam, fparam + 1.0]), np.concatenate([aparam, aparam])
    got2 = ref.eval(two, boxes, atype, fparam=fp2, aparam=ap2)
    want2 = DeepPot(model).eval(two, boxes, atype, fparam=fp2, aparam=ap2)
    for key, w, g in zip(("energy", "force", "virial"), want2, got2):
        np.testing.assert_allclose(g, w.reshape(g.shape), rtol=1e-10, atol=1e-10, err_msg=key)


def test_lammps_frame_and_atomic_parameters(e3_params, lmp, tmp_path):  # noqa: F811
    """``pair_style deepmd x.pth fparam a b aparam c`` reaches the model's fitting."""
    model, path = e3_params
    coord, atype, box = _systems("water", model.rcut)["cubic"]
    cell = box.reshape(3, 3)
    coord = coord - np.floor(coord @ np.linalg.inv(cell)) @ cell
    fparam, aparam = np.array([[0.3, -0.7]]), np.full((1, len(atype), 1), 0.4)
    extra = "fparam 0.3 -0.7 aparam 0.4"
    e, f, v = run_lammps(lmp, path, coord, atype, cell, ["O", "H"], tmp_path, extra=extra)
    want = DeepPot(model).eval(
        coord.reshape(1, -1), box.reshape(1, 9), atype, fparam=fparam, aparam=aparam
    )
    np.testing.assert_allclose(e, want[0].item(), rtol=1e-10)
    np.testing.assert_allclose(f, want[1].reshape(-1, 3), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(v, voigt(want[2]), rtol=1e-10, atol=1e-10)


def test_lammps_nve_conserves_energy(metal, lmp, tmp_path):  # noqa: F811
    """1,000 NVE steps (1 fs, 300 K) of the metal under pair_style deepmd: the total energy
    stays within 1e-4 eV/atom of its start while the potential energy moves."""
    model, path = metal
    coord, atype, box = fcc_metal(3)
    cell = box.reshape(3, 3)
    coord = coord - np.floor(coord @ np.linalg.inv(cell)) @ cell
    names = list(model.type_map)
    run_lammps(lmp, path, coord, atype, cell, names, tmp_path)  # writes data.lmp
    (tmp_path / "nve.lmp").write_text(
        f"""units metal
boundary p p p
atom_style atomic
atom_modify map yes
read_data data.lmp
mass 1 63.546
mass 2 196.97
pair_style deepmd {path}
pair_coeff * * {" ".join(names)}
velocity all create 300 7 mom yes rot no
timestep 0.001
fix 1 all nve
thermo_style custom step pe etotal
thermo_modify format float %.17g
thermo 50
run 1000
"""
    )
    exe, env = lmp
    run = subprocess.run(
        [exe, "-in", "nve.lmp", "-log", "nve.log"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    log = (tmp_path / "nve.log").read_text().splitlines()
    (head,) = [k for k, line in enumerate(log) if line.split()[:2] == ["Step", "PotEng"]]
    rows = np.array([[float(x) for x in line.split()] for line in log[head + 1 : head + 22]])
    assert rows[-1, 0] == 1000
    drift = np.abs(rows[:, 2] - rows[0, 2]).max() / len(coord)
    assert drift < 1e-4, drift
    assert np.ptp(rows[:, 1]) / len(coord) > 100 * drift  # the atoms did move


def test_multi_task_head_runs_in_lammps(lmp, tmp_path):  # noqa: F811
    """``lam freeze --format pth --head au`` of a two-branch checkpoint: pair_style deepmd
    gives the energy, forces and virial of that branch (whose energies differ from the
    other's)."""
    from lamkit.model.io import FORMAT, VERSION, atomic_save

    base = load_model(tiny_model_file(tmp_path / "model.pth"))
    state = base.state_dict()
    shifted = {k: v + 0.5 if k.endswith("out_bias") else v for k, v in state.items()}
    assert any(k.endswith("out_bias") for k in state)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "checkpoint",
        "model_config": {"model_dict": {"cu": base.config, "au": base.config}},
        "model_state": {
            **{f"cu.{k}": v for k, v in state.items()},
            **{f"au.{k}": v for k, v in shifted.items()},
        },
    }
    atomic_save(payload, tmp_path / "multi.pt")
    out = tmp_path / "au.pth"
    cmd = ["freeze", "-c", str(tmp_path / "multi.pt"), "-o", str(out), "--format", "pth"]
    assert main([*cmd, "--head", "au"]) == 0
    coord, atype, box = fcc_metal(4)
    cell = box.reshape(3, 3)
    coord = coord - np.floor(coord @ np.linalg.inv(cell)) @ cell
    frame = (coord.reshape(1, -1), box.reshape(1, 9), atype)
    want = DeepPot(load_model(tmp_path / "multi.pt", head="au")).eval(*frame)
    other = DeepPot(load_model(tmp_path / "multi.pt", head="cu")).eval(*frame)
    assert abs(want[0] - other[0]).max() > 1.0  # the branches differ
    e, f, v = run_lammps(lmp, out, coord, atype, cell, list(base.type_map), tmp_path)
    np.testing.assert_allclose(e, want[0].item(), rtol=1e-10)
    np.testing.assert_allclose(f, want[1].reshape(-1, 3), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(v, voigt(want[2]), rtol=1e-10, atol=1e-10)
