"""Descriptor configs: one source of defaults per block, and the same mistake raising the
same ConfigError (naming the key path) in every descriptor."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from lamkit.descriptor import DESCRIPTORS, build_descriptor
from lamkit.descriptor.block_config import BlockConfig
from lamkit.descriptor.dpa1 import DPA1Config, SeAttenV2Config
from lamkit.descriptor.dpa2.config import DPA2Config, RepformerConfig, RepinitConfig
from lamkit.descriptor.dpa3.config import DPA3Config, RepflowConfig
from lamkit.descriptor.se_e2_a import SeAConfig
from lamkit.descriptor.se_e2_r import SeRConfig
from lamkit.descriptor.se_e3 import SeTConfig
from lamkit.descriptor.se_e3_tebd import SeE3TebdConfig
from lamkit.errors import ConfigError

TYPE_MAP = ["O", "H"]
TYPED = {"sel": [4, 4], "rcut": 4.0, "rcut_smth": 0.5, "neuron": [2, 4]}
MIXED = {"sel": 8, "rcut": 4.0, "rcut_smth": 0.5, "neuron": [2, 4]}
DPA2 = {
    "type": "dpa2",
    "repinit": {"rcut": 4.0, "rcut_smth": 0.5, "nsel": 12, "neuron": [2, 4], "axis_neuron": 2},
    "repformer": {
        "rcut": 3.0,
        "rcut_smth": 0.5,
        "nsel": 8,
        "nlayers": 1,
        "g1_dim": 4,
        "g2_dim": 2,
        "attn1_hidden": 2,
        "attn1_nhead": 1,
        "attn2_hidden": 2,
        "attn2_nhead": 1,
    },
}
DPA3 = {
    "type": "dpa3",
    "repflow": {
        "n_dim": 4,
        "e_dim": 2,
        "a_dim": 2,
        "nlayers": 1,
        "e_rcut": 4.0,
        "e_rcut_smth": 0.5,
        "e_sel": 12,
        "a_rcut": 3.0,
        "a_rcut_smth": 0.5,
        "a_sel": 8,
    },
}
# descriptor config, where its cutoff/neighbour keys live ((section,) or ()), and their names
CASES = {
    "se_e2_a": ({"type": "se_e2_a", **TYPED}, (), ("rcut", "rcut_smth", "sel")),
    "se_e2_r": ({"type": "se_e2_r", **TYPED}, (), ("rcut", "rcut_smth", "sel")),
    "se_e3": ({"type": "se_e3", **TYPED}, (), ("rcut", "rcut_smth", "sel")),
    "se_e3_tebd": ({"type": "se_e3_tebd", **MIXED}, (), ("rcut", "rcut_smth", "sel")),
    "dpa1": ({"type": "dpa1", **MIXED, "attn": 4}, (), ("rcut", "rcut_smth", "sel")),
    "se_atten_v2": ({"type": "se_atten_v2", **MIXED, "attn": 4}, (), ("rcut", "rcut_smth", "sel")),
    "dpa2/repinit": (DPA2, ("repinit",), ("rcut", "rcut_smth", "nsel")),
    "dpa2/repformer": (DPA2, ("repformer",), ("rcut", "rcut_smth", "nsel")),
    "dpa3": (DPA3, ("repflow",), ("e_rcut", "e_rcut_smth", "e_sel")),
    "hybrid": (
        {"type": "hybrid", "list": [{"type": "se_e2_a", **TYPED}]},
        ("list", 0),
        ("rcut", "rcut_smth", "sel"),
    ),
}
TYPED_CASES = ("se_e2_a", "se_e2_r", "se_e3", "hybrid")


def _patched(case: str, key_index: int, value) -> tuple[dict, str]:
    """The case's config with one cutoff/neighbour key set to ``value``; its key path."""
    conf, section, names = CASES[case]
    conf = copy.deepcopy(conf)
    target = conf
    for part in section:
        target = target[part]
    key = names[key_index]
    target[key] = value
    return conf, "/".join(["model/descriptor", *map(str, section), key])


def _raises(conf: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_descriptor(conf, TYPE_MAP)
    assert path in str(info.value), str(info.value)


@pytest.mark.parametrize("case", list(CASES))
def test_valid_configs_build(case):
    build_descriptor(copy.deepcopy(CASES[case][0]), TYPE_MAP)


@pytest.mark.parametrize("case", list(CASES))
def test_rcut_smth_beyond_rcut(case):
    conf, path = _patched(case, 1, 9.0)
    _raises(conf, path)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rcut", [0.0, -1.0])
def test_rcut_not_positive(case, rcut):
    conf, path = _patched(case, 0, rcut)
    _raises(conf, path)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["negative", "non-integer", "unresolved"])
def test_bad_sel(case, kind):
    typed = case in TYPED_CASES
    value = {"negative": -4, "non-integer": 4.5, "unresolved": "auto"}[kind]
    if typed and kind != "unresolved":
        value = [value, 4]
    conf, path = _patched(case, 2, value)
    if case == "hybrid" and kind == "unresolved":
        path = "model/descriptor/list/0/sel"
    _raises(conf, path)


@pytest.mark.parametrize("case", TYPED_CASES)
def test_sel_of_wrong_length(case):
    conf, path = _patched(case, 2, [4, 4, 4])
    _raises(conf, path)


@pytest.mark.parametrize("case", list(CASES))
def test_exclude_types_outside_the_type_map(case):
    conf, section, _ = CASES[case]
    conf = copy.deepcopy(conf)
    if case == "hybrid":
        conf["list"][0]["exclude_types"] = [[0, 2]]
        path = "model/descriptor/list/0/exclude_types"
    else:
        conf["exclude_types"] = [[0, 2]]
        path = "model/descriptor/exclude_types"
    _raises(conf, path)


CONFIGS = [
    SeAConfig,
    SeRConfig,
    SeTConfig,
    SeE3TebdConfig,
    DPA1Config,
    SeAttenV2Config,
    RepinitConfig,
    RepformerConfig,
    DPA2Config,
    RepflowConfig,
    DPA3Config,
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_schema_defaults_are_the_config_defaults(config: type[BlockConfig]):
    fields = {f.name: f for f in dataclasses.fields(config)}
    args = config.args()
    assert [a.name for a in args] == list(fields)
    for a in args:
        f = fields[a.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert default == a.default, a.name


@pytest.mark.parametrize(
    "name, config",
    [
        ("se_e2_a", SeAConfig),
        ("se_e2_r", SeRConfig),
        ("se_e3", SeTConfig),
        ("se_e3_tebd", SeE3TebdConfig),
        ("dpa1", DPA1Config),
        ("se_atten_v2", SeAttenV2Config),
        ("dpa2", DPA2Config),
        ("dpa3", DPA3Config),
    ],
)
def test_descriptor_schema_derives_from_its_config(name, config):
    assert DESCRIPTORS.get(name).ARGS == config.args()


def test_nested_sections_derive_from_their_configs():
    args = {a.name: a for a in DPA2Config.args()}
    assert args["repinit"].sub == RepinitConfig.args()
    assert args["repformer"].sub == RepformerConfig.args()
    assert {a.name: a for a in DPA3Config.args()}["repflow"].sub == RepflowConfig.args()


def test_direct_construction_uses_the_config_defaults():
    desc = DESCRIPTORS.get("se_e2_a")(2, [4, 4])
    assert desc.rcut == SeAConfig(sel=[4, 4]).rcut
    assert desc.neuron == SeAConfig(sel=[4, 4]).neuron
    assert not DESCRIPTORS.get("se_atten_v2")(2, 8).set_davg_zero  # its own default
