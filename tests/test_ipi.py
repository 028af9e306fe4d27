"""lam ipi: the i-PI force client answers what DeepPot computes, alone and as a committee,
through ASE's socket server and through a real i-PI NVE run; dp_ipi JSON files read unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units

from lamkit.errors import ConfigError, DataError
from lamkit.infer import DeepPot
from lamkit.ipi import DriverConfig, IPIDriver, load_json
from lamkit.model import build_model, save_model

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "sel": [20, 40], "rcut": 4.0, "rcut_smth": 0.5,
                   "neuron": [8, 16], "axis_neuron": 4, "seed": 1},
    "fitting_net": {"neuron": [16, 16], "seed": 1},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny O/H models that differ (seeds, biases, statistics)."""
    folder = tmp_path_factory.mktemp("ipi")
    paths = []
    for k in range(2):
        conf = json.loads(json.dumps(CONFIG))
        conf["descriptor"]["seed"] = conf["fitting_net"]["seed"] = k + 1
        model = build_model(conf)
        g = torch.Generator().manual_seed(k)
        with torch.no_grad():
            d = model.descriptor
            d.davg.copy_(0.1 * torch.rand(d.davg.shape, generator=g, dtype=d.davg.dtype))
            d.dstd.copy_(0.05 + 0.2 * torch.rand(d.dstd.shape, generator=g, dtype=d.dstd.dtype))
            model.out_bias.copy_(torch.tensor([[-93.6 - k], [-187.2 + k]], dtype=torch.float64))
        paths.append(folder / f"m{k}.pt")
        save_model(model, paths[-1])
    return paths


def water_box(seed: int = 0) -> Atoms:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (2, 2, 3)], indexing="ij"), -1)
    pos = grid.reshape(-1, 3) * [3.0, 3.0, 2.0] + 0.5 + rng.normal(scale=0.2, size=(12, 3))
    cell = np.diag([6.0, 6.2, 5.9]) + [[0, 0, 0], [0.3, 0, 0], [0.2, -0.1, 0]]
    return Atoms("OH2" * 4, positions=pos, cell=cell, pbc=True)


def direct(model, atoms: Atoms):
    dp = DeepPot(model, device="cpu")
    types = [dp.get_type_map().index(s) for s in atoms.get_chemical_symbols()]
    e, f, v = dp.eval(atoms.positions[None], atoms.cell.array.reshape(1, 9), types)
    return float(e.reshape(-1)[0]), f.reshape(-1, 3), v.reshape(3, 3)


def socket_name() -> str:
    return f"lamkit_{uuid.uuid4().hex[:10]}"


def serve_once(models, atoms: Atoms) -> dict:
    """ASE's i-PI socket server asks the driver (in a thread) for one evaluation."""
    from ase.calculators.socketio import SocketServer

    name = socket_name()
    conf = DriverConfig(models=[str(m) for m in models],
                        atom_names=atoms.get_chemical_symbols(), use_unix=True, host=name,
                        device="cpu", timeout=60)
    driver = IPIDriver(conf.models, conf)
    server = SocketServer(unixsocket=name, timeout=60)
    thread = threading.Thread(target=driver.serve, daemon=True)
    thread.start()
    try:
        result = server.calculate(atoms)
    finally:
        server.close()
        thread.join(timeout=30)
    assert not thread.is_alive()
    return result


def test_single_model_through_the_socket(models):
    atoms = water_box()
    r = serve_once(models[:1], atoms)
    e, f, v = direct(models[0], atoms)
    np.testing.assert_allclose(r["energy"], e, rtol=1e-12)
    np.testing.assert_allclose(r["forces"], f, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r["virial"], v, rtol=1e-10, atol=1e-12)


def test_committee_mean_and_members_in_the_extras(models):
    atoms = water_box(1)
    r = serve_once(models, atoms)
    members = [direct(m, atoms) for m in models]
    assert abs(members[0][0] - members[1][0]) > 1e-3  # the members really differ
    np.testing.assert_allclose(r["energy"], np.mean([m[0] for m in members]), rtol=1e-12)
    np.testing.assert_allclose(r["forces"], np.mean([m[1] for m in members], 0), atol=1e-12)
    extras = json.loads(bytes(r["morebytes"]).decode())
    np.testing.assert_allclose(np.array(extras["committee_pot"]) * units.Ha,
                               [m[0] for m in members], rtol=1e-12)
    frc = np.array(extras["committee_force"]).reshape(2, -1, 3) * units.Ha / units.Bohr
    np.testing.assert_allclose(frc, [m[1] for m in members], atol=1e-12)
    vir = np.array(extras["committee_virial"]).reshape(2, 3, 3) * units.Ha
    np.testing.assert_allclose(vir, [m[2] for m in members], atol=1e-12)


