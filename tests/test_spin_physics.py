"""Spin models (lamkit.model.spin): physics in float64 and the config checks.

Forces are ``-dE/dR`` and magnetic forces ``-dE/ds`` by central finite differences, the virial
is ``-(dE/d eps)^T`` under the strain ``R -> R (I + eps)`` with the spins held fixed (the
reference's definition), atomic energies and virials sum to the totals, and rotating positions,
cell and spins together rotates every vector output (se_e2_a and DPA-1 backbones, periodic and
non-periodic systems). Non-magnetic atoms have zero magnetic force; a spin's direction matters
(the model is not blind to the spins); a saved model reloads with the same numbers; the
analytic labels of :mod:`lamkit.testing.spin_data` are checked against finite differences too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.errors import ConfigError
from lamkit.model import build_model, load_model, save_model
from lamkit.model.spin import SpinEnergyModel, normalize_spin
from lamkit.testing import standard_system
from lamkit.testing.models import randomize_statistics
from lamkit.testing.physics import assert_close
from lamkit.testing.spin_data import label_frame, nio_frames
from lamkit.testing.systems import System, pad_with_virtual

pytestmark = pytest.mark.usefixtures("one_thread")

TYPE_MAP = ["Fe", "O", "Co"]
RCUT = 4.0
DESCRIPTORS = {
    "se_e2_a": {"type": "se_e2_a", "sel": [30, 30, 30], "rcut": RCUT, "rcut_smth": 2.5,
                "neuron": [4, 8], "axis_neuron": 4, "seed": 1},
    "dpa1": {"type": "se_atten", "sel": 60, "rcut": RCUT, "rcut_smth": 2.5, "neuron": [4, 8],
             "axis_neuron": 4, "attn": 8, "attn_layer": 1, "tebd_dim": 4, "seed": 1},
}
SPIN = {"use_spin": ["Fe", "Co"], "virtual_scale": [0.3, 0.45]}


def make_model(desc: str) -> SpinEnergyModel:
    conf = {
        "type_map": TYPE_MAP,
        "descriptor": dict(DESCRIPTORS[desc]),
        "fitting_net": {"neuron": [8, 8], "seed": 1},
        "spin": dict(SPIN),
    }
    torch.manual_seed(3)
    return randomize_statistics(build_model(conf).double(), seed=2).eval()


@pytest.fixture(scope="module", params=list(DESCRIPTORS))
def model(request) -> SpinEnergyModel:
    return make_model(request.param)


def _system(name: str) -> tuple[System, np.ndarray]:
    s = standard_system(name, len(TYPE_MAP), RCUT, seed=3)
    return s, np.random.default_rng(4).normal(scale=1.2, size=(s.nloc, 3))


def run(model, system: System, spin: np.ndarray, atomic: bool = False) -> dict:
    coord = torch.tensor(system.coord)[None]
    atype = torch.tensor(system.atype)[None]
    box = None if system.cell is None else torch.tensor(system.cell).reshape(1, 9)
    out = model.evaluate(coord, atype, box, spin=torch.tensor(spin)[None],
                         do_atomic_virial=atomic)
    return {k: v.detach()[0].numpy() for k, v in out.items()}


def energy(model, system: System, spin: np.ndarray) -> float:
    return float(run(model, system, spin)[keys.ENERGY][0])


def fd_grad(fun, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central differences of the scalar ``fun`` over every element of ``x``."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = []
        for sign in (1.0, -1.0):
            y = x.copy()
            y[idx] += sign * h
            e.append(fun(y))
        grad[idx] = (e[0] - e[1]) / (2 * h)
    return grad


@pytest.mark.parametrize("geometry", ["triclinic", "cluster"])
def test_forces_and_magnetic_forces(model, geometry):
    system, spin = _system(geometry)
    out = run(model, system, spin)
    mag = np.isin(system.atype, [0, 2])
    assert mag.any() and (~mag).any()
    assert np.abs(out[keys.FORCE_MAG][mag]).max() > 1e-4
    force = -fd_grad(lambda c: energy(model, system.copy(coord=c), spin), system.coord)
    assert_close(f"{geometry} force", out[keys.FORCE], force, 1e-6, 1e-9)
    fmag = -fd_grad(lambda s: energy(model, system, s), spin)
    assert_close(f"{geometry} force_mag", out[keys.FORCE_MAG], fmag, 1e-6, 1e-9)
    # non-magnetic atoms: no magnetic force, not in mask_mag; their spins play no part
    assert (out[keys.FORCE_MAG][~mag] == 0).all()
    assert (out[keys.MASK_MAG].reshape(-1) == mag).all()


@pytest.mark.parametrize("geometry", ["triclinic", "cluster"])
def test_virial_with_fixed_spins(model, geometry):
    system, spin = _system(geometry)
    out = run(model, system, spin, atomic=True)

    def strained_energy(eps):
        deform = np.eye(3) + eps.reshape(3, 3)
        cell = None if system.cell is None else system.cell @ deform
        return energy(model, system.copy(coord=system.coord @ deform, cell=cell), spin)

    virial = -fd_grad(strained_energy, np.zeros(9)).reshape(3, 3).T
    assert_close(f"{geometry} virial", out[keys.VIRIAL].reshape(3, 3), virial, 1e-6, 1e-9)
    assert_close("atom_virial sum", out[keys.ATOM_VIRIAL].sum(0), out[keys.VIRIAL], 1e-10)
    assert_close("atom_energy sum", out[keys.ATOM_ENERGY].sum(), out[keys.ENERGY][0], 1e-12)


def test_rotation_moves_every_vector(model):
    system, spin = _system("triclinic")
    q, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(3, 3)))
    out = run(model, system, spin)
    rot = run(model, system.copy(coord=system.coord @ q.T, cell=system.cell @ q.T), spin @ q.T)
    assert_close("energy", rot[keys.ENERGY], out[keys.ENERGY], 1e-10)
    assert_close("force", rot[keys.FORCE], out[keys.FORCE] @ q.T, 1e-9, 1e-12)
    assert_close("force_mag", rot[keys.FORCE_MAG], out[keys.FORCE_MAG] @ q.T, 1e-9, 1e-12)
    vir = out[keys.VIRIAL].reshape(3, 3)
    assert_close("virial", rot[keys.VIRIAL].reshape(3, 3), q @ vir @ q.T, 1e-9, 1e-12)
    # the spins matter: rotating them alone changes the energy
    alone = run(model, system, spin @ q.T)
    assert abs(alone[keys.ENERGY][0] - out[keys.ENERGY][0]) > 1e-6


def test_virtual_padding_atoms_change_nothing():
    """Mixed-type padding (type -1, any spin) leaves every output of the real atoms as it was
    and gets zero outputs and no magnetic mask (DPA-1, which reads mixed-type data)."""
    model = make_model("dpa1")
    system, spin = _system("triclinic")
    rng = np.random.default_rng(8)
    padded = pad_with_virtual(system, system.nloc + 3, rng)
    pspin = np.vstack([spin, rng.normal(size=(3, 3))])
    a, b = run(model, system, spin, atomic=True), run(model, padded, pspin, atomic=True)
    n = system.nloc
    for key in (keys.ENERGY, keys.VIRIAL):
        assert_close(key, b[key], a[key], 1e-12)
    for key in (keys.FORCE, keys.FORCE_MAG, keys.ATOM_ENERGY, keys.ATOM_VIRIAL):
        assert_close(key, b[key][:n], a[key], 1e-12, 1e-14)
        assert (b[key][n:] == 0).all(), key
    assert not b[keys.MASK_MAG][n:].any() and not b[keys.MASK][n:].any()


def test_saved_model_reloads(tmp_path):
    model = make_model("se_e2_a")
    system, spin = _system("triclinic")
    save_model(model, tmp_path / "spin.pt")
    again = load_model(tmp_path / "spin.pt").double()
    assert isinstance(again, SpinEnergyModel) and again.type_map == TYPE_MAP
    a, b = run(model, system, spin), run(again, system, spin)
    for key in (keys.ENERGY, keys.FORCE, keys.FORCE_MAG, keys.VIRIAL):
        assert_close(key, b[key], a[key], 1e-14)


def test_deep_pot_eval_with_spins():
    from lamkit.infer import DeepPot

    model = make_model("dpa1")
    system, spin = _system("triclinic")
    dp = DeepPot(model, device="cpu")
    assert dp.has_spin
    e, f, v, ae, av, fm, mm = dp.eval(
        system.coord.reshape(1, -1), system.cell.reshape(1, 9), system.atype, atomic=True,
        spin=spin.reshape(1, -1),
    )
    want = run(model, system, spin, atomic=True)
    assert fm.shape == (1, system.nloc, 3) and mm.shape == (1, system.nloc, 1)
    for got, key in ((e, keys.ENERGY), (f, keys.FORCE), (v, keys.VIRIAL), (fm, keys.FORCE_MAG),
                     (ae, keys.ATOM_ENERGY), (av, keys.ATOM_VIRIAL)):
        assert_close(key, got[0], want[key], 1e-12)
    with pytest.raises(ValueError, match="spin"):
        dp.eval(system.coord.reshape(1, -1), system.cell.reshape(1, 9), system.atype)
    # paths that do not pass spins (change-bias, fine-tuning...): a one-line ConfigError
    with pytest.raises(ConfigError, match="needs the atomic spins"):
        model.evaluate(torch.tensor(system.coord)[None], torch.tensor(system.atype)[None])


def test_spin_section_forms_and_errors():
    tm = ["Ni", "O", "Fe"]
    flags = [True, False, True]
    for use in ([True, False, True], [0, 2], ["Ni", "Fe"]):
        conf = normalize_spin({"use_spin": use, "virtual_scale": [0.3, 0.4]}, tm)
        assert conf["use_spin"] == flags and conf["virtual_scale"] == [0.3, 0.0, 0.4]
    assert normalize_spin({"use_spin": [0], "virtual_scale": 0.2}, tm)["virtual_scale"] == [0.2] * 3
    bad = [
        ({"use_spin": ["Mn"], "virtual_scale": 0.3}, "'Mn' is not in type_map"),
        ({"use_spin": [True, False], "virtual_scale": 0.3}, "2 flags for the 3 types"),
        ({"use_spin": [True, False, True], "virtual_scale": [0.3]}, "3 values .* or 2"),
        ({"use_spin": [0]}, "virtual_scale"),
        ({"use_spin": [0], "virtual_scale": 0.3, "scheme": "native"}, "scheme"),
    ]
    for spin, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            normalize_spin(spin, tm)


def test_analytic_labels_are_derivatives():
    """lamkit.testing.spin_data: forces, magnetic forces and virial of its energy."""
    atype, f = nio_frames(1, seed=3)
    coord, cell, spin = f["coord"][0], f["box"][0].reshape(3, 3), f["spin"][0]
    lab = label_frame(coord, cell, atype, spin)

    def e(c=coord, s=spin, cl=cell):
        return label_frame(c, cl, atype, s)["energy"]

    assert_close("force", lab["force"], -fd_grad(lambda c: e(c=c), coord), 1e-7, 1e-9)
    mag = -fd_grad(lambda s: e(s=s), spin)
    assert_close("force_mag", lab["force_mag"], mag, 1e-7, 1e-9)

    def strained(eps):
        d = np.eye(3) + eps.reshape(3, 3)
        return e(c=coord @ d, cl=cell @ d)

    vir = -fd_grad(strained, np.zeros(9)).reshape(3, 3).T
    assert_close("virial", lab["virial"].reshape(3, 3), vir, 1e-7, 1e-9)
