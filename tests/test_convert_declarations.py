"""The components' declarations (:mod:`lamkit.nn.params`) cover every tensor of every model kind.

For each descriptor (se_e2_a, se_e2_r, se_e3, se_e3_tebd, dpa1, dpa2, dpa3, hybrid), fitting
(energy, property, dipole, polar, dos), the ZBL and linear models and a spin model: each
parameter/buffer is named by exactly one component's ``REF_NAMES`` (both ways), the type-indexed
tensors are those the components declare in ``TYPE_ROWS``, and a model written as a DeePMD-kit
checkpoint reads back bit for bit (and writes the same checkpoint again).
"""

from __future__ import annotations

import copy

import pytest
import torch

from lamkit.model import build_model
from lamkit.nn.params import RefNames, TypeRows, components, reference_layout, type_rows
from lamkit.testing.models import randomize_statistics

from .conftest import require_reference
from .zbl_models import linear_model, zbl_model

pytestmark = pytest.mark.usefixtures("one_thread")

TYPE_MAP = ["O", "H"]
SE_A = {"type": "se_e2_a", "sel": [8, 16], "rcut": 4.0, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 2, "seed": 1}
SE_R = {"type": "se_e2_r", "sel": [8, 16], "rcut": 4.0, "rcut_smth": 0.5, "neuron": [4, 8],
        "resnet_dt": True, "seed": 1}
SE_T = {"type": "se_e3", "sel": [8, 16], "rcut": 3.0, "rcut_smth": 0.5, "neuron": [2, 4],
        "seed": 1}
SE_T_TEBD = {"type": "se_e3_tebd", "sel": 10, "rcut": 3.0, "rcut_smth": 0.5, "neuron": [4, 8],
             "tebd_dim": 4, "seed": 1}
DPA1 = {"type": "dpa1", "sel": 20, "rcut": 4.0, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 2, "tebd_dim": 4, "attn": 8, "attn_layer": 1, "seed": 1}
DPA1_STRIP = {**DPA1, "tebd_input_mode": "strip", "use_tebd_bias": True}
DPA2 = {"type": "dpa2", "seed": 1,
        "repinit": {"tebd_dim": 4, "rcut": 4.0, "rcut_smth": 0.5, "nsel": 20, "neuron": [4, 8],
                    "axis_neuron": 2, "use_three_body": True, "three_body_sel": 10,
                    "three_body_rcut": 3.0, "three_body_rcut_smth": 2.5,
                    "three_body_neuron": [2, 4], "tebd_input_mode": "strip"},
        "repformer": {"rcut": 3.0, "rcut_smth": 2.5, "nsel": 10, "nlayers": 2, "g1_dim": 8,
                      "g2_dim": 4, "attn2_hidden": 4, "attn2_nhead": 2, "attn1_hidden": 4,
                      "attn1_nhead": 2, "axis_neuron": 2, "update_g1_has_attn": True,
                      "update_g2_has_g1g1": True, "update_g2_has_attn": True,
                      "update_h2": True}}
DPA3 = {"type": "dpa3", "seed": 1, "repflow": {
    "n_dim": 8, "e_dim": 6, "a_dim": 4, "nlayers": 2, "e_rcut": 4.0, "e_rcut_smth": 3.0,
    "e_sel": 20, "a_rcut": 3.0, "a_rcut_smth": 2.0, "a_sel": 10, "axis_neuron": 2}}
HYBRID = {"type": "hybrid", "list": [SE_A, SE_R, DPA1, DPA3]}
FIT = {"neuron": [8, 8], "seed": 2}
# name -> (descriptor, fitting, extra model keys)
CASES = {
    "se_e2_a": (SE_A, {**FIT, "numb_fparam": 1, "numb_aparam": 1}, {}),
    "se_e2_r": (SE_R, FIT, {}),
    "se_e3": (SE_T, FIT, {}),
    "se_e3_tebd": (SE_T_TEBD, FIT, {}),
    "dpa1": (DPA1, FIT, {}),
    "dpa1-strip": (DPA1_STRIP, {**FIT, "dim_case_embd": 2}, {}),
    "dpa2": (DPA2, FIT, {}),
    "dpa3": (DPA3, FIT, {}),
    "hybrid": (HYBRID, FIT, {}),
    "property": (DPA1, {**FIT, "type": "property", "property_name": "band", "task_dim": 3},
                 {}),
    "dipole": (SE_A, {**FIT, "type": "dipole"}, {}),
    "polar": (SE_A, {**FIT, "type": "polar"}, {}),
    "dos": (SE_A, {**FIT, "type": "dos", "numb_dos": 5}, {}),
    "spin": (DPA1, FIT, {"spin": {"use_spin": [True, False], "virtual_scale": [0.3]}}),
}
# the type-indexed tensors by name (what DeePMD-kit's change_type_map touches)
TYPE_INDEXED = ("davg", "dstd", "out_bias", "out_std", "bias_atom",
                "type_embedding.net.layers.0.matrix")


