"""DPA-2 (``lamkit.descriptor.dpa2``): shapes, parameter count of the spec's small preset, the
physics suite (forces/virials by finite differences, rotation/translation/permutation, PBC
images, cutoff smoothness, batching, virtual atoms) on tiny instances wired into EnergyModel
(strip mode and excluded type pairs included), the config schema, per-block statistics with
the stat-file cache, and ``sel: "auto"`` for the three neighbour lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.descriptor.dpa2 import DescrptDPA2, split_neighbor_list
from lamkit.testing import standard_system
from lamkit.testing.factories import DPA2_SMALL_REPFORMER as SMALL_REPFORMER
from lamkit.testing.factories import DPA2_SMALL_REPINIT as SMALL_REPINIT
from lamkit.testing.factories import DPA2_VARIANTS as VARIANTS
from lamkit.testing.factories import TYPE_MAP
from lamkit.testing.factories import make_dpa2 as tiny_model
from lamkit.testing.physics import _compare, predict
from lamkit.testing.suite import ModelPhysicsTests
from lamkit.testing.systems import make_supercell

from .conftest import need_shared

pytestmark = pytest.mark.usefixtures("one_thread")


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
    # g2 covers the slots used by some atom (the list is trimmed to its widest row)
    used = int(((out["sw"] > 0).sum(-1)).amax())
    assert out["g2"].shape == (nf, nloc, used, 6) and 0 < used < 40
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


@pytest.mark.parametrize("davg", ["zero", "repformer", "all"])
@pytest.mark.parametrize("variant", ["all-updates", "non-smooth"])
def test_trimmed_lists_change_nothing(davg, variant, monkeypatch):
    """Cutting each list to its widest row (DescrptDPA2.trimmed) gives the numbers of the full
    lists: with zero means every block is cut; a non-zero repformer / three-body radial mean
    keeps the result exact; a non-zero repinit mean turns the repinit cut off."""
    extra = dict(VARIANTS["all-updates"])
    if variant == "non-smooth":
        extra.update(smooth=False, update_style="res_avg")
    model = tiny_model(**extra)
    rng = np.random.default_rng(5)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if (
                name.endswith("davg")
                and davg != "zero"
                and ("repinit." not in name or davg == "all")
            ):
                buf[:, 0] = torch.as_tensor(rng.uniform(0.03, 0.08, buf.shape[0]))
    sys_ = standard_system("cubic", 2, model.descriptor.rcut, seed=11)
    trimmed = predict(model, sys_)
    ext, eat, nlist, _ = _neighbors(model, sys_)
    widths = {
        k: v.shape[-1]
        for k, v in model.descriptor.trimmed(model.descriptor.sub_lists(ext, eat, nlist)).items()
    }
    assert widths["repformer"] < 40 and widths["three_body"] < 40
    assert (widths["repinit"] < 80) == (davg != "all")
    monkeypatch.setattr(DescrptDPA2, "trimmed", lambda self, lists: lists)
    _compare("trimmed lists", trimmed, predict(model, sys_), 1e-12, 1e-13)


class TestDPA2Physics(ModelPhysicsTests):
    @pytest.fixture(params=list(VARIANTS))
    def model_factory(self, request):
        extra = VARIANTS[request.param]

        def make(precision: str = "float64"):
            model = tiny_model(precision, **extra)
            return model.eval() if request.param.endswith("-eval") else model

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


# --- excluded type pairs ----------------------------------------------------------------------
def test_excluded_pairs_decouple_the_types():
    """With O-H excluded from every list (message passing included), O and H atoms never see
    each other: the energy is the sum of the O-only and the H-only energies."""
    model = tiny_model(exclude_types=[[0, 1]])
    sys_ = standard_system("cluster", 2, model.rcut, seed=11)
    coord, atype, _ = sys_.tensors(torch.float64)
    assert 2 <= int((atype == 0).sum()) <= atype.shape[1] - 2
    ext, ext_atype, nlist, _ = _neighbors(model, sys_)
    for nl in model.descriptor.sub_lists(ext, ext_atype, nlist).values():
        tj = torch.where(nl >= 0, ext_atype[0][nl.clamp(min=0)], -1)
        ti = ext_atype[0][: nl.shape[1]]
        assert not ((ti[None, :, None] != tj) & (tj >= 0)).any()
        assert (tj >= 0).any()

    def energy(mask):
        c, a = coord[:, mask], atype[:, mask]
        return model.evaluate(c, a, do_force=False, do_virial=False)[keys.ENERGY]

    full = energy(torch.ones_like(atype[0], dtype=torch.bool))
    split = energy(atype[0] == 0) + energy(atype[0] == 1)
    torch.testing.assert_close(full, split, rtol=1e-12, atol=1e-12)


# --- config ---------------------------------------------------------------------------------
def _small_config(**desc) -> dict:
    return {
        "type": "dpa2",
        "repinit": dict(SMALL_REPINIT),
        "repformer": dict(SMALL_REPFORMER),
        "precision": "float64",
        **desc,
    }


def test_registered_with_reference_defaults_and_alias():
    from lamkit.descriptor import DESCRIPTORS

    cls = DESCRIPTORS.get("dpa2")
    assert cls is DescrptDPA2
    conf = cls.normalize_config(
        {
            "type": "dpa2",
            "repinit": {"rcut": 6.0, "rcut_smth": 0.5, "nsel": 120},
            "repformer": {"rcut": 4.0, "rcut_smth": 3.5, "nsel": 48},
            "repformer_add_type_ebd_to_seq": True,
        }
    )
    assert conf["add_tebd_to_repinit_out"] is True and conf["smooth"] is True
    ri, rf = conf["repinit"], conf["repformer"]
    assert ri["neuron"] == [25, 50, 100] and ri["axis_neuron"] == 16 and ri["three_body_sel"] == 40
    assert ri["three_body_rcut_smth"] == 0.5 and ri["use_three_body"] is False
    assert rf["g2_dim"] == 16 and rf["update_style"] == "res_avg" and rf["ln_eps"] is None
    assert rf["update_residual"] == 0.001 and rf["attn2_has_gate"] is False
    desc = cls(2, ri, rf, add_tebd_to_repinit_out=True, seed=1)
    assert desc.tebd_transform is not None
    norms = [m for m in desc.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)  # ln_eps null means 1e-5


@pytest.mark.parametrize(
    "patch, message",
    [
        (
            ("repformer", "update_g1_has_atn", True),
            "model/descriptor/repformer: unknown key "
            "'update_g1_has_atn'. Did you mean 'update_g1_has_attn'?",
        ),
        (("repinit", "three_body_rcut_smooth", 0.5), "Did you mean 'three_body_rcut_smth'?"),
        (("repinit", "tebd_input_mode", "stripped"), "model/descriptor/repinit/tebd_input_mode"),
        (("repformer", "nsel", 130), "rcut and nsel must increase together"),
        (("repinit", "nsel", "auto"), "model/descriptor/repinit/nsel: 'auto' must be resolved"),
        ((None, "exclude_types", [[0, 2]]), "model/descriptor/exclude_types: [0, 2]"),
    ],
)
def test_config_errors_name_the_key(patch, message):
    from lamkit.errors import ConfigError
    from lamkit.model import build_model

    desc = _small_config()
    where, key, value = patch
    (desc if where is None else desc[where])[key] = value
    with pytest.raises(ConfigError) as info:
        build_model({"type_map": TYPE_MAP, "descriptor": desc, "fitting_net": {"neuron": [4]}})
    assert message in str(info.value)


def test_missing_nested_key():
    from lamkit.errors import ConfigError
    from lamkit.model import normalize_model_config

    desc = _small_config()
    del desc["repformer"]["rcut_smth"]
    with pytest.raises(ConfigError, match="model/descriptor/repformer: required key 'rcut_smth'"):
        normalize_model_config({"type_map": TYPE_MAP, "descriptor": desc, "fitting_net": {}})


def test_strip_mode_parameter_count():
    """Spec §8.1: input_torch_compressible.json (small + repinit strip) has 628,698 parameters."""
    from lamkit.model import build_model

    desc = _small_config(seed=1)
    desc["repinit"]["tebd_input_mode"] = "strip"
    fit = {"neuron": [240, 240, 240], "resnet_dt": True, "precision": "float64", "seed": 1}
    model = build_model({"type_map": TYPE_MAP, "descriptor": desc, "fitting_net": fit})
    assert sum(p.numel() for p in model.parameters()) == 628_698


# --- statistics and sel: "auto" --------------------------------------------------------------
# Spec §14: dstd [r, a] per centre type of all 80 frames of water data_0 (davg stays 0).
SPEC_DSTD = {
    "repinit": {"O": (0.148497, 0.092021), "H": (0.131352, 0.082296)},
    "three_body": {"O": (0.240171, 0.172158), "H": (0.218488, 0.158945)},
    "repformer": {"O": (0.240171, 0.172158), "H": (0.218488, 0.158945)},
}


def _water_config(tmp_path, systems, **model):
    from lamkit.presets import load_preset

    conf = load_preset("dpa2", "small")
    conf["model"].update(model)
    conf["training"].update(
        training_data={"systems": [str(s) for s in systems], "batch_size": 1},
        validation_data=None,
        numb_steps=1,
        stat_file=str(tmp_path / "stat.h5"),
    )
    return conf


def test_statistics_of_the_small_preset_match_the_spec(tmp_path, monkeypatch):
    """Every frame of water data_0 (data_stat_nbatch >= 80): dstd of the three blocks as the
    reference's (spec §14); the stat file holds one group per distinct block and a second run
    reads it instead of recomputing."""
    import h5py

    from lamkit.train import Trainer

    water = need_shared("water", "data_0")
    conf = _water_config(tmp_path, [water], data_stat_nbatch=100)
    model = Trainer(conf, tmp_path).model
    blocks = model.descriptor._blocks()
    for name, per_type in SPEC_DSTD.items():
        assert (blocks[name].davg == 0).all()
        for elem, (r, a) in per_type.items():
            t = model.type_map.index(elem)
            assert blocks[name].dstd[t, 0].item() == pytest.approx(r, abs=1e-6), (name, elem)
            assert blocks[name].dstd[t, 1:].tolist() == pytest.approx([a] * 3, abs=1e-6)
    with h5py.File(tmp_path / "stat.h5", "r") as h5:
        groups = {h5[k].attrs["blocks"] for k in h5}
    assert groups == {"repinit", "three_body repformer"}  # same rcut, rcut_smth, nsel: shared

    def fail(*args, **kwargs):
        raise AssertionError("statistics recomputed although the stat file has them")

    monkeypatch.setattr(DescrptDPA2, "env_stat", fail)
    again = Trainer(conf, tmp_path / "again").model
    for name, block in again.descriptor._blocks().items():
        torch.testing.assert_close(block.dstd, blocks[name].dstd, rtol=0, atol=0)


def test_auto_sel_resolves_every_list_like_the_reference(tmp_path):
    """DeePMD-kit 3.2.0's ``DescrptDPA2.update_sel`` on water data_0 + data_1 gives repinit nsel
    120 ("auto"), three_body_sel 52 ("auto:1.3") and repformer nsel 48 ("auto:1.25"): maxima
    108 within 6 Å and 38 within 4 Å, times the factor, truncated, rounded up to 4."""
    from lamkit.errors import ConfigError
    from lamkit.train import Trainer
    from lamkit.train.stats import resolve_sel

    water = need_shared("water")
    conf = _water_config(tmp_path, [water / "data_0", water / "data_1"])
    d = conf["model"]["descriptor"]
    d["repinit"].update(nsel="auto", three_body_sel="auto:1.3")
    d["repformer"]["nsel"] = "auto:1.25"
    trainer = Trainer(conf, tmp_path)
    desc = trainer.model.descriptor
    assert (desc.nnei, desc.repinit_three_body.nnei, desc.repformers.nnei) == (120, 52, 48)
    assert trainer.model_config["descriptor"]["repinit"]["nsel"] == 120
    assert resolve_sel("auto", 40) == 44  # int(44.000000000000004) -> 44, not 48
    with pytest.raises(ConfigError, match="--skip-neighbor-stat"):
        Trainer(conf, tmp_path, skip_neighbor_stat=True)
