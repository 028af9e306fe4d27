"""Property, dipole and polarizability models (``lamkit.fitting.property``/``tensor``,
``lamkit.model.AtomicModel``): symmetries for every descriptor, intensive vs extensive
reduction, padding and virtual atoms, output statistics, the property and tensor losses,
DeepProperty/DeepDipole/DeepPolar and their errors. No reference code needed (see
``test_property_parity.py`` for that)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit.errors import ConfigError
from lamkit.model import AtomicModel, EnergyModel, build_model
from lamkit.model.out_stat import compute_output_stats, mean_stats, regression_stats
from lamkit.testing import (
    check_output_padding,
    check_output_permutation,
    check_output_rotation,
    check_output_translation,
    predict_outputs,
    random_rotation,
    randomize_statistics,
    standard_system,
)
from lamkit.testing.systems import System
from lamkit.train.loss import build_loss

TYPE_MAP = ["H", "C", "N", "O"]

DESCRIPTORS = {
    "se_e2_a": {"type": "se_e2_a", "sel": [12, 8, 4, 4], "rcut": 4.0, "neuron": [4, 8]},
    "dpa1": {
        "type": "dpa1",
        "sel": 24,
        "rcut": 4.0,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "attn": 8,
        "attn_layer": 1,
        "tebd_dim": 4,
    },
    "se_e3_tebd": {"type": "se_e3_tebd", "sel": 24, "rcut": 4.0, "neuron": [4, 8], "tebd_dim": 4},
    "dpa2": {
        "type": "dpa2",
        "repinit": {
            "rcut": 4.0,
            "rcut_smth": 0.5,
            "nsel": 24,
            "neuron": [4, 8],
            "axis_neuron": 4,
            "tebd_dim": 4,
        },
        "repformer": {
            "rcut": 3.0,
            "rcut_smth": 2.5,
            "nsel": 16,
            "nlayers": 2,
            "g1_dim": 8,
            "g2_dim": 4,
            "attn2_hidden": 4,
            "attn2_nhead": 1,
            "attn1_hidden": 4,
            "attn1_nhead": 1,
            "axis_neuron": 2,
        },
    },
}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(descriptor: str, fitting: dict, seed: int = 1, **model_extra) -> AtomicModel:
    desc = {**DESCRIPTORS[descriptor], "precision": "float64", "seed": seed}
    fit = {"neuron": [8, 8], "precision": "float64", "seed": seed, **fitting}
    model = build_model(
        {"type_map": TYPE_MAP, "descriptor": desc, "fitting_net": fit, **model_extra}
    )
    randomize_statistics(model, seed)
    with torch.no_grad():
        for block in model.descriptor.modules():  # as computed from data: zero when asked
            if getattr(block, "set_davg_zero", False) and hasattr(block, "davg"):
                block.davg.zero_()
        # a non-trivial std too (applied by property models)
        model.out_std.copy_(torch.rand(model.out_std.shape, dtype=torch.float64) + 0.5)
    return model.eval()


PROPERTY = {"type": "property", "task_dim": 3, "property_name": "gap", "intensive": True}
FITTINGS = {
    "property": PROPERTY,
    "extensive": {**PROPERTY, "intensive": False, "distinguish_types": False},
    "dipole": {"type": "dipole"},
    "polar": {"type": "polar", "fit_diag": False, "scale": [1.0, 2.0, 0.5, 1.5]},
    "polar_diag": {"type": "polar"},
}
CASES = [(d, f) for d in DESCRIPTORS for f in ("property", "extensive")] + [
    (d, f) for d in ("se_e2_a", "dpa1", "dpa2") for f in ("dipole", "polar", "polar_diag")
]


def molecule(seed: int = 0, natoms: int = 9) -> System:
    sys_ = standard_system("cluster", 4, 4.0, seed=seed)
    return sys_.copy(coord=sys_.coord[:natoms], atype=sys_.atype[:natoms])


# --- symmetries and padding, every descriptor ----------------------------------------------
@pytest.mark.parametrize("descriptor,fitting", CASES)
def test_symmetries_and_padding(descriptor, fitting):
    model = make_model(descriptor, FITTINGS[fitting])
    rng = np.random.default_rng(7)
    sys_ = molecule(seed=2)
    out = predict_outputs(model, sys_.coord[None], sys_.atype[None])
    assert np.abs(out["global"]).max() > 1e-3  # a non-trivial output is compared
    check_output_rotation(model, sys_, random_rotation(rng))
    check_output_translation(model, sys_, rng.normal(size=3) * 5.0)
    check_output_permutation(model, sys_, rng.permutation(sys_.nloc))
    check_output_padding(model, [sys_, molecule(seed=5, natoms=6)], rng)
    periodic = standard_system("triclinic", 4, 4.0, seed=3)
    check_output_rotation(model, periodic, random_rotation(rng))


def test_dipole_and_polar_really_rotate():
    """The equivariance checks above are not vacuous: the tensors change under rotation."""
    rng = np.random.default_rng(0)
    q = random_rotation(rng)
    sys_ = molecule(seed=1)
    for kind in ("dipole", "polar"):
        model = make_model("dpa1", FITTINGS[kind])
        a = predict_outputs(model, sys_.coord[None], sys_.atype[None])["global"][0]
        b = predict_outputs(model, (sys_.coord @ q.T)[None], sys_.atype[None])["global"][0]
        assert np.abs(a - b).max() > 1e-3 * np.abs(a).max(), kind
        if kind == "polar":  # symmetric, as a polarizability is
            np.testing.assert_allclose(a, a.T, rtol=1e-12, atol=1e-14)


# --- reduction ----------------------------------------------------------------------------
def test_intensive_is_the_mean_and_extensive_the_sum():
    sys_ = molecule(seed=3)
    ext = make_model("dpa1", {**PROPERTY, "intensive": False})
    inten = make_model("dpa1", PROPERTY)
    inten.load_state_dict(ext.state_dict())
    a = predict_outputs(ext, sys_.coord[None], sys_.atype[None])
    b = predict_outputs(inten, sys_.coord[None], sys_.atype[None])
    np.testing.assert_allclose(a["atom"], b["atom"], rtol=1e-14)  # same atomic values
    np.testing.assert_allclose(a["global"][0], a["atom"][0].sum(0), rtol=1e-12)
    np.testing.assert_allclose(b["global"][0], b["atom"][0].mean(0), rtol=1e-12)
    # twice the molecule, far apart: an extensive property doubles, an intensive one stays
    far = sys_.coord + np.array([100.0, 0.0, 0.0])
    twice = sys_.copy(coord=np.vstack([sys_.coord, far]), atype=np.tile(sys_.atype, 2))
    a2 = predict_outputs(ext, twice.coord[None], twice.atype[None])["global"][0]
    b2 = predict_outputs(inten, twice.coord[None], twice.atype[None])["global"][0]
    np.testing.assert_allclose(a2, 2 * a["global"][0], rtol=1e-12)
    np.testing.assert_allclose(b2, b["global"][0], rtol=1e-12)


def test_virtual_atoms_do_not_count_in_the_mean():
    model = make_model("se_e3_tebd", PROPERTY)
    sys_ = molecule(seed=4, natoms=7)
    ref = predict_outputs(model, sys_.coord[None], sys_.atype[None])
    coord = np.vstack([sys_.coord[:3], [[0.1, 0.2, 0.3]], sys_.coord[3:], [[50.0, 0, 0]]])
    atype = np.concatenate([sys_.atype[:3], [-1], sys_.atype[3:], [-1]])
    got = predict_outputs(model, coord[None], atype[None])
    np.testing.assert_allclose(got["global"], ref["global"], rtol=1e-12)
    assert np.all(got["atom"][0, [3, 8]] == 0.0)


def test_statistics_are_applied_as_declared():
    """property: y_i = out_i * std[t_i] + bias[t_i]; distinguish_types false: row 0 for all;
    dipole: no bias; polar: the mean diagonal of the bias as an isotropic shift."""
    sys_ = molecule(seed=6)
    for fitting, kind in (
        (PROPERTY, "per-type"),
        ({**PROPERTY, "distinguish_types": False}, "row0"),
        (FITTINGS["dipole"], "none"),
        (FITTINGS["polar_diag"], "diag"),
    ):
        model = make_model("dpa1", fitting)
        got = predict_outputs(model, sys_.coord[None], sys_.atype[None])["atom"][0]
        bias, std = model.out_bias.clone(), model.out_std.clone()
        with torch.no_grad():
            model.out_bias.zero_()
            model.out_std.fill_(1.0)
        raw = predict_outputs(model, sys_.coord[None], sys_.atype[None])["atom"][0]
        raw, got = raw.reshape(len(raw), -1), got.reshape(len(got), -1)
        b, s, t = bias.numpy(), std.numpy(), sys_.atype
        if kind == "per-type":
            want = raw * s[t] + b[t]
        elif kind == "row0":
            want = raw * s[0] + b[0]
        elif kind == "none":
            want = raw
        else:
            shift = np.trace(b.reshape(-1, 3, 3), axis1=1, axis2=2) / 3
            want = raw + shift[t][:, None] * np.eye(3).reshape(1, 9)
            assert np.abs(shift).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=kind)


# --- output statistics ----------------------------------------------------------------------
def _stat_batches(y, counts, key="gap"):
    nat = counts.sum(1)
    return [
        {
            key: torch.tensor(y[i : i + 2]),
            f"find_{key}": 1.0,
            "natoms": torch.tensor(np.concatenate([np.stack([nat, nat], 1), counts], 1)[i : i + 2]),
            "atype": torch.zeros(2, int(nat.max()), dtype=torch.int64),
        }
        for i in range(0, len(y), 2)
    ]


def test_output_statistics_by_regression_and_by_mean():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 6, size=(12, 4)).astype(float)
    true = rng.normal(size=(4, 3))
    y_ext = counts @ true + rng.normal(scale=0.01, size=(12, 3))
    b, s = regression_stats(y_ext, counts)
    np.testing.assert_allclose(b, true, atol=0.05)
    np.testing.assert_allclose(s, (y_ext - counts @ b).std(0), rtol=1e-12)
    frac = counts / counts.sum(1, keepdims=True)
    y_int = frac @ true
    b, _ = regression_stats(y_int, counts, intensive=True)
    np.testing.assert_allclose(frac @ b, y_int, atol=1e-10)
    mean, std = mean_stats(y_ext, counts, intensive=False)
    np.testing.assert_allclose(mean, (y_ext / counts.sum(1, keepdims=True)).mean(0))
    np.testing.assert_allclose(std, (y_ext / counts.sum(1, keepdims=True)).std(0))
    preset = np.full((4, 3), np.nan)
    preset[1] = [1.0, 2.0, 3.0]
    b, _ = regression_stats(y_ext, counts, preset=preset)
    np.testing.assert_array_equal(b[1], preset[1])

    model = make_model("dpa1", {**PROPERTY, "intensive": False})
    bias, std = compute_output_stats(model, _stat_batches(y_ext, counts))
    np.testing.assert_allclose(bias, regression_stats(y_ext, counts)[0], rtol=1e-12)
    assert std.shape == (4, 3) and np.all(std == std[0])
    assert compute_output_stats(model, _stat_batches(y_ext, counts, key="other")) is None


# --- losses ---------------------------------------------------------------------------------
def _prop_pred(p, natoms):
    nf = len(p)
    mask = torch.zeros(nf, max(natoms), dtype=torch.bool)
    for f, n in enumerate(natoms):
        mask[f, :n] = True
    return {"gap": torch.tensor(p), "mask": mask}


@pytest.mark.parametrize("func", ["smooth_mae", "mae", "mse", "rmse", "mape"])
@pytest.mark.parametrize("intensive", [True, False])
def test_property_loss_formulas(func, intensive):
    model = make_model("dpa1", {**PROPERTY, "intensive": intensive})
    loss = build_loss(
        {"type": "property", "loss_func": func, "metric": ["mae", "rmse", "mape"], "beta": 0.5},
        1e-3,
        model.config,
    )
    loss.attach(model)
    rng = np.random.default_rng(1)
    p, y = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    natoms = [4, 5, 3]
    value, more = loss(_prop_pred(p, natoms), {"gap": torch.tensor(y), "find_gap": 1.0})
    if not intensive:
        p, y = p / np.array(natoms)[:, None], y / np.array(natoms)[:, None]
    b, s = model.out_bias[0].numpy(), model.out_std[0].numpy()
    d = (y - b) / s - (p - b) / s
    ad = np.abs(d)
    want = {
        "smooth_mae": np.where(ad < 0.5, 0.5 * d * d / 0.5, ad - 0.25).sum(),
        "mae": ad.sum(),
        "mse": (d * d).sum(),
        "rmse": np.sqrt((d * d).mean()),
        "mape": np.mean(np.abs((y - p) / (y + 1e-3))),
    }[func]
    assert float(value) == pytest.approx(want, rel=1e-12)
    assert more["mae"] == pytest.approx(np.abs(y - p).mean(), rel=1e-12)
    assert more["rmse"] == pytest.approx(np.sqrt(((y - p) ** 2).mean()), rel=1e-12)
    assert set(more) == {"mae", "rmse", "mape"}


def test_tensor_loss_formulas():
    model = make_model("dpa1", FITTINGS["dipole"])
    loss = build_loss({"type": "tensor", "pref": 2.0, "pref_atomic": 0.5}, 1e-3, model.config)
    rng = np.random.default_rng(2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    atom_p, atom_y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    atom_p[0, 3] = 0.0
    glob_p, glob_y = atom_p.sum(1), rng.normal(size=(2, 3))
    pred = {"dipole": torch.tensor(atom_p), "global_dipole": torch.tensor(glob_p), "mask": mask}
    batch = {
        "dipole": torch.tensor(glob_y),
        "find_dipole": 1.0,
        "atomic_dipole": torch.tensor(atom_y.reshape(2, 4, 3)),
        "find_atomic_dipole": 1.0,
    }
    value, more = loss(pred, batch)
    m = mask.numpy()[..., None]
    local = (((atom_p - atom_y) ** 2) * m).sum() / (3 * m.sum())
    glob = ((glob_p - glob_y) ** 2).mean()
    assert float(value) == pytest.approx(0.5 * local + 2.0 * glob, rel=1e-12)
    assert more["rmse_local_dipole"] == pytest.approx(np.sqrt(local), rel=1e-12)
    assert more["rmse_global_dipole"] == pytest.approx(np.sqrt(glob) / 3.5, rel=1e-12)
    batch["find_dipole"] = 0.0
    value, more = loss(pred, batch)
    assert float(value) == pytest.approx(0.5 * local, rel=1e-12)
    assert np.isnan(more["rmse_global_dipole"])


def test_loss_and_fitting_must_match():
    prop = make_model("dpa1", PROPERTY).config
    with pytest.raises(ConfigError, match="does not fit"):
        build_loss({"type": "ener"}, 1e-3, prop)
    with pytest.raises(ConfigError, match="use it with dipole, polar"):
        build_loss({"type": "tensor", "pref": 1.0, "pref_atomic": 0.0}, 1e-3, prop)
    assert type(build_loss(None, 1e-3, prop)).__name__ == "PropertyLoss"
    with pytest.raises(ConfigError, match="metric"):
        build_loss({"type": "property", "metric": ["mea"]}, 1e-3, prop)
    dip = make_model("dpa1", FITTINGS["dipole"]).config
    with pytest.raises(ConfigError, match="explicit loss section"):
        build_loss(None, 1e-3, dip)
    with pytest.raises(ConfigError, match="pref_atomic"):
        build_loss({"type": "tensor", "pref": 1.0}, 1e-3, dip)


def test_every_loss_registers_from_its_own_module():
    from lamkit.train import loss, loss_registry

    assert loss.LOSSES is loss_registry.LOSSES
    for name, module in [
        ("ener", "loss_energy"),
        ("property", "loss_property"),
        ("tensor", "loss_tensor"),
        ("dos", "loss_dos"),
        ("population", "loss_population"),
        ("ener_spin", "loss_spin"),
    ]:
        assert loss.LOSSES.get(name).__module__ == f"lamkit.train.{module}"


# --- model configuration --------------------------------------------------------------------
def test_fitting_config_errors():
    with pytest.raises(ConfigError, match="rotation matrix"):
        make_model("se_e3_tebd", FITTINGS["dipole"])
    with pytest.raises(ConfigError, match="property_name"):
        make_model("dpa1", {**PROPERTY, "property_name": "energy"})
    with pytest.raises(ConfigError, match="task_dim"):
        make_model("dpa1", {**PROPERTY, "task_dim": 0})
    with pytest.raises(ConfigError, match="scale"):
        make_model("dpa1", {"type": "polar", "scale": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="unknown key 'task_dims'"):
        make_model("dpa1", {**PROPERTY, "task_dims": 2})
    model = make_model("dpa1", {"type": "property"})
    assert model.output_def.name == "property" and model.output_def.shape == (1,)
    assert isinstance(make_model("dpa1", {"type": "ener"}), EnergyModel)
    assert not isinstance(model, EnergyModel)


def test_output_kind_is_declared_and_one_forward_differentiates():
    """The model kind is a field of the output definition; the one forward computes forces
    exactly for an r_differentiable output, whatever the model's class."""
    from lamkit.fitting import OutputDef
    from lamkit.infer.deep_eval import model_kind

    kinds = {"property": "property", "dipole": "dipole", "polar": "polar"}
    for name, kind in kinds.items():
        model = make_model("dpa1", FITTINGS[name])
        assert model.output_def.kind == model_kind(model) == kind
        assert not model.output_def.r_differentiable
    assert make_model("dpa1", {"type": "dos", "numb_dos": 4}).output_def.kind == "dos"
    with pytest.raises(ValueError, match="kind"):
        OutputDef("x", (1,), "atom_x", "x", "x", kind="magic")
    energy = make_model("dpa1", {"type": "ener"})
    assert energy.output_def.kind == "energy" and energy.output_def.r_differentiable
    plain = AtomicModel(energy.descriptor, energy.fitting, TYPE_MAP).eval()
    plain.load_state_dict(energy.state_dict())
    sys_ = molecule(seed=2)
    coord = torch.tensor(sys_.coord[None])
    atype = torch.tensor(sys_.atype[None])
    want, got = energy.evaluate(coord, atype), plain.evaluate(coord, atype)
    assert list(want) == list(got) and "force" in got and "virial" in got
    for key, value in want.items():
        assert torch.equal(value, got[key]), key
    assert list(plain.evaluate(coord, atype, do_force=False, do_virial=False)) == [
        "energy",
        "atom_energy",
        "mask",
    ]