def _model(name: str) -> torch.nn.Module:
    if name == "zbl":
        return zbl_model()
    if name == "linear":
        return linear_model()
    desc, fit, extra = CASES[name]
    conf = {"type_map": TYPE_MAP, "descriptor": copy.deepcopy(desc),
            "fitting_net": copy.deepcopy(fit), **copy.deepcopy(extra)}
    model = randomize_statistics(build_model(conf), seed=4)
    with torch.no_grad():  # non-trivial values in every buffer the statistics leave alone
        for key, buf in model.named_buffers():
            if key.endswith(("_avg", "_inv_std", "case_embd")) and buf.numel():
                buf.copy_(torch.rand_like(buf) + 0.5)
    return model


NAMES = [*CASES, "zbl", "linear"]


@pytest.mark.parametrize("name", NAMES)
def test_every_tensor_has_exactly_one_declaration(name):
    model = _model(name)
    comps = components(model)
    layout = reference_layout(model)
    assert layout.uncovered == []
    state = model.state_dict()
    assert set(layout.to_ref) == set(state)
    assert len(set(layout.to_ref.values())) == len(state), "two tensors share a reference name"
    for key in state:
        claims = []
        for c in comps:
            rest = key if not c.own else key[len(c.own) + 1 :]
            if (not c.own or key.startswith(c.own + ".")) and c.names.to_ref(rest) is not None:
                claims.append(c.own)
                # the declaration maps the name back
                assert c.names.to_own(c.names.to_ref(rest)) == rest, key
        assert len(claims) == 1, (key, claims)
    for ref in layout.to_ref.values():
        assert not layout.ignored(ref), ref


@pytest.mark.parametrize("name", NAMES)
def test_type_rows_are_declared(name):
    model = _model(name)
    rows = type_rows(model)
    state = model.state_dict()
    want = {k for k in state if k.split(".")[-1].endswith(TYPE_INDEXED[:5])
            or k.endswith(TYPE_INDEXED[5])}
    assert set(rows) == want
    ntypes = len(getattr(model, "backbone_type_map", model.type_map))
    for key, decl in rows.items():
        assert state[key].shape[decl.axis] == ntypes, key
        fresh = key.split(".")[-1] in ("dstd", "out_std") or key.endswith(TYPE_INDEXED[5])
        assert decl.init == ("fresh" if fresh else "zero"), key


def test_declaration_helpers():
    names = RefNames(names=(("a.*.w", "x.*.matrix"), ("b.**", "y.**")), ignore=("z.*",),
                     children=(("sub", "deep.sub"),), bare=("raw",))
    assert names.to_ref("a.3.w") == "x.3.matrix" and names.to_own("x.3.matrix") == "a.3.w"
    assert names.to_ref("b.c.d") == "y.c.d" and names.to_ref("a.3.v") is None
    assert names.ignores("z.0") and not names.ignores("z.0.1")
    assert names.place("sub") == ("deep.sub", False) and names.place("raw") == ("raw", True)
    with pytest.raises(ValueError):
        RefNames(names=(("a.*", "b.**"),))
    with pytest.raises(ValueError):
        TypeRows("davg", "one")


@pytest.mark.reference
@pytest.mark.parametrize("name", NAMES)
def test_deepmd_checkpoint_round_trip(name):
    """lamkit -> DeePMD-kit -> lamkit is exact, and writing again gives the same checkpoint."""
    require_reference()
    from lamkit.interop.deepmd import load_deepmd_checkpoint
    from lamkit.interop.to_deepmd import deepmd_checkpoint

    model = _model(name)
    written = deepmd_checkpoint({"Default": model}, False)
    back = load_deepmd_checkpoint(written)
    want, got = model.state_dict(), back.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    again = deepmd_checkpoint({"Default": back}, False)["model"]
    first = written["model"]
    assert set(again) == set(first)
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(again[key], value), key
