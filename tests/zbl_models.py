"""Small DP + pair-table models for the ZBL / linear_ener tests (not a test module); the tables
are the reference's water pair table and D3 table in ../shared/data/tables."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from lamkit.model import build_model
from lamkit.testing.models import randomize_statistics

TABLE = Path("/work/shared/data/tables/H2O_tab_potential.txt")
D3 = Path("/work/shared/data/tables/dftd3.txt")
RCUT = 4.0


def zbl_model(**kw) -> torch.nn.Module:
    """A small O/H DPA-1 + water pair table model (``use_srtab``, switching 0.8-1.2 Å) with
    random statistics and non-zero table, combination and DP biases; ``kw`` overrides keys."""
    conf = {
        "type_map": ["O", "H"],
        "use_srtab": str(TABLE),
        "smin_alpha": 0.1,
        "sw_rmin": 0.8,
        "sw_rmax": 1.2,
        "descriptor": {
            "type": "dpa1",
            "sel": 60,
            "rcut": RCUT,
            "rcut_smth": 0.5,
            "neuron": [4, 8],
            "axis_neuron": 4,
            "attn": 8,
            "attn_layer": 1,
            "precision": "float64",
            "seed": 1,
        },
        "fitting_net": {"neuron": [8], "precision": "float64", "seed": 1},
    }
    conf.update(kw)
    model = randomize_statistics(build_model(conf), seed=1)
    with torch.no_grad():
        model.tab_out_bias.copy_(torch.tensor([[0.2], [-0.1]], dtype=torch.float64))
        model.out_bias.copy_(torch.tensor([[0.05], [0.3]], dtype=torch.float64))
        model.dp_out_bias.copy_(torch.tensor([[-0.4], [0.7]], dtype=torch.float64))
    return model


def linear_model(weights="sum", rcut_tab: float = 7.0, second_dp: bool = False):
    """A ``linear_ener`` model: small O/H se_atten + the D3 pair table (``rcut_tab``) (+ a
    second se_atten model after the table), random statistics and non-zero biases at every
    level."""
    conf = {
        "type": "linear_ener",
        "weights": weights,
        "type_map": ["O", "H"],
        "models": [
            {
                "descriptor": {
                    "type": "se_atten",
                    "sel": 40,
                    "rcut": 3.0,
                    "rcut_smth": 0.5,
                    "neuron": [4, 8],
                    "axis_neuron": 4,
                    "attn": 8,
                    "attn_layer": 1,
                    "precision": "float64",
                    "seed": 1,
                },
                "fitting_net": {"neuron": [8], "precision": "float64", "seed": 1},
            },
            {"type": "pairtab", "tab_file": str(D3), "rcut": rcut_tab, "sel": 80},
        ],
    }
    if second_dp:
        dp2 = copy.deepcopy(conf["models"][0])
        dp2["descriptor"].update(rcut=2.5, seed=7, attn_layer=0)
        conf["models"].append(dp2)
        conf["weights"] = [0.5, 1.0, 0.8]
    model = randomize_statistics(build_model(conf), seed=2)
    with torch.no_grad():
        for member in model.dp_models:
            member.out_bias.copy_(torch.tensor([[0.05], [-0.3]], dtype=torch.float64))
        model.pair_tables[0].out_bias.copy_(torch.tensor([[0.1], [-0.2]], dtype=torch.float64))
        model.out_bias.copy_(torch.tensor([[0.3], [0.02]], dtype=torch.float64))
        model.dp_out_bias.copy_(torch.tensor([[-0.4], [0.7]], dtype=torch.float64))
    return model
