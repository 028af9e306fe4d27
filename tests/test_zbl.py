"""Physics of the DP + pair-table model (``use_srtab``) and of the pair table alone:
finite-difference forces and virial with atoms inside the switching region, at the table's
first grid points and across the cutoff; the table reproduces its grid values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.errors import ConfigError
from lamkit.model import build_model
from lamkit.model.pair_tab import PairTable, pair_distances, read_pair_table
from lamkit.model.zbl_model import switch_weight
from lamkit.testing.physics import (
    check_batch,
    check_forces,
    check_rotation,
    check_virial,
    check_virtual_atoms,
    predict,
)
from lamkit.testing.systems import System, random_system

from .zbl_models import D3, RCUT, TABLE, linear_model, zbl_model

pytestmark = pytest.mark.skipif(not TABLE.is_file(), reason="shared pair tables not present")


def test_table_reproduces_grid_values():
    vdata = np.loadtxt(D3)
    info, _ = read_pair_table(D3, 10.0)
    table = PairTable(str(D3), 10.0, 2)
    rr = torch.tensor(vdata[5:90:7, 0]).reshape(1, -1, 1)
    for col, (ti, tj) in enumerate([(0, 0), (0, 1), (1, 1)]):
        ones = torch.ones_like(rr, dtype=torch.int64)
        got = table.pair_energy(rr, ti * ones[..., 0], tj * ones, torch.ones_like(rr, dtype=bool))
        np.testing.assert_allclose(
            got.numpy().ravel(), vdata[5:90:7, 1 + col], rtol=1e-9, atol=1e-12
        )
    assert info[2] == vdata.shape[0] - 1


@pytest.mark.parametrize("periodic", [False, True])
def test_forces_in_switching_region(periodic):
    model = zbl_model()
    cell = np.eye(3) * 4.5 if periodic else None
    system = random_system(8, 2, cell, extent=2.5, min_dist=0.6, seed=3)
    out = predict(model, system)
    assert np.isfinite(out["energy"]).all()
    # some atoms lie inside the switching region (0 < w < 1), where w's gradient counts
    coord = torch.tensor(system.coord)[None]
    atype = torch.tensor(system.atype)[None]
    box = None if cell is None else torch.tensor(cell).reshape(1, 9)
    nbr = model.neighbor_builder()(coord, atype, box)
    ext, _ = model.extend(coord, atype, box, nbr)
    nl = nbr[keys.NLIST]
    w = switch_weight(pair_distances(ext, nl), nl >= 0, 0.1, 0.8, 1.2)
    assert ((w > 0) & (w < 1)).any()
    check_forces(model, system, rtol=1e-6, atol=1e-7)
    if periodic:
        check_virial(model, system, rtol=1e-6, atol=1e-7)


def test_forces_near_table_start_and_cutoff():
    model = zbl_model(sw_rmin=0.01, sw_rmax=0.05)
    # a pair 0.0021 Å apart (inside the table's second grid interval) and one near rcut
    coord = np.array([[0, 0, 0], [0.0021, 0.0003, 0.0], [RCUT - 1e-3, 0.01, 0.0]])
    system = System(coord=coord, atype=np.array([0, 1, 1]))
    check_forces(model, system, h=1e-7, rtol=1e-6, atol=1e-6)


def test_refusals():
    with pytest.raises(ConfigError, match="sw_rmin"):
        build_model({**_conf_base(), "sw_rmin": None})
    with pytest.raises(ConfigError, match="use_srtab"):
        build_model({**_conf_base(), "descriptor": {"type": "se_e2_a", "sel": [4, 4],
                                                    "rcut": 3.0, "neuron": [4]}})


def _conf_base():
    return {"type_map": ["O", "H"], "use_srtab": str(TABLE), "smin_alpha": 0.1,
            "sw_rmin": 0.8, "sw_rmax": 1.2,
            "descriptor": {"type": "dpa1", "sel": 20, "rcut": 3.0, "neuron": [4],
                           "axis_neuron": 2, "attn_layer": 0},
            "fitting_net": {"neuron": [4]}}


def test_linear_forces_and_virial():
    model = linear_model([0.6, 1.4])
    assert model.rcut == 7.0 and model.sel == [80]
    system = random_system(10, 2, np.eye(3) * 6.5, min_dist=1.0, seed=4)
    check_forces(model, system, rtol=1e-6, atol=1e-8)
    check_virial(model, system, rtol=1e-6, atol=1e-8)


def test_linear_sum_is_dp_plus_table():
    """weights 'sum': the energy is the DP model's plus half the pair energies (+ biases)."""
    model = linear_model("sum", rcut_tab=5.0)
    system = random_system(6, 2, None, extent=5.0, min_dist=1.0, seed=6)
    e = predict(model, system)["energy"].item()
    table = model.pair_tables[0]
    pair = 0.0
    for i in range(6):
        for j in range(i + 1, 6):
            r = np.linalg.norm(system.coord[i] - system.coord[j])
            ti, tj = (torch.tensor([[int(system.atype[k])]]) for k in (i, j))
            rr = torch.tensor([[[r]]], dtype=torch.float64)
            pair += float(table.pair_energy(rr, ti, tj.unsqueeze(-1), rr > 0))
    with torch.no_grad():
        table.tab_data.zero_()
        table.out_bias.zero_()
    e_dp = predict(model, system)["energy"].item()
    assert read_pair_table(D3, 5.0)[1].shape[2] == 99  # the whole table (0.1 .. 10 Å) is kept
    biases = [0.1, -0.2]
    pair += sum(biases[t] for t in system.atype)
    assert pair != 0 and abs((e - e_dp) - pair) < 1e-12


