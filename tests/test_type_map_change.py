"""``lamkit.model.type_map.change_type_map``: new elements, reordering and subsets keep the
predictions of the old elements exactly; new rows get defaults; per-type-network models refuse
with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamkit.errors import ConfigError
from lamkit.model import build_model
from lamkit.model.type_map import change_type_map
from lamkit.testing import randomize_statistics, standard_system
from lamkit.testing.physics import predict

pytestmark = pytest.mark.usefixtures("one_thread")

DESCRIPTORS = {
    "dpa1": {
        "type": "dpa1",
        "sel": 30,
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "axis_neuron": 4,
        "attn": 8,
        "attn_layer": 1,
        "tebd_dim": 5,
        "seed": 1,
    },
    "se_e3_tebd": {
        "type": "se_e3_tebd",
        "sel": 20,
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [2, 4],
        "tebd_dim": 5,
        "seed": 1,
    },
    "dpa2": {
        "type": "dpa2",
        "repinit": {
            "tebd_dim": 5,
            "rcut": 4.0,
            "rcut_smth": 0.5,
            "nsel": 30,
            "neuron": [4, 8],
            "axis_neuron": 4,
            "use_three_body": True,
            "three_body_sel": 20,
            "three_body_rcut": 3.0,
            "three_body_rcut_smth": 2.5,
            "three_body_neuron": [2, 4],
        },
        "repformer": {
            "rcut": 3.0,
            "rcut_smth": 2.5,
            "nsel": 20,
            "nlayers": 2,
            "g1_dim": 8,
            "g2_dim": 4,
            "attn2_hidden": 4,
            "attn2_nhead": 2,
            "attn1_hidden": 4,
            "attn1_nhead": 2,
            "axis_neuron": 2,
            "update_g2_has_attn": True,
        },
        "seed": 1,
    },
}


def make(descriptor: str, type_map=("O", "H"), **desc):
    conf = {
        "type_map": list(type_map),
        "descriptor": {**DESCRIPTORS[descriptor], **desc},
        "fitting_net": {"neuron": [8], "seed": 1},
    }
    return randomize_statistics(build_model(conf), seed=3)


def _system(model, types):
    """A periodic cluster of the given element names, typed in ``model``'s type map."""
    sys_ = standard_system("cubic", 2, model.descriptor.rcut, seed=5)
    names = np.array(types)[np.arange(sys_.nloc) % len(types)]
    atype = np.array([model.type_map.index(n) for n in names])
    return sys_.copy(atype=atype), names


@pytest.mark.parametrize("descriptor", list(DESCRIPTORS))
def test_new_element_keeps_old_predictions(descriptor):
    old = make(descriptor)
    new = change_type_map(old, ["H", "Cu", "O"])  # reordered, with a new element
    assert new.type_map == ["H", "Cu", "O"] and old.type_map == ["O", "H"]
    sys_old, names = _system(old, ["O", "H"])
    sys_new = sys_old.copy(atype=np.array([new.type_map.index(n) for n in names]))
    a, b = predict(old, sys_old), predict(new, sys_new)
    for k in ("energy", "force", "virial", "atom_energy"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)
    # the new element's rows: statistics and bias at their defaults, a fresh embedding row
    sd_new, sd_old = new.state_dict(), old.state_dict()
    for key, value in sd_new.items():
        if key.endswith("dstd"):
            assert torch.all(value[1] == 1.0)
        if key.endswith(("davg", "out_bias")):
            assert torch.all(value[1] == 0.0)
        if key.endswith("type_embedding.net.layers.0.matrix"):
            torch.testing.assert_close(value[[0, 2]], sd_old[key][[1, 0]], rtol=0, atol=0)
            assert value[1].abs().sum() > 0
    # and a structure with the new element gives finite, different numbers
    sys_cu = sys_new.copy(atype=np.where(np.arange(sys_new.nloc) % 3 == 0, 1, sys_new.atype))
    out = predict(new, sys_cu)
    assert np.isfinite(out["force"]).all() and out["energy"] != pytest.approx(b["energy"])


def test_subset_and_exclusions_follow():
    conf = {
        "type_map": ["O", "H", "C"],
        "descriptor": {**DESCRIPTORS["dpa1"], "exclude_types": [[0, 2], [1, 2]]},
        "fitting_net": {"neuron": [8], "seed": 1},
        "atom_exclude_types": [2],
    }
    old = randomize_statistics(build_model(conf), seed=3)
    new = change_type_map(old, ["H", "O"])
    assert new.config["descriptor"]["exclude_types"] == []  # both pairs involved C
    assert new.config["atom_exclude_types"] == []
    sys_old, names = _system(old, ["O", "H"])
    sys_new = sys_old.copy(atype=np.array([new.type_map.index(n) for n in names]))
    a, b = predict(old, sys_old), predict(new, sys_new)
    np.testing.assert_allclose(b["force"], a["force"], rtol=1e-12, atol=1e-12)


def test_errors():
    old = make("dpa1")
    with pytest.raises(ConfigError, match="residual connection for 2 types"):
        change_type_map(make("dpa1", tebd_dim=4), ["O", "H", "Cu"])  # 4 = 2 x 2 types
    with pytest.raises(ConfigError, match="appears twice"):
        change_type_map(old, ["O", "O"])
    assert change_type_map(old, ["O", "H"]) is old
    se = build_model(
        {
            "type_map": ["O", "H"],
            "descriptor": {
                "type": "se_e2_a",
                "sel": [10, 20],
                "rcut": 4.0,
                "rcut_smth": 0.5,
                "neuron": [4, 8],
                "axis_neuron": 4,
                "seed": 1,
            },
            "fitting_net": {"neuron": [8], "seed": 1},
        }
    )
    with pytest.raises(ConfigError, match=r"new elements \['Cu'\] needs a descriptor with a type"):
        change_type_map(se, ["O", "H", "Cu"])
