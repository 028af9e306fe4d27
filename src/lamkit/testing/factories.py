"""Tiny O/H energy models of every descriptor kind, for tests.

Each factory builds a small float64 (by default) model with seeded weights and non-trivial
normalisation statistics and output bias (:func:`randomize_statistics`), cheap enough for
finite-difference physics checks. The cutoff is :data:`RCUT` (4 Å) unless stated; use it to
build test systems (``standard_system(kind, 2, RCUT)``).

    from lamkit.testing.factories import make_dpa1, make_dpa2, make_se_e2_a, make_se_e3_tebd
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..descriptor.dpa2 import DescrptDPA2
from ..fitting.energy import EnergyFitting
from ..model import build_model
from ..model.energy_model import EnergyModel
from .models import randomize_statistics

RCUT = 4.0  # Å, the cutoff of the se_e2_a, DPA-1 and se_e3_tebd factories
TYPE_MAP = ["O", "H"]


def _zero_davg(model: torch.nn.Module) -> torch.nn.Module:
    """Zero every ``davg`` buffer, as after training with ``set_davg_zero``: empty neighbour
    slots are then zero rows (with davg != 0 they would carry the type of extended atom 0, the
    reference's convention, which is not local)."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("davg"):
                buf.zero_()
    return model


def make_se_e2_a(
    type_one_side: bool = True,
    precision: str = "float64",
    rcut_smth: float = 0.5,
    sel: Sequence[int] = (24, 48),
    seed: int = 1,
) -> torch.nn.Module:
    """A small O/H se_e2_a model (embedding [8, 16], axis 4, fitting [32, 32])."""
    model = build_model(
        {
            "type_map": TYPE_MAP,
            "descriptor": {
                "type": "se_e2_a",
                "sel": list(sel),
                "rcut": RCUT,
                "rcut_smth": rcut_smth,
                "neuron": [8, 16],
                "axis_neuron": 4,
                "type_one_side": type_one_side,
                "seed": seed,
                "precision": precision,
            },
            "fitting_net": {"neuron": [32, 32], "seed": seed, "precision": precision},
        }
    )
    return randomize_statistics(model, seed)


def make_dpa1(precision: str = "float64", seed: int = 1, **desc: Any) -> torch.nn.Module:
    """A small O/H DPA-1 model (sel 72, 2 attention layers of width 8 unless ``desc`` says
    otherwise); ``davg`` is zeroed when the descriptor has ``set_davg_zero``."""
    conf = {
        "type": "dpa1",
        "sel": 72,
        "rcut": RCUT,
        "rcut_smth": 0.5,
        "neuron": [6, 12],
        "axis_neuron": 3,
        "tebd_dim": 4,
        "attn": 8,
        "attn_layer": 2,
        "seed": seed,
        "precision": precision,
        **desc,
    }
    model = build_model(
        {
            "type_map": TYPE_MAP,
            "descriptor": conf,
            "fitting_net": {"neuron": [16, 16], "seed": seed, "precision": precision},
        }
    )
    randomize_statistics(model, seed)
    if model.descriptor.set_davg_zero:
        _zero_davg(model.descriptor)
    return model


def make_se_e3_tebd(
    mode: str = "concat", precision: str = "float64", seed: int = 1, **extra: Any
) -> torch.nn.Module:
    """A small O/H se_e3_tebd model; ``mode`` is its ``tebd_input_mode`` (concat or strip)."""
    desc = {
        "type": "se_e3_tebd",
        "sel": 56,
        "rcut": RCUT,
        "rcut_smth": 0.5,
        "neuron": [4, 8],
        "tebd_dim": 4,
        "tebd_input_mode": mode,
        "seed": seed,
        "precision": precision,
        **extra,
    }
    model = build_model(
        {
            "type_map": TYPE_MAP,
            "descriptor": desc,
            "fitting_net": {"neuron": [16, 16], "seed": seed, "precision": precision},
        }
    )
    return randomize_statistics(model, seed)


# the DPA-2 "small" preset of the reference's water example (repinit rcut 6 Å, repformer 4 Å)
DPA2_SMALL_REPINIT: dict[str, Any] = dict(
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
DPA2_SMALL_REPFORMER: dict[str, Any] = dict(
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

_ALL_UPDATES = dict(
    update_g1_has_attn=True, update_g2_has_g1g1=True, update_g2_has_attn=True, update_h2=True
)
# name -> keyword arguments of make_dpa2: the repformer updates and modes worth checking
DPA2_VARIANTS: dict[str, dict[str, Any]] = {
    "small": {},
    "all-updates": _ALL_UPDATES,
    "mlp-in-conv-res-avg": dict(
        update_g1_has_attn=True,
        g1_out_conv=False,
        g1_out_mlp=False,
        update_style="res_avg",
        use_sqrt_nnei=False,
    ),
    "strip-exclude-OH": dict(tebd_input_mode="strip", exclude_types=[[0, 1]]),
    # eval mode: the inference path (fused attention-weight backward, SmoothAttentionWeights),
    # with attention weights that matter (0.5 is beyond the finite-difference step's reach)
    "all-updates-eval": dict(_ALL_UPDATES, update_residual=0.2),
}


def make_dpa2_descriptor(
    precision: str = "float64",
    seed: int = 3,
    smooth: bool = True,
    exclude_types: Sequence[Sequence[int]] = (),
    tebd_input_mode: str = "concat",
    **repformer: Any,
) -> DescrptDPA2:
    """The small preset shrunk to a few thousand parameters (repinit rcut 6 Å / nsel 80,
    three-body and repformer 4 Å / nsel 40, 3 repformer layers); ``repformer`` overrides
    repformer keys."""
    rf = dict(DPA2_SMALL_REPFORMER)
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
    ri = dict(DPA2_SMALL_REPINIT)
    ri.update(
        nsel=80,
        neuron=[6, 10],
        axis_neuron=4,
        three_body_sel=40,
        three_body_neuron=[2, 4],
        tebd_dim=4,
        tebd_input_mode=tebd_input_mode,
    )
    return DescrptDPA2(
        2, ri, rf, precision=precision, seed=seed, smooth=smooth, exclude_types=exclude_types
    )


def make_dpa2(precision: str = "float64", seed: int = 3, **kw: Any) -> torch.nn.Module:
    """A tiny O/H DPA-2 energy model (:func:`make_dpa2_descriptor` + fitting [8, 8]) with
    ``davg`` zero, as with DPA-2's default ``set_davg_zero``."""
    desc = make_dpa2_descriptor(precision, seed, **kw)
    fit = EnergyFitting(2, desc.dim_out, True, neuron=[8, 8], precision=precision, seed=seed)
    return _zero_davg(randomize_statistics(EnergyModel(desc, fit, TYPE_MAP), seed))