def test_dp_ipi_json_is_read_unchanged(tmp_path, models):
    (tmp_path / "conf.xyz").write_text(
        "3\nwater\nOW 0 0 0\nHW1 0.9 0 0\nHW2 -0.3 0.9 0\n")
    (tmp_path / "water.json").write_text(json.dumps({
        "verbose": False, "use_unix": True, "port": 31415, "host": "localhost",
        "graph_file": str(models[0]), "coord_file": "conf.xyz",
        "atom_type": {"OW": 0, "HW1": 1, "HW2": 1}}))
    conf = load_json(tmp_path / "water.json")
    assert conf.atom_names == ["OW", "HW1", "HW2"] and conf.use_unix
    np.testing.assert_array_equal(conf.types_for(["O", "H"], "m"), [0, 1, 1])
    bad = json.loads((tmp_path / "water.json").read_text())
    bad["atom_type"] = {"OW": 0, "HW1": 1}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="atom 2 is named 'HW2'"):
        load_json(tmp_path / "bad.json").types_for(["O", "H"], "m")
    bad["atom_type"] = {"OW": 0, "HW1": 1, "HW2": 5}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="maps 'HW2' to 5"):
        load_json(tmp_path / "bad.json").types_for(["O", "H"], "m")
    bad["graph_fiel"] = bad.pop("graph_file")
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="unknown key"):
        load_json(tmp_path / "bad.json")
    (tmp_path / "short.xyz").write_text("5\nx\nO 0 0 0\n")
    with pytest.raises(DataError, match="says 5 atoms"):
        from lamkit.ipi.config import read_xyz_names

        read_xyz_names(tmp_path / "short.xyz")


def test_unknown_element_and_cli_errors(models, tmp_path):
    ase.io.write(tmp_path / "cu.extxyz", Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]]))
    conf = DriverConfig(models=[str(models[0])], atom_names=["Cu", "Cu"])
    with pytest.raises(ConfigError, match="'Cu', which is not in the type map"):
        IPIDriver(conf.models, conf)
    p = subprocess.run([sys.executable, "-m", "lamkit.ipi", "-m", str(models[0])],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "give a dp_ipi JSON file" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "lamkit", "ipi", "-m", str(models[0]), "-s",
                        str(tmp_path / "cu.extxyz"), "--unix", socket_name()],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "not in the type map" in p.stderr and "Traceback" not in p.stderr


INPUT_XML = """<simulation verbosity="low">
  <output prefix="sim">
    <properties stride="1" filename="out">[step, potential{{electronvolt}}]</properties>
    <trajectory filename="pos" stride="1" format="ase">positions</trajectory>
    {extra_out}
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  {forcefield}
  <system>
    <initialize nbeads="1">
      <file mode="ase">init.extxyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="lam"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nve"><timestep units="femtosecond">0.5</timestep></dynamics>
    </motion>
  </system>
</simulation>
"""


def run_ipi(folder, models, committee: bool, steps: int = 4):
    """i-PI (a subprocess) integrates NVE with `lam ipi` as its force client."""
    pytest.importorskip("ipi", reason="i-PI (pip install ipi) drives the client")
    ipi = shutil.which("i-pi")
    if ipi is None:
        pytest.skip("the i-pi command is not on PATH")
    name = socket_name()
    sock = f'<ffsocket name="{"lamc" if committee else "lam"}" mode="unix">' \
           f"<address>{name}</address></ffsocket>"
    ff = (f'<ffcommittee name="lam"><parse_json>true</parse_json>{sock}</ffcommittee>'
          if committee else sock)
    extra = ('<trajectory filename="cpot" stride="1" extra_type="committee_pot">extras'
             "</trajectory>") if committee else ""
    ase.io.write(folder / "init.extxyz", water_box(2))
    (folder / "input.xml").write_text(INPUT_XML.format(extra_out=extra, steps=steps,
                                                       forcefield=ff))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen([ipi, "input.xml"], cwd=folder, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = subprocess.run(
            [sys.executable, "-m", "lamkit.ipi", "-m", *map(str, models), "-s",
             str(folder / "init.extxyz"), "--unix", name, "--device", "cpu", "--timeout", "60"],
            cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        out, _ = server.communicate(timeout=60)
    finally:
        server.kill()
    assert client.returncode == 0, client.stderr
    assert server.returncode == 0, out
    assert f"{steps + 1} evaluations" in client.stdout
    pot = np.loadtxt(folder / "sim.out")[:, 1]
    frames = ase.io.read(folder / "sim.pos_0.extxyz", ":")
    assert len(frames) == len(pot) == steps + 1
    return pot, frames


# i-PI converts eV <-> Hartree with its own constants, ASE's IPIProtocol (our side) with
# CODATA's: they differ by about 1e-7 relative, so the energies i-PI prints agree to that
RTOL_UNITS = 5e-7


def test_ipi_nve_run_with_one_model(tmp_path, models):
    pot, frames = run_ipi(tmp_path, models[:1], committee=False)
    assert np.ptp(np.array([f.positions for f in frames]), axis=0).max() > 1e-4  # atoms moved
    for e, atoms in zip(pot, frames):
        atoms.set_cell(water_box(2).cell)
        np.testing.assert_allclose(e, direct(models[0], atoms)[0], rtol=RTOL_UNITS)


def test_ipi_committee_run(tmp_path, models):
    pot, frames = run_ipi(tmp_path, models, committee=True)
    blocks = [line for line in (tmp_path / "sim.cpot_0").read_text().splitlines()
              if not line.lstrip().startswith("#")]
    members = np.array([[float(x) for x in line.split()] for line in blocks]) * units.Ha
    assert members.shape == (len(frames), 2)
    for e, row, atoms in zip(pot, members, frames):
        atoms.set_cell(water_box(2).cell)
        want = [direct(m, atoms)[0] for m in models]
        np.testing.assert_allclose(row, want, rtol=RTOL_UNITS)
        np.testing.assert_allclose(e, np.mean(want), rtol=RTOL_UNITS)
