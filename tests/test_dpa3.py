"""DPA-3 (``lamkit.descriptor.dpa3``): the physics suite (forces/virials by finite differences,
rotation/translation/permutation, PBC images, cutoff smoothness, batching, virtual atoms) on
tiny instances wired into EnergyModel, smoothness where an angle leaves ``a_rcut``, the config
errors, the statistics rule (``fix_stat_std``), and two steps of ``lam train``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.cli.main import main
from lamkit.descriptor.dpa3 import DescrptDPA3
from lamkit.errors import ConfigError
from lamkit.fitting.energy import EnergyFitting
from lamkit.model.build import build_model
from lamkit.model.energy_model import EnergyModel
from lamkit.model.type_map import change_type_map
from lamkit.testing import randomize_statistics, standard_system
from lamkit.testing.physics import _compare, assert_close, cutoff_crossing_path, predict
from lamkit.testing.suite import ModelPhysicsTests
from lamkit.testing.systems import make_supercell

from .conftest import need_shared

TYPE_MAP = ["O", "H"]
TINY = dict(
    n_dim=8,
    e_dim=6,
    a_dim=4,
    nlayers=2,
    e_rcut=4.0,
    e_rcut_smth=3.0,
    e_sel=48,
    a_rcut=3.0,
    a_rcut_smth=2.0,
    a_sel=40,
    axis_neuron=2,
    smooth_edge_update=True,
)


def tiny_model(precision="float64", seed=3, top=None, **kw):
    desc = DescrptDPA3(2, {**TINY, **kw}, precision=precision, seed=seed, **(top or {}))
    fit = EnergyFitting(2, desc.dim_out, True, neuron=[8, 8], precision=precision, seed=seed)
    model = randomize_statistics(EnergyModel(desc, fit, TYPE_MAP), seed)
    with torch.no_grad():  # the repflow block keeps a zero mean
        model.descriptor.repflows.davg.zero_()
    return model


VARIANTS = {
    "default-smooth": {},
    "compress-dynamic-exp": dict(
        a_compress_rate=1,
        use_dynamic_sel=True,
        use_exp_switch=True,
        edge_init_use_dist=True,
        update_style="res_avg",
    ),
}


class TestDPA3Physics(ModelPhysicsTests):
    @pytest.fixture(params=list(VARIANTS))
    def model_factory(self, request):
        def make(precision: str = "float64"):
            return tiny_model(precision, **VARIANTS[request.param])

        return make

    # Message passing sends node features of a local atom to its ghost images, so the per-atom
    # virial of a periodic system is not translation invariant (as in the reference and DPA-2);
    # energies, forces and the total virial are.
    PBC_NAMES = ("energy", "force", "virial", "atom_energy")

    def test_translation(self, model, system):
        vec = np.random.default_rng(12).normal(scale=3.0, size=3)
        moved = system.copy(coord=system.coord + vec)
        names = self.PBC_NAMES if system.periodic else None
        _compare("translated", predict(model, moved), predict(model, system), 1e-9, 1e-10, names)

    @pytest.mark.parametrize("reps", [(2, 1, 1)])
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


@pytest.mark.parametrize("smooth", [True, False])
def test_angle_cutoff_crossing(smooth):
    """With ``smooth_edge_update`` the energy is continuous where a neighbour leaves the angle
    cutoff; without it (the reference's default) the edge update switches to the edge itself
    there, a jump."""
    model = tiny_model(smooth_edge_update=smooth)
    sys_ = standard_system("cluster", 2, model.rcut, seed=7)
    a_rcut = TINY["a_rcut"]
    p, origin, u = cutoff_crossing_path(sys_, a_rcut, np.random.default_rng(3))

    def energy(t):
        s = sys_.copy()
        s.coord[p] = origin + t * u
        return float(predict(model, s, atomic=False)["energy"])

    d = 2e-6
    jump = abs(energy(a_rcut + d) - (2 * energy(a_rcut - d) - energy(a_rcut - 3 * d)))
    if smooth:
        assert jump < 1e-9
    else:
        assert jump > 1e-6


def test_shapes_and_rot_mat():
    model = tiny_model(top={"concat_output_tebd": True})
    desc = model.descriptor
    assert desc.dim_out == 16 and desc.dim_emb == 6 and desc.sel == [48]
    sys_ = standard_system("cubic", 2, desc.rcut, seed=7)
    coord, atype, box = sys_.tensors(torch.float64)
    nbr = model.neighbor_builder()(coord, atype, box)
    ext, eat = model.extend(coord, atype, box, nbr)
    out = desc(ext, eat, nbr[keys.NLIST], nbr[keys.MAPPING])
    assert out[keys.DESCRIPTOR].shape == (1, sys_.nloc, 16)
    assert out["rot_mat"].shape == (1, sys_.nloc, 6, 3)
    # the last n_dim columns are the type embedding (concat_output_tebd)
    tebd = desc.type_embedding(atype)
    torch.testing.assert_close(out[keys.DESCRIPTOR][..., 8:], tebd)


@pytest.mark.parametrize(
    "repflow, top, match",
    [
        ({"sequential_update": True}, {}, "sequential_update"),
        ({"a_compress_rate": 3}, {}, "a_compress_rate"),
        ({"use_dynamic_sel": True, "smooth_edge_update": False}, {}, "use_dynamic_sel"),
        ({"a_rcut": 5.0}, {}, "a_rcut"),
        ({"a_sel": 60}, {}, "a_sel"),
        ({}, {"activation_function": "silut:abc"}, "threshold"),
        ({}, {"activation_function": "swish"}, "swish"),
        ({"bogus_key": 1}, {}, "bogus_key"),
    ],
)
def test_refused_options(repflow, top, match):
    conf = {
        "type_map": TYPE_MAP,
        "descriptor": {"type": "dpa3", "repflow": {**TINY, **repflow}, **top},
        "fitting_net": {"neuron": [8]},
    }
    with pytest.raises(ConfigError, match=match):
        build_model(conf)


def test_statistics_rule():
    """Constant std ``fix_stat_std`` (0.3) by default; from the data when it is 0; the mean
    stays zero either way."""
    sys_ = standard_system("cubic", 2, 4.0, seed=7)
    coord, atype, box = sys_.tensors(torch.float64)
    for fix in (0.3, 0.0):
        model = tiny_model(fix_stat_std=fix)
        desc = model.descriptor
        fresh = DescrptDPA3(2, {**TINY, "fix_stat_std": fix})
        assert torch.all(fresh.dstd == (fix or 1.0))
        desc.repflows.dstd.fill_(fix or 1.0)  # as built; set_stat leaves a fixed std
        nbr = model.neighbor_builder()(coord, atype, box)
        ext, eat = model.extend(coord, atype, box, nbr)
        stat = desc.env_stat(
            [{keys.EXT_COORD: ext, keys.EXT_ATYPE: eat, keys.NLIST: nbr[keys.NLIST]}]
        )
        desc.set_stat(stat)
        assert (desc.davg == 0).all()
        if fix:
            assert torch.all(desc.dstd == 0.3)
        else:
            _, want = stat.davg_dstd(1e-2, True)
            assert_close("dstd", desc.dstd.numpy(), np.asarray(want))
            assert not torch.all(desc.dstd == 1.0)


def test_lam_train_two_steps(tmp_path, monkeypatch):
    data = need_shared("mixed_type_small", "data_mixed_type")
    conf = {
        "model": {
            "type_map": TYPE_MAP,
            "descriptor": {
                "type": "dpa3",
                "repflow": {**TINY, "e_sel": "auto", "a_sel": "auto"},
                "seed": 1,
            },
            "fitting_net": {"neuron": [8, 8], "seed": 1},
            "data_stat_nbatch": 1,
        },
        "learning_rate": {"start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 1},
        "loss": {"type": "ener"},
        "training": {
            "training_data": {"systems": [str(data)], "batch_size": 1},
            "numb_steps": 2,
            "disp_freq": 1,
            "save_freq": 2,
            "seed": 1,
        },
    }
    (tmp_path / "in.json").write_text(json.dumps(conf))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "in.json"]) == 0
    rows = [ln.split() for ln in (tmp_path / "lcurve.out").read_text().splitlines()]
    losses = [float(r[1]) for r in rows if r and not r[0].startswith("#")]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_change_type_map_keeps_predictions_and_fixed_std():
    """Fine-tuning to a new type map: old elements predict exactly as before, and a new
    element gets the constant std ``fix_stat_std`` like the others (not 1)."""
    conf = {
        "type_map": TYPE_MAP,
        "descriptor": {"type": "dpa3", "repflow": TINY, "seed": 1, "precision": "float64"},
        "fitting_net": {"neuron": [8], "seed": 1, "precision": "float64"},
    }
    model = randomize_statistics(build_model(conf), 2)
    model.descriptor.repflows.dstd.fill_(0.3)
    model.descriptor.repflows.davg.zero_()
    sys_ = standard_system("triclinic", 2, 4.0, seed=7)
    new = change_type_map(model, ["H", "C", "O"])
    moved = sys_.copy(atype=np.where(sys_.atype == 0, 2, 0))
    _compare("new type map", predict(new, moved), predict(model, sys_), 1e-12, 1e-12)
    assert torch.all(new.descriptor.dstd == 0.3)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chunked_evaluation_equals_whole(variant, monkeypatch):
    """``chunk_atoms``: the repflow inputs and every layer run on slices of centre atoms (under
    activation checkpointing); energies, forces and virials are those of the whole system."""
    from lamkit.nn import chunking

    model = tiny_model(**VARIANTS[variant])
    sys_ = standard_system("cubic", 2, model.rcut, seed=7)
    coord, atype, box = sys_.tensors(torch.float64)
    nbr = model.neighbor_builder()(coord, atype, box)
    want = model(coord, atype, box, nbr, do_atomic_virial=True)
    calls = []
    real = chunking.checkpoint

    def spy(fn, start, stop, *args, **kw):
        calls.append(stop - start)
        return real(fn, start, stop, *args, **kw)

    monkeypatch.setattr(chunking, "checkpoint", spy)
    got = model(coord, atype, box, nbr, do_atomic_virial=True, chunk_atoms=5)
    assert calls and set(calls) == {4}  # 12 atoms in slices of 4
    for name in (keys.ENERGY, keys.ATOM_ENERGY, keys.FORCE, keys.VIRIAL, keys.ATOM_VIRIAL):
        a, b = got[name].detach(), want[name].detach()
        assert float((a - b).abs().max()) <= 1e-12 * float(b.abs().max()), name
