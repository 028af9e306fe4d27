"""Physics of the se_e2_a energy model, its neighbour lists and switching function.

The model checks and the model factory come from :mod:`lamkit.testing` (shared with the other
descriptors); this file adds independent checks of the geometry code and tests that the
checks themselves catch broken models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.geometry import NeighborBuilder, build_frame_neighbors, smooth_switch
from lamkit.testing import (
    System,
    brute_force_pairs,
    cell_from_parameters,
    check_cutoff_smoothness,
    check_forces,
    check_frame_neighbors,
    check_rotation,
    check_sel_not_saturated,
    check_supercell,
    check_virial,
    predict,
    random_rotation,
    random_system,
    standard_system,
)
from lamkit.testing.factories import RCUT
from lamkit.testing.factories import make_se_e2_a as make_se_a
from lamkit.testing.physics import assert_close
from lamkit.testing.suite import ModelPhysicsTests

# one atom in a cell shorter than rcut along every edge: all its neighbours are its own images
ONE_ATOM = System(
    np.array([[0.1, 0.2, 0.3]]),
    np.array([1]),
    cell_from_parameters(1.9, 2.0, 2.1, 80.0, 70.0, 60.0),
)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- the physics suite --------------------------------------------------------------------

SE_A_VARIANTS = {
    "one_side-smth0.5": (True, 0.5),
    "two_side-smth0.5": (False, 0.5),
    "two_side-smth3.0": (False, 3.0),
}


class TestSeAPhysics(ModelPhysicsTests):
    @pytest.fixture(params=list(SE_A_VARIANTS))
    def model_factory(self, request):
        type_one_side, rcut_smth = SE_A_VARIANTS[request.param]

        def make(precision: str = "float64"):
            return make_se_a(type_one_side, precision, rcut_smth)

        return make


def test_low_precision_model_runs_in_float32():
    model = make_se_a(precision="float32")
    assert model.descriptor.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("type_one_side", [True, False])
def test_float32_inputs(type_one_side):
    """Coordinates given in float32 go through the same path (shift in float32 as well)."""
    model = make_se_a(type_one_side)
    sys_ = standard_system("cubic", 2, RCUT, seed=3)
    coord, atype, box = sys_.tensors(torch.float32)
    out = model.evaluate(coord, atype, box)
    ref = predict(model, sys_, atomic=False)
    assert_close(
        "float32 inputs energy", out[keys.ENERGY].detach().reshape(()), ref["energy"], 1e-5, 1e-6
    )
    assert_close("float32 inputs force", out[keys.FORCE].detach()[0], ref["force"], 1e-3, 1e-5)


def test_standard_triclinic_cell_sees_own_images():
    sys_ = standard_system("triclinic", 2, RCUT, seed=7)
    pairs = brute_force_pairs(sys_, RCUT)
    self_images = pairs.i == pairs.j
    assert np.bincount(pairs.i[self_images], minlength=sys_.nloc).min() >= 4
    cos = [
        abs(np.dot(a, b)) / np.linalg.norm(a) / np.linalg.norm(b)
        for a, b in ((sys_.cell[0], sys_.cell[1]), (sys_.cell[1], sys_.cell[2]))
    ]
    assert max(cos) > 0.3  # strongly skewed


@pytest.mark.parametrize("type_one_side", [True, False])
def test_one_atom_cell(type_one_side):
    model = make_se_a(type_one_side)
    check_sel_not_saturated(ONE_ATOM, RCUT, model.sel, 2)
    assert len(brute_force_pairs(ONE_ATOM, RCUT).i) > 30
    out = predict(model, ONE_ATOM)
    assert np.abs(out["force"]).max() < 1e-12  # moving the only atom is a translation
    check_virial(model, ONE_ATOM)
    check_rotation(model, ONE_ATOM, random_rotation(np.random.default_rng(2)))
    for reps in ((2, 1, 1), (1, 2, 2)):
        check_supercell(model, ONE_ATOM, reps)


# --- neighbour lists against brute force ---------------------------------------------------


def _neighbor_systems() -> dict[str, System]:
    tri = standard_system("triclinic", 2, RCUT, seed=21)
    cubic = standard_system("cubic", 2, RCUT, seed=22)
    cluster = standard_system("cluster", 2, RCUT, seed=23)
    with_virtual = cluster.copy(atype=np.where(np.arange(cluster.nloc) % 4 == 1, -1, cluster.atype))
    dense = random_system(
        14, 3, np.array([[5.0, 0, 0], [3.5, 4.5, 0], [-1.0, 2.0, 4.0]]), min_dist=1.2, seed=24
    )
    return {
        "triclinic": tri,
        "cubic": cubic,
        "cluster": cluster,
        "cluster_virtual": with_virtual,
        "dense_three_types": dense,
        "one_atom": ONE_ATOM,
    }


NEIGHBOR_SYSTEMS = _neighbor_systems()


@pytest.mark.parametrize("mixed_types", [False, True])
@pytest.mark.parametrize("name", list(NEIGHBOR_SYSTEMS))
@pytest.mark.parametrize("truncate", [False, True], ids=["full", "truncated"])
def test_neighbor_list_matches_brute_force(name, mixed_types, truncate):
    sys_ = NEIGHBOR_SYSTEMS[name]
    ntypes = int(sys_.atype.max()) + 1
    pairs = brute_force_pairs(sys_, RCUT)
    most = int(np.bincount(pairs.i, minlength=sys_.nloc).max())
    if truncate:  # fewer slots than neighbours: the nearest ones must survive
        sel = [max(1, most // (2 * ntypes))] * ntypes
        assert sum(sel) < most
    else:
        sel = [most + 1] * ntypes
    if mixed_types:
        sel = [sum(sel)]
    nbr = build_frame_neighbors(sys_.coord, sys_.atype, sys_.cell, RCUT, sel, mixed_types)
    check_frame_neighbors(nbr.mapping, nbr.shift, nbr.nlist, sys_, RCUT, sel, mixed_types)
    if not truncate:  # every pair is listed (those at exactly rcut are optional)
        strict = int((pairs.dist < RCUT - 1e-9).sum())
        assert strict <= (nbr.nlist >= 0).sum() <= len(pairs.i)


def test_truncation_rule_is_nearest_overall_then_per_type():
    """In this geometry "nearest sum(sel) first, then per type" keeps fewer neighbours of some
    type than "nearest sel[t] of each type" would, so the layout check tells the rules apart."""
    sys_ = NEIGHBOR_SYSTEMS["dense_three_types"]
    sel = [7, 7, 7]
    nbr = build_frame_neighbors(sys_.coord, sys_.atype, sys_.cell, RCUT, sel, False)
    pairs = brute_force_pairs(sys_, RCUT)
    fewer = 0
    for i in range(sys_.nloc):
        mine = pairs.i == i
        types = sys_.atype[pairs.j[mine][np.argsort(pairs.dist[mine], kind="stable")]]
        for t in range(3):
            kept = int((nbr.nlist[i, 7 * t : 7 * (t + 1)] >= 0).sum())
            assert kept == min(7, int((types[:21] == t).sum()))
            fewer += kept < min(7, int((types == t).sum()))
    assert fewer > 0


def test_neighbor_checker_catches_a_missing_neighbor():
    sys_ = NEIGHBOR_SYSTEMS["cluster"]  # no ghosts: only the distance check can notice
    nbr = build_frame_neighbors(sys_.coord, sys_.atype, sys_.cell, RCUT, [60, 60], False)
    row = nbr.nlist[0]
    last = np.flatnonzero(row[:60] >= 0)[-1]
    row[last] = -1
    with pytest.raises(AssertionError, match="distances"):
        check_frame_neighbors(nbr.mapping, nbr.shift, nbr.nlist, sys_, RCUT, [60, 60], False)


def test_neighbor_builder_pads_extended_atoms():
    """Frames of one batch with different ghost counts share nall; padded entries are unused."""
    tri = standard_system("triclinic", 2, RCUT, seed=7)
    cubic = standard_system("cubic", 2, RCUT, seed=7)
    n = max(tri.nloc, cubic.nloc)
    coord = np.zeros((2, n, 3))
    atype = -np.ones((2, n), dtype=np.int64)
    for f, s in enumerate((tri, cubic)):
        coord[f, : s.nloc], atype[f, : s.nloc] = s.coord, s.atype
    builder = NeighborBuilder(RCUT, [40, 40], False)
    nbr = builder(
        torch.from_numpy(coord),
        torch.from_numpy(atype),
        torch.from_numpy(np.stack([tri.cell, cubic.cell]).reshape(2, 9)),
    )
    single = [
        build_frame_neighbors(coord[f], atype[f], s.cell, RCUT, [40, 40], False)
        for f, s in enumerate((tri, cubic))
    ]
    nall = [len(s.mapping) for s in single]
    assert nall[0] != nall[1]
    assert nbr[keys.MAPPING].shape == (2, max(nall))
    for f, s in enumerate(single):
        assert (nbr[keys.NLIST][f, : len(s.nlist)].numpy() == s.nlist).all()
        assert (nbr[keys.NLIST][f].numpy() < nall[f]).all()


# --- switching function --------------------------------------------------------------------


@pytest.mark.parametrize("rmin,rmax", [(0.5, 4.0), (3.0, 4.0), (1.0, 6.0)])
def test_smooth_switch_values_and_c2(rmin, rmax):
    r = torch.linspace(0.0, rmax + 1.0, 2001, dtype=torch.float64)
    s = smooth_switch(r, rmin, rmax)
    assert (s[r <= rmin] == 1.0).all()
    assert (s[r >= rmax] == 0.0).all()
    inside = (r > rmin) & (r < rmax)
    assert (s[inside] < 1.0).all() and (s[inside] > 0.0).all()
    assert (torch.diff(s) <= 0).all()
    mid = torch.tensor([0.5 * (rmin + rmax)], dtype=torch.float64)
    assert float(smooth_switch(mid, rmin, rmax)) == pytest.approx(0.5, abs=1e-14)

    # first and second derivatives (autograd) vanish at both ends, from inside
    eps = 1e-6
    ends = torch.tensor([rmin + eps, rmax - eps], dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(smooth_switch(ends, rmin, rmax).sum(), ends, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), ends)
    width = rmax - rmin
    assert d1.abs().max() < 1e-9 / width and d2.abs().max() < 1e-4 / width**2

    # analytic derivative inside: ds/dr = -30 u^2 (1 - u)^2 / width
    x = torch.linspace(rmin + 0.01, rmax - 0.01, 50, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(smooth_switch(x, rmin, rmax).sum(), x)
    u = (x.detach() - rmin) / width
    assert torch.allclose(g, -30 * u**2 * (1 - u) ** 2 / width, rtol=1e-12, atol=1e-14)

    # C2 numerically: second differences agree across each end
    h = 1e-3
    for edge in (rmin, rmax):
        pts = torch.tensor(
            [edge - 2 * h, edge - h, edge, edge + h, edge + 2 * h], dtype=torch.float64
        )
        v = smooth_switch(pts, rmin, rmax)
        left = (v[2] - 2 * v[1] + v[0]) / h**2
        right = (v[4] - 2 * v[3] + v[2]) / h**2
        assert abs(float(left - right)) < 100 * h / width**3


# --- the checks catch broken models --------------------------------------------------------


class _Wrapped:
    """A model whose outputs are altered by ``alter(out, coord, atype, box)``."""

    def __init__(self, model, alter):
        self.model, self.alter = model, alter

    def __getattr__(self, name):
        return getattr(self.model, name)

    def evaluate(self, coord, atype, box=None, **kw):
        out = dict(self.model.evaluate(coord, atype, box, **kw))
        return self.alter(out, coord, atype, box, **kw)


def test_force_check_catches_wrong_forces():
    model = make_se_a()
    sys_ = standard_system("cluster", 2, RCUT, seed=7)

    def scale(out, *args, **kw):
        if keys.FORCE in out:
            out[keys.FORCE] = out[keys.FORCE] * 1.001
        return out

    check_forces(model, sys_)
    with pytest.raises(AssertionError, match="force vs finite differences"):
        check_forces(_Wrapped(model, scale), sys_)


def test_virial_check_catches_missing_ghost_terms():
    """The classic bug: a virial from local positions only, sum_i F_i (x) R_i."""
    model = make_se_a()
    sys_ = standard_system("cubic", 2, RCUT, seed=7)

    def local_virial(out, coord, atype, box, **kw):
        if keys.VIRIAL in out:
            f = out[keys.FORCE]
            out[keys.VIRIAL] = torch.einsum("fia,fib->fab", f, coord).reshape(-1, 9)
        return out

    with pytest.raises(AssertionError, match="virial vs strain"):
        check_virial(_Wrapped(model, local_virial), sys_)


class _FieldModel:
    """E = sum_i a . R_i + R_i^T B R_i (not rotation invariant): a non-symmetric virial with
    closed forms, to pin the convention W_ab = sum_k F_a R_b = -(dE/d eps)_ba."""

    rcut, sel, type_map = RCUT, [100], ["X"]

    def __init__(self, transpose: bool = False):
        self.a = torch.tensor([0.3, -0.7, 0.2], dtype=torch.float64)
        self.b = torch.tensor(
            [[0.1, 0.4, 0.0], [-0.2, 0.05, 0.3], [0.0, 0.1, -0.1]], dtype=torch.float64
        )
        self.transpose = transpose

    def evaluate(self, coord, atype, box=None, **kw):
        ae = coord @ self.a + torch.einsum("fia,ab,fib->fi", coord, self.b, coord)
        force = -(self.a + coord @ (self.b + self.b.T))
        av = force.unsqueeze(-1) * coord.unsqueeze(-2)
        if self.transpose:
            av = av.transpose(-1, -2)
        nf = coord.shape[0]
        return {
            keys.ENERGY: ae.sum(1, keepdim=True),
            keys.ATOM_ENERGY: ae.unsqueeze(-1),
            keys.FORCE: force,
            keys.VIRIAL: av.sum(1).reshape(nf, 9),
            keys.ATOM_VIRIAL: av.reshape(nf, -1, 9),
        }


def test_virial_convention_full_tensor():
    sys_ = random_system(5, 1, None, seed=3)
    check_forces(_FieldModel(), sys_)
    check_virial(_FieldModel(), sys_, symmetric=False)
    w = predict(_FieldModel(), sys_)["virial"]
    assert np.abs(w - w.T).max() > 0.1  # the test above is sensitive to the transpose
    with pytest.raises(AssertionError, match="virial vs strain"):
        check_virial(_FieldModel(transpose=True), sys_, symmetric=False)


def test_rotation_check_catches_non_invariant_statistics():
    model = make_se_a()
    with torch.no_grad():
        model.descriptor.davg[:, 1] = 0.05  # a mean on x breaks rotation invariance
    sys_ = standard_system("cluster", 2, RCUT, seed=7)
    with pytest.raises(AssertionError, match="rotated"):
        check_rotation(model, sys_, random_rotation(np.random.default_rng(0)))


def _pair_term(coord, rcut, power):
    """sum over pairs within rcut of (rcut - r)^power (non-periodic), differentiable."""
    diff = coord[:, :, None, :] - coord[:, None, :, :]
    n = coord.shape[1]
    off = ~torch.eye(n, dtype=torch.bool)
    r = torch.sqrt((diff[:, off] ** 2).sum(-1))
    return 0.5 * torch.where(r < rcut, (rcut - r) ** power, torch.zeros_like(r)).sum(-1)


@pytest.mark.parametrize("power", [0, 1])
def test_smoothness_check_catches_hard_cutoffs(power):
    """A step (power 0) or a kink (power 1) in the energy at rcut must be reported."""
    model = make_se_a()
    sys_ = standard_system("cluster", 2, RCUT, seed=7)

    def add_pair_term(out, coord, atype, box, **kw):
        c = coord.detach().requires_grad_(True)
        extra = 0.05 * _pair_term(c, RCUT, power)
        (g,) = torch.autograd.grad(extra.sum(), c)
        out[keys.ENERGY] = out[keys.ENERGY] + extra.detach().unsqueeze(-1)
        if keys.FORCE in out:
            out[keys.FORCE] = out[keys.FORCE] - g
        return out

    check_cutoff_smoothness(model, sys_, np.random.default_rng(15))
    with pytest.raises(AssertionError, match="across the cutoff"):
        check_cutoff_smoothness(_Wrapped(model, add_pair_term), sys_, np.random.default_rng(15))


def test_neighbor_cache_is_bounded():
    import numpy as np

    from lamkit.geometry import NeighborBuilder

    rng = np.random.default_rng(0)
    coord = rng.uniform(0, 6, (3, 12, 3))
    atype = np.zeros((3, 12), dtype=np.int64)
    box = np.tile(np.eye(3).reshape(9) * 6, (3, 1))
    one = NeighborBuilder(3.0, [30], True, cache=True)
    one(coord[:1], atype[:1], box[:1], cache_keys=[0])
    size = one._cached_bytes
    nb = NeighborBuilder(3.0, [30], True, cache=True, cache_bytes=size * 2 + size // 2)
    first = nb(coord, atype, box, cache_keys=[0, 1, 2])
    assert len(nb._cache) == 2  # the third frame did not fit
    again = nb(coord, atype, box, cache_keys=[0, 1, 2])
    for k in first:
        assert (first[k] == again[k]).all()
