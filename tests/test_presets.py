"""The shipped presets (``lamkit.presets``, DeePMD-kit's water examples) and ``make_input``:
each normalises as an input file and builds a model with the parameter count of the spec
(§8.1, §8.2, §8.4, §8.5); the data, type map and steps are filled in as asked; mistakes give
errors that say what to do."""

from __future__ import annotations

import pytest

from lamkit.config import normalize_input
from lamkit.errors import ConfigError, DataError
from lamkit.model import build_model
from lamkit.presets import load_preset, make_input, preset_names, split_systems

from .conftest import need_shared

PARAMETERS = {  # total, descriptor (type map [O, H])
    ("dpa2", "small"): (622_219, 472_938),
    ("dpa2", "medium"): (1_017_163, 867_882),
    ("dpa2", "large"): (1_741_003, 1_591_722),
    ("dpa2_compressible", None): (628_698, None),
    ("dpa3", None): (1_309_761, 1_162_400),  # as the reference's model of the same input
    ("dpa1", None): (612_995, 110_434),
    ("se_e3_tebd", None): (120_593, 112),
    ("se_e2_a", None): (1_014_182, 12_900),
}


def test_every_preset_is_listed():
    assert preset_names() == sorted({name for name, _ in PARAMETERS})


@pytest.mark.parametrize("name, size", list(PARAMETERS))
def test_preset_normalizes_and_has_the_spec_parameter_count(name, size):
    conf = load_preset(name, size)
    normalize_input(conf)
    model = build_model(conf["model"])
    total, desc = PARAMETERS[(name, size)]
    assert sum(p.numel() for p in model.parameters()) == total
    if desc is not None:
        assert sum(p.numel() for p in model.descriptor.parameters()) == desc


def test_dpa2_sizes_differ_only_in_layers_and_g2_attention():
    small, medium, large = (load_preset("dpa2", s) for s in ("small", "medium", "large"))
    for other, nlayers in ((medium, 6), (large, 12)):
        rf = other["model"]["descriptor"]["repformer"]
        assert (rf.pop("nlayers"), rf.pop("update_g2_has_attn")) == (nlayers, True)
        other["_comment"] = small["_comment"]
    rf = small["model"]["descriptor"]["repformer"]
    assert (rf.pop("nlayers"), rf.pop("update_g2_has_attn")) == (3, False)
    assert small == medium == large
    assert load_preset("dpa2")["model"]["descriptor"]["repformer"]["nlayers"] == 6  # medium


def test_make_input_fills_data_type_map_and_steps():
    conf = make_input("se_a", None, ["a", "b"], ["c"], ["Cu", "Au", "Ni"], steps=50)
    tr = conf["training"]
    assert tr["training_data"]["systems"] == ["a", "b"]
    assert tr["validation_data"]["systems"] == ["c"]
    assert (tr["numb_steps"], tr["disp_freq"], tr["save_freq"]) == (50, 5, 50)
    assert conf["model"]["type_map"] == ["Cu", "Au", "Ni"]
    assert conf["model"]["descriptor"]["sel"] == "auto"  # per-type sel of [O, H] no longer fits
    kept = make_input("dpa2", "large", type_map=["Cu", "Au", "Ni"])
    assert kept["model"]["descriptor"]["repinit"]["nsel"] == 120
    dpa3 = make_input("dpa3", None, ["a"], ["b"], ["Cu", "Au", "Ni"], steps=2)
    normalize_input(dpa3)
    assert dpa3["model"]["descriptor"]["repflow"]["e_sel"] == 120  # one count: still fits
    assert dpa3["training"]["numb_steps"] == 2
    assert sum(p.numel() for p in build_model(dpa3["model"]).parameters()) > 1_309_761


@pytest.mark.parametrize(
    "args, message",
    [
        (("dpa4",), "no preset 'dpa4'; available: dpa1, dpa2, dpa2_compressible, dpa3"),
        (("dpa3", "small"), "--size: only dpa2 comes in sizes"),
        (("dpa2", "huge"), "--size: 'huge' is not one of small, medium, large"),
        (("se_e3_tebd", "small"), "--size: only dpa2 comes in sizes"),
    ],
)
def test_preset_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        load_preset(*args)


def test_split_systems_on_the_water_example():
    water = need_shared("water")
    train, valid = split_systems([water])
    assert [p.name for p in train] == ["data_0", "data_1", "data_2"]
    assert [p.name for p in valid] == ["data_3"]
    with pytest.raises(DataError, match="found 1 system.*need at least two"):
        split_systems([water / "data_0"])
    with pytest.raises(DataError, match="no such folder"):
        split_systems([water / "nowhere"])