# --- inference interfaces -------------------------------------------------------------------
def test_deep_property_and_tensor_interfaces():
    from lamkit.infer import DeepDipole, DeepPolar, DeepPot, DeepProperty, open_model

    rng = np.random.default_rng(3)
    frames = [molecule(seed=s) for s in (1, 2, 3)]
    coords = np.stack([f.coord for f in frames])
    types = np.stack([f.atype for f in frames])
    prop = make_model("dpa1", PROPERTY)
    dp = DeepProperty(prop)
    assert (dp.get_task_dim(), dp.get_intensive(), dp.get_var_name()) == (3, True, "gap")
    (p,) = dp.eval(coords.reshape(3, -1), None, types, mixed_type=True)
    p2, ap = dp.eval(coords, None, types, atomic=True, mixed_type=True)
    assert p.shape == (3, 3) and ap.shape == (3, 9, 3)
    np.testing.assert_allclose(p, p2, rtol=1e-14)
    np.testing.assert_allclose(p, ap.mean(1), rtol=1e-12)
    want = predict_outputs(prop, coords, types)["global"]
    np.testing.assert_allclose(p, want, rtol=1e-12)
    with pytest.raises(ValueError, match="use lamkit.infer.DeepProperty"):
        DeepPot(prop)
    assert isinstance(open_model(prop), DeepProperty)

    dip = make_model("dpa1", FITTINGS["dipole"])
    dd = DeepDipole(dip)
    atomic = dd.eval(coords[0], None, frames[0].atype)
    total = dd.eval(coords[0], None, frames[0].atype, atomic=False)
    assert atomic.shape == (1, 9, 3) and total.shape == (1, 3)
    np.testing.assert_allclose(atomic.sum(1), total, rtol=1e-12)
    with pytest.raises(ValueError, match="DeepDipole"):
        DeepPolar(dip)
    pol = DeepPolar(make_model("dpa1", FITTINGS["polar"]))
    assert pol.eval(coords, None, types, atomic=False, mixed_type=True).shape == (3, 9)
    assert pol.output_dim == 9 and pol.get_sel_type() == [0, 1, 2, 3]
    assert rng is not None
