"""lamkit.props against answers computed independently here with ASE's EMT on Cu, Ni and Al:
lattice constant and bulk modulus (a direct minimum search and a finite-difference curvature),
C11/C12/C44 (central finite differences of the energy), the relaxed vacancy formation energy,
the (111) surface energy and the intrinsic stacking-fault energy (a stacking sequence with
faults built layer by layer), phonon bands (a direct phonopy run); the batched lamkit path
equals the one-structure-at-a-time ASE path; ``lam props`` writes APEX's result.json files and
refuses bad input with one-line errors."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.optimize import FIRE
from scipy.optimize import minimize_scalar

from lamkit.cli.main import main
from lamkit.props import (
    PropsError,
    compute_elastic,
    compute_eos,
    compute_gamma,
    compute_interstitial,
    compute_phonon,
    compute_surface,
    compute_vacancy,
    relax_crystal,
)
from lamkit.props.common import EV_A2_TO_J_M2, EV_A3_TO_GPA

pytestmark = pytest.mark.usefixtures("one_thread")

ELEMENTS = ("Cu", "Ni", "Al")


def emt_energy(atoms: Atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return float(atoms.get_potential_energy())


def fcc_energy(symbol: str, a: float) -> float:
    """Energy per atom of the one-atom fcc cell of lattice constant ``a``."""
    return emt_energy(bulk(symbol, "fcc", a=a))


@pytest.fixture(scope="module", params=ELEMENTS)
def crystal(request):
    """(symbol, a0 found by a direct minimum search, relaxed conventional cell from lamkit)."""
    symbol = request.param
    a0 = minimize_scalar(
        lambda a: fcc_energy(symbol, a), bounds=(3.0, 4.6), method="bounded",
        options={"xatol": 1e-9},
    ).x
    relaxed = relax_crystal(EMT(), bulk(symbol, "fcc", a=a0 * 1.02, cubic=True), fmax=1e-4)
    return symbol, a0, relaxed


def test_lattice_constant_and_bulk_modulus(crystal):
    symbol, a0, relaxed = crystal
    assert relaxed.converged
    a_relaxed = relaxed.atoms.get_volume() ** (1.0 / 3.0)
    assert a_relaxed == pytest.approx(a0, rel=1e-5)
    eos = compute_eos(EMT(), relaxed.atoms, vol_start=0.97, vol_end=1.03, vol_step=0.005)
    assert (4.0 * eos.fit.v0) ** (1.0 / 3.0) == pytest.approx(a0, rel=2e-4)
    # B = V d2E/dV2 at V0 by central differences of the energy per atom, V = a^3 / 4
    def bulk_modulus(v: float) -> float:
        h = 1e-3 * v
        e = [fcc_energy(symbol, (4.0 * (v + k * h)) ** (1.0 / 3.0)) for k in (-1, 0, 1)]
        return v * (e[0] - 2.0 * e[1] + e[2]) / h**2

    v0 = a0**3 / 4.0
    b_direct = bulk_modulus(v0)
    assert eos.fit.b0 == pytest.approx(b_direct * EV_A3_TO_GPA, rel=5e-3)
    # B' = dB/dP = -(V / B) dB/dV
    dv = 0.01 * v0
    b_prime = -v0 / b_direct * (bulk_modulus(v0 + dv) - bulk_modulus(v0 - dv)) / (2 * dv)
    assert eos.fit.b0_prime == pytest.approx(b_prime, rel=0.05)
    assert eos.fit.e0 == pytest.approx(fcc_energy(symbol, a0), abs=1e-5)


def strained_energy(symbol: str, a0: float, voigt) -> float:
    """Energy of the one-atom cell deformed by F = I + eps (engineering shears)."""
    e1, e2, e3, e4, e5, e6 = voigt
    eps = np.array([[e1, e6 / 2, e5 / 2], [e6 / 2, e2, e4 / 2], [e5 / 2, e4 / 2, e3]])
    atoms = bulk(symbol, "fcc", a=a0)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
    return emt_energy(atoms)


def test_elastic_constants_equal_energy_finite_differences(crystal):
    symbol, a0, relaxed = crystal
    el = compute_elastic(EMT(), relaxed.atoms, norm_deform=0.005, shear_deform=0.005)
    h, volume = 1e-3, a0**3 / 4.0

    def energy(**strain):
        voigt = [strain.get(f"e{k}", 0.0) for k in range(1, 7)]
        return strained_energy(symbol, a0, voigt)

    e0 = energy()
    c11 = (energy(e1=h) - 2 * e0 + energy(e1=-h)) / h**2
    c12 = (energy(e1=h, e2=h) - energy(e1=h, e2=-h) - energy(e1=-h, e2=h)
           + energy(e1=-h, e2=-h)) / (4 * h**2)
    c44 = (energy(e4=h) - 2 * e0 + energy(e4=-h)) / h**2
    direct = np.array([c11, c12, c44]) / volume * EV_A3_TO_GPA
    got = np.array([el.cij[0, 0], el.cij[0, 1], el.cij[3, 3]])
    np.testing.assert_allclose(got, direct, rtol=5e-3)
    # cubic symmetry, and moduli consistent with the constants
    np.testing.assert_allclose(np.diag(el.cij)[:3], el.cij[0, 0], rtol=1e-4)
    assert abs(el.cij[0, 3:]).max() < 1e-3 * el.cij[0, 0]
    assert el.moduli["BV"] == pytest.approx((c11 + 2 * c12) / 3 / volume * EV_A3_TO_GPA, rel=5e-3)
    assert el.moduli["BV"] == pytest.approx(el.moduli["BR"], rel=1e-9)
    assert el.moduli["GR"] <= el.moduli["GH"] <= el.moduli["GV"]
    data = el.to_result_json()
    assert len(data["elastic_tensor"]) == 6 and {"BV", "GV", "EV", "uV"} <= set(data)


def test_elastic_hcp_symmetry_and_ionic_relaxation():
    """hcp: C66 = (C11 - C12) / 2 with clamped and relaxed ions; hcp has internal strain, so
    relaxing the ions softens the crystal (clamped - relaxed is positive semi-definite)."""
    hcp = relax_crystal(EMT(), bulk("Cu", "hcp", a=2.55, covera=1.63), fmax=1e-4).atoms
    relaxed = compute_elastic(EMT(), hcp).cij
    clamped = compute_elastic(EMT(), hcp, relax_ions=False).cij
    for c in (relaxed, clamped):
        assert c[5, 5] == pytest.approx((c[0, 0] - c[0, 1]) / 2, rel=1e-2)
        assert c[0, 0] == pytest.approx(c[1, 1], rel=1e-2)
    assert np.linalg.eigvalsh(clamped - relaxed).min() > -0.5
    assert relaxed[5, 5] < 0.9 * clamped[5, 5]


def test_vacancy_formation_energy_direct(crystal):
    symbol, _, relaxed = crystal
    res = compute_vacancy(EMT(), relaxed.atoms, supercell=(2, 2, 2), fmax=1e-3)
    cell = relaxed.atoms * (2, 2, 2)
    cell.calc = None
    e_bulk = emt_energy(cell)
    del cell[0]
    cell.calc = EMT()
    FIRE(cell, logfile=None).run(fmax=1e-3, steps=2000)
    e_direct = cell.get_potential_energy() - e_bulk * 31 / 32
    (label,) = res.labels
    assert res.formation[0] == pytest.approx(e_direct, abs=2e-3)
    assert res.to_result_json()[label][0] == res.formation[0]
    assert 0.3 < e_direct < 2.5  # and it is a physical number
    # an unrelaxed octahedral interstitial (the largest void of fcc), computed directly
    inter = compute_interstitial(EMT(), relaxed.atoms, supercell=(2, 2, 2), relax=False)
    cell = relaxed.atoms * (2, 2, 2)
    cell.calc = None
    cell.append(symbol)
    cell.positions[-1] = cell.cell.array.sum(0) / 4  # (a/2, a/2, a/2): octahedral
    expected = emt_energy(cell) - e_bulk * 33 / 32
    assert inter.formation[0] == pytest.approx(expected, abs=1e-9)


def test_surface_energy_111_direct(crystal):
    symbol, a0, relaxed = crystal
    res = compute_surface(EMT(), relaxed.atoms, millers=[(1, 1, 1)], min_thickness=8.0,
                          vacuum=8.0, fmax=1e-3)
    layers = round(len(res.slabs[0]) / 4)  # the conventional (111) cell holds 4 atoms a layer
    slab = fcc111(symbol, (1, 1, layers), a=a0, vacuum=8.0, periodic=False)
    slab.pbc = True
    slab.calc = EMT()
    FIRE(slab, logfile=None).run(fmax=1e-3, steps=2000)
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    e_bulk = fcc_energy(symbol, a0)
    gamma = (slab.get_potential_energy() - layers * e_bulk) / (2 * area) * EV_A2_TO_J_M2
    assert res.gamma[0] == pytest.approx(gamma, abs=2e-3)
    assert res.summary()["111"] == res.gamma[0]


def faulted_stack(symbol: str, a0: float, steps: list[int]) -> Atoms:
    """fcc (111) layers in a hexagonal cell: layer k+1 sits ``steps[k]`` stacking positions
    after layer k (1: perfect, 2: an intrinsic fault); periodic when sum(steps) % 3 == 0."""
    assert sum(steps) % 3 == 0
    b = a0 / np.sqrt(2.0)
    d = a0 / np.sqrt(3.0)
    a1, a2 = np.array([b, 0, 0]), np.array([b / 2, b * np.sqrt(3) / 2, 0])
    site, positions = 0, []
    for k, step in enumerate(steps):
        positions.append(site * (a1 + a2) / 3 + [0, 0, k * d])
        site = (site + step) % 3
    cell = [a1, a2, [0, 0, len(steps) * d]]
    return Atoms(symbol * len(steps), positions=positions, cell=cell, pbc=True)


def test_intrinsic_stacking_fault_direct(crystal):
    symbol, a0, relaxed = crystal
    res = compute_gamma(EMT(), relaxed.atoms, n_steps=6, relax=False)
    a = relaxed.atoms.get_volume() ** (1.0 / 3.0)  # the same lattice: the ISF is a small
    perfect = faulted_stack(symbol, a, [1] * 18)  # difference, sensitive to it
    faulted = faulted_stack(symbol, a, ([1] * 5 + [2]) * 3)  # three faults, 6 layers apart
    area = np.linalg.norm(np.cross(perfect.cell[0], perfect.cell[1]))
    isf = (emt_energy(faulted) - emt_energy(perfect)) / (3 * area) * EV_A2_TO_J_M2
    assert res.intrinsic == pytest.approx(isf, abs=1e-9)
    assert res.gamma[0] == 0.0 and res.gamma[-1] == pytest.approx(0.0, abs=1e-6)
    assert res.unstable > max(res.intrinsic, 0.05)
    # relaxed (atoms along z): the faulted stack relaxed directly
    relaxed_line = compute_gamma(EMT(), relaxed.atoms, n_steps=3, fmax=1e-3)
    faulted.calc = EMT()
    FIRE(faulted, logfile=None).run(fmax=1e-3, steps=2000)
    isf_relaxed = (faulted.get_potential_energy() - emt_energy(perfect)) / (3 * area)
    assert relaxed_line.intrinsic == pytest.approx(isf_relaxed * EV_A2_TO_J_M2, abs=2e-3)


def test_bcc_gamma_line_is_symmetric():
    res = compute_gamma(EMT(), bulk("Cu", "bcc", a=2.87), n_steps=8, relax=False)
    assert res.lattice == "bcc" and res.intrinsic is None
    np.testing.assert_allclose(res.gamma, res.gamma[::-1], atol=1e-8)
    assert res.unstable == pytest.approx(res.gamma[4]) and res.unstable > 0


def test_phonon_bands_equal_direct_phonopy(tmp_path):
    phonopy = pytest.importorskip("phonopy", reason="phonons need phonopy (props extra)")
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = relax_crystal(EMT(), bulk("Cu", "fcc", a=3.6)).atoms
    res = compute_phonon(EMT(), atoms, supercell=(3, 3, 3), npoints=11, mesh=(8, 8, 8))
    unit = PhonopyAtoms(symbols=["Cu"], cell=atoms.cell.array,
                        scaled_positions=atoms.get_scaled_positions())
    ph = phonopy.Phonopy(unit, supercell_matrix=np.diag([3, 3, 3]), primitive_matrix="P")
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        a = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        a.calc = EMT()
        forces.append(a.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    direct = np.array([ph.get_frequencies(q) for q in res.qpoints])
    np.testing.assert_allclose(res.frequencies, direct, atol=1e-8)
    # Gamma at the path start: three acoustic modes at zero; the picture is drawn
    assert abs(res.frequencies[0]).max() < 1e-3 and res.frequencies.max() > 5.0
    assert res.plot(tmp_path / "ph.png").stat().st_size > 10_000
    assert res.to_result_json()["nqpoint"] == len(res.qpoints)


class Unbatched(Calculator):
    """An ASE calculator hiding a LamCalculator (so lamkit.props takes the ASE path)."""

    implemented_properties: ClassVar[list[str]] = ["energy", "forces", "stress"]

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.inner
        self.results = {
            "energy": a.get_potential_energy(),
            "forces": a.get_forces(),
            "stress": a.get_stress(),
        }


def test_lamkit_model_batched_equals_ase_path(tmp_path):
    from lamkit.infer import DeepPot, LamCalculator
    from lamkit.testing.alloys import make_se_e2_a

    calc = LamCalculator(DeepPot(make_se_e2_a(), device="cpu"))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    batched = compute_elastic(calc, atoms, relax_ions=False)
    serial = compute_elastic(Unbatched(calc), atoms, relax_ions=False)
    np.testing.assert_allclose(batched.cij, serial.cij, atol=1e-6)
    vac_b = compute_vacancy(calc, atoms, supercell=(1, 1, 2), relax=False)
    vac_s = compute_vacancy(Unbatched(calc), atoms, supercell=(1, 1, 2), relax=False)
    np.testing.assert_allclose(vac_b.formation, vac_s.formation, atol=1e-9)
    # lam props --model: the same numbers from a model file
    from lamkit.model import save_model

    save_model(make_se_e2_a(), tmp_path / "model.pt")
    atoms.write(tmp_path / "Cu.vasp", format="vasp")
    args = ["props", "-s", str(tmp_path / "Cu.vasp"), "-m", str(tmp_path / "model.pt"),
            "-p", "elastic", "--no-relax", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    data = json.loads((tmp_path / "out" / "Cu" / "elastic" / "result.json").read_text())
    np.testing.assert_allclose(data["elastic_tensor"], batched.cij, atol=1e-6)


def test_cli_writes_apex_results(tmp_path, capsys):
    path = tmp_path / "Al.vasp"
    bulk("Al", "fcc", a=4.0, cubic=True).write(path, format="vasp")
    out = tmp_path / "out"
    rc = main(["props", "--structure", str(path), "--calc", "emt", "--props", "eos", "vacancy",
               "-o", str(out)])
    assert rc == 0
    eos = json.loads((out / "Al" / "eos" / "result.json").read_text())
    assert len(eos) == 9 and all(float(v) > 0 for v in eos)  # volume/atom -> energy/atom
    vac = json.loads((out / "Al" / "vacancy" / "result.json").read_text())
    (row,) = vac.values()
    assert row[0] == pytest.approx(row[1] - row[2])
    assert (out / "Al" / "eos" / "eos.png").stat().st_size > 10_000
    relax = json.loads((out / "Al" / "relaxation" / "result.json").read_text())
    assert relax["data"]["atom_names"] == ["Al"] and relax["data"]["atom_numbs"] == [4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["Al"]["vacancy"] == {k: v[0] for k, v in vac.items()}
    # an APEX-style param.json with options
    conf = tmp_path / "param.json"
    conf.write_text(json.dumps({
        "structures": [str(path)],
        "interaction": {"type": "emt"},
        "relaxation": {"fmax": 0.01},
        "properties": [{"type": "gamma", "n_steps": 3, "relax": False},
                       {"type": "elastic", "skip": True}],
    }))
    assert main(["props", str(conf), "-o", str(out)]) == 0
    assert (out / "Al" / "gamma" / "gamma.png").is_file()
    assert not (out / "Al" / "elastic").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--props", "eso"], "unknown property 'eso'"),
        (["--props", "eos"], None),
    ],
)
def test_cli_errors(tmp_path, capsys, args, message):
    path = tmp_path / "Cu.vasp"
    bulk("Cu", "fcc", a=3.6).write(path, format="vasp")
    base = ["props", "--structure", str(path), "--calc", "emt", "-o", str(tmp_path / "o")]
    if message is None:  # an unknown option in param.json, a missing structure file
        conf = tmp_path / "p.json"
        conf.write_text(json.dumps({"structures": [str(path)], "interaction": {"type": "emt"},
                                    "properties": [{"type": "eos", "vol_strat": 0.9}]}))
        assert main(["props", str(conf)]) == 2
        assert "unknown option 'vol_strat'" in capsys.readouterr().err
        conf.write_text(json.dumps({"structures": [str(path)], "interaction": {"type": "emt"},
                                    "properties": [{"type": "vacancy", "supercell": "2x2"}]}))
        assert main(["props", str(conf), "-o", str(tmp_path / "o")]) == 2
        assert "Cu vacancy:" in capsys.readouterr().err
        assert main(["props", "--structure", "nope.vasp", "--calc", "emt", "-p", "eos"]) == 2
        assert "no file matches 'nope.vasp'" in capsys.readouterr().err
        return
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Did you mean 'eos'" in err and "Traceback" not in err


def test_bad_inputs_are_clear():
    with pytest.raises(PropsError, match="needs a periodic crystal"):
        compute_eos(EMT(), Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]]))
    with pytest.raises(PropsError, match="one element"):
        compute_gamma(EMT(), bulk("CuAu", "rocksalt", a=5.0))
    with pytest.raises(PropsError, match="multiple of 3"):
        compute_gamma(EMT(), bulk("Cu", "fcc", a=3.6), n_steps=4)
