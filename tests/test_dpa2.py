"""DPA-2 (``lamkit.descriptor.dpa2``): shapes, parameter count of the spec's small preset, and the
physics suite (forces/virials by finite differences, rotation/translation/permutation, PBC
images, cutoff smoothness, batching, virtual atoms) on tiny instances wired into EnergyModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.descriptor.dpa2 import DescrptDPA2, split_neighbor_list
from lamkit.fitting.energy import EnergyFitting
from lamkit.model.energy_model import EnergyModel
from lamkit.testing import randomize_statistics, standard_system
from lamkit.testing.physics import _compare, predict
from lamkit.testing.suite import ModelPhysicsTests
from lamkit.testing.systems import make_supercell

TYPE_MAP = ["O", "H"]

SMALL_REPINIT = dict(
    tebd_dim=8,
    rcut=6.0,
    rcut_smth=0.5,
    nsel=120,
    neuron=[25, 50, 100],
    axis_neuron=12,
    use_three_body=True,
    three_body_sel=48,
    three_body_rcut=4.0,
    three_body_rcut_smth=3.5,
)
SMALL_REPFORMER = dict(
    rcut=4.0,
    rcut_smth=3.5,
    nsel=48,
    nlayers=3,
    g1_dim=128,
    g2_dim=32,
    attn2_hidden=32,
    attn2_nhead=4,
    attn1_hidden=128,
    attn1_nhead=4,
    axis_neuron=4,
    update_h2=False,
    update_g1_has_conv=True,
    update_g1_has_grrg=True,
    update_g1_has_drrd=True,
    update_g1_has_attn=False,
    update_g2_has_g1g1=False,
    update_g2_has_attn=False,
    update_style="res_residual",
    update_residual=0.01,
    update_residual_init="norm",
    attn2_has_gate=True,
    use_sqrt_nnei=True,
    g1_out_conv=True,
    g1_out_mlp=True,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_descriptor(precision="float64", seed=3, smooth=True, **repformer):
    rf = dict(SMALL_REPFORMER)
    rf.update(
        nsel=40,
        nlayers=3,
        g1_dim=12,
        g2_dim=6,
        attn1_hidden=5,
        attn1_nhead=2,
        attn2_hidden=4,
        attn2_nhead=2,
        axis_neuron=3,
    )
    rf.update(repformer)
    ri = dict(SMALL_REPINIT)
    ri.update(
        nsel=80,
        neuron=[6, 10],
        axis_neuron=4,
        three_body_sel=40,
        three_body_neuron=[2, 4],
        tebd_dim=4,
    )
    return DescrptDPA2(2, ri, rf, precision=precision, seed=seed, smooth=smooth)


def tiny_model(precision="float64", seed=3, **kw):
    desc = tiny_descriptor(precision, seed, **kw)
    fit = EnergyFitting(2, desc.dim_out, True, neuron=[8, 8], precision=precision, seed=seed)
    model = randomize_statistics(EnergyModel(desc, fit, TYPE_MAP), seed)
    with torch.no_grad():  # set_davg_zero (the DPA-2 default): empty slots must stay zero
        for name, buf in model.named_buffers():
            if name.endswith("davg"):
                buf.zero_()
    return model


def test_small_preset_parameter_count():
    """Spec §8.1: the small preset's descriptor has 472,938 parameters."""
    desc = DescrptDPA2(2, SMALL_REPINIT, SMALL_REPFORMER, seed=1)
    assert sum(p.numel() for p in desc.parameters()) == 472_938
    assert desc.dim_out == 136 and desc.dim_emb == 32


def _neighbors(model, sys_):
    coord, atype, box = sys_.tensors(torch.float64)
    nbr = model.neighbor_builder()(coord, atype, box)
    ext, eat = model.extend(coord, atype, box, nbr)
    return ext, eat, nbr[keys.NLIST], nbr[keys.MAPPING]


def test_shapes_and_sub_lists():
    model = tiny_model()
    desc = model.descriptor
    sys_ = standard_system("cubic", 2, desc.rcut, seed=7)
    ext, eat, nlist, mapping = _neighbors(model, sys_)
    out = desc(ext, eat, nlist, mapping)
    nf, nloc = nlist.shape[:2]
    assert out[keys.DESCRIPTOR].shape == (nf, nloc, 12 + 4)
    assert out["rot_mat"].shape == (nf, nloc, 6, 3)
    assert out["g2"].shape == (nf, nloc, 40, 6)
    # the sub-list equals a list built directly for the smaller cutoff (as sets per atom)
    sub = split_neighbor_list(ext, nlist, 4.0, 40)
    diff = ext[:, :, None] - ext[:, None]
    r = diff.norm(dim=-1)[:, :nloc]
    for i in range(nloc):
        want = set(torch.nonzero((r[0, i] <= 4.0) & (r[0, i] > 0)).flatten().tolist())
        got = set(sub[0, i][sub[0, i] >= 0].tolist())
        assert got == want


def test_rot_mat_equivariance():
    model = tiny_model()
    desc = model.descriptor
    sys_ = standard_system("cluster", 2, desc.rcut, seed=7)
    ext, eat, nlist, mapping = _neighbors(model, sys_)
    q, _ = torch.linalg.qr(
        torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    a = desc(ext, eat, nlist, mapping)
    b = desc(ext @ q, eat, nlist, mapping)
    torch.testing.assert_close(b[keys.DESCRIPTOR], a[keys.DESCRIPTOR], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b["rot_mat"], a["rot_mat"] @ q, rtol=1e-10, atol=1e-12)


VARIANTS = {
    "small": {},
    "all-updates": dict(
        update_g1_has_attn=True, update_g2_has_g1g1=True, update_g2_has_attn=True, update_h2=True
    ),
    "mlp-in-conv-res-avg": dict(
        update_g1_has_attn=True,
        g1_out_conv=False,
        g1_out_mlp=False,
        update_style="res_avg",
        use_sqrt_nnei=False,
    ),
}


class TestDPA2Physics(ModelPhysicsTests):
    @pytest.fixture(params=list(VARIANTS))
    def model_factory(self, request):
        extra = VARIANTS[request.param]

        def make(precision: str = "float64"):
            return tiny_model(precision, **extra)

        return make

    # Message passing sends g1 of a local atom to its ghost images, so in periodic systems an
    # atom's energy depends on coordinates of other images through its neighbours' g1; the
    # per-atom virial (F_ext x R_ext scattered by image) is then not translation invariant, as in
    # the reference. Energies, forces and the total virial still are; check those.
    PBC_NAMES = ("energy", "force", "virial", "atom_energy")

    def test_translation(self, model, system):
        vec = np.random.default_rng(12).normal(scale=3.0, size=3)
        moved = system.copy(coord=system.coord + vec)
        names = self.PBC_NAMES if system.periodic else None
        _compare("translated", predict(model, moved), predict(model, system), 1e-9, 1e-10, names)

    @pytest.mark.parametrize("reps", [(2, 1, 1), (2, 2, 1)])
    def test_supercell(self, model, periodic_system, reps):
        n = int(np.prod(reps))
        ref = predict(model, periodic_system)
        big = predict(model, make_supercell(periodic_system, reps))
        want = {
            "energy": n * ref["energy"],
            "virial": n * ref["virial"],
            "force": np.tile(ref["force"], (n, 1)),
            "atom_energy": np.tile(ref["atom_energy"], n),
        }
        _compare(f"supercell {reps}", big, want, 1e-9, 1e-10)