@pytest.mark.parametrize("rcut", [3.05, 3.45, 2.5])
def test_padding_beyond_table(tmp_path, rcut):
    """A table that does not end at zero, rcut beyond it: the reference pads one cubic down
    to zero (same coefficients as its PairTab); rcut inside: the table is kept whole."""
    pair_tab = pytest.importorskip("deepmd.utils.pair_tab", reason="reference deepmd-kit")
    r = np.arange(0.5, 3.0001, 0.1)
    path = tmp_path / "tab.txt"
    np.savetxt(path, np.c_[r, np.exp(-r), 0.5 * np.exp(-2 * r), 1 / r**6])
    info, data = read_pair_table(path, rcut)
    ref = pair_tab.PairTab(str(path), rcut)
    np.testing.assert_allclose(info, ref.tab_info, rtol=1e-14)
    np.testing.assert_allclose(data.ravel(), ref.tab_data, rtol=1e-10, atol=1e-14)
    table = PairTable(str(path), rcut, 2)
    end = 0.5 + 0.1 * info[2]
    rr = torch.tensor([3.0 - 1e-9, 3.0 + 1e-9, end - 1e-9]).reshape(1, -1, 1)
    one = torch.ones_like(rr, dtype=torch.int64)
    e = table.pair_energy(rr, one[..., 0], one, torch.ones_like(rr, dtype=bool)).ravel()
    if rcut > 3.0:  # continuous at the table's end, zero at the padded end
        assert abs(float(e[0] - e[1])) < 1e-8 and abs(float(e[0]) - 3.0**-6) < 1e-8
        assert abs(float(e[2])) < 1e-8


@pytest.mark.parametrize("make", [zbl_model, linear_model])
def test_batch_virtual_atoms_rotation(make):
    """Batched = one by one; virtual atoms change nothing; rotation covariance."""
    model = make()
    cell = np.eye(3) * 6.0
    systems = [random_system(8, 2, cell, min_dist=0.7, seed=k) for k in (7, 8)]
    check_batch(model, systems)
    check_virtual_atoms(model, systems[0], np.random.default_rng(0))
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    check_rotation(model, systems[1], q)
