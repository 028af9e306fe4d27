"""Tiny Cu/Au/Ni/Al energy models (se_e2_a, DPA-1, DPA-2; cutoff 4.5 Å, cohesive-looking
per-type biases) and small random crystals of 1-64 atoms in triclinic cells, for tests of
batched evaluation, relaxation and property workflows.

    from lamkit.testing.alloys import make_se_e2_a, mixed_structures
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms

from ..model import build_model
from .models import randomize_statistics

TYPE_MAP = ["Cu", "Au", "Ni", "Al"]


def _build(descriptor: dict, seed: int = 1) -> torch.nn.Module:
    model = build_model(
        {
            "type_map": TYPE_MAP,
            "descriptor": {"seed": seed, **descriptor},
            "fitting_net": {"neuron": [12, 12], "seed": seed},
        }
    )
    randomize_statistics(model, seed)
    with torch.no_grad():  # cohesive-looking per-type energies
        model.out_bias.copy_(torch.tensor([[-3.5], [-3.8], [-4.4], [-3.4]], dtype=torch.float64))
        if getattr(model.descriptor, "set_davg_zero", False):
            model.descriptor.davg.zero_()
    return model.eval()


def make_se_e2_a() -> torch.nn.Module:
    """se_e2_a, sel 24 per type, embedding [6, 12]."""
    desc = {
        "type": "se_e2_a",
        "sel": [24, 24, 24, 24],
        "rcut": 4.5,
        "rcut_smth": 1.0,
        "neuron": [6, 12],
        "axis_neuron": 4,
    }
    return _build(desc)


def make_dpa1() -> torch.nn.Module:
    """DPA-1, sel 60, one attention layer."""
    desc = {
        "type": "dpa1",
        "sel": 60,
        "rcut": 4.5,
        "rcut_smth": 1.0,
        "neuron": [6, 12],
        "axis_neuron": 3,
        "tebd_dim": 4,
        "attn": 8,
        "attn_layer": 1,
    }
    return _build(desc)


def make_dpa2() -> torch.nn.Module:
    """DPA-2 with three-body repinit and 2 repformer layers (attention updates on)."""
    repinit = {
        "tebd_dim": 4,
        "rcut": 4.5,
        "rcut_smth": 1.0,
        "nsel": 60,
        "neuron": [6, 10],
        "axis_neuron": 4,
        "use_three_body": True,
        "three_body_sel": 30,
        "three_body_rcut": 3.5,
        "three_body_rcut_smth": 3.0,
        "three_body_neuron": [2, 4],
    }
    repformer = {
        "rcut": 3.5,
        "rcut_smth": 3.0,
        "nsel": 30,
        "nlayers": 2,
        "g1_dim": 12,
        "g2_dim": 6,
        "attn1_hidden": 5,
        "attn1_nhead": 2,
        "attn2_hidden": 4,
        "attn2_nhead": 2,
        "axis_neuron": 3,
        "update_g1_has_attn": True,
        "update_g2_has_attn": True,
    }
    return _build({"type": "dpa2", "repinit": repinit, "repformer": repformer})


def random_crystal(n: int, rng: np.random.Generator, elements=("Cu", "Au"), pbc=True) -> Atoms:
    """``n`` atoms on random sites of a jittered k x k x k grid (spacing ~2.6 Å, so atoms stay
    more than ~1.9 Å apart, images included) in a sheared, triclinic cell."""
    k = int(np.ceil(n ** (1 / 3) - 1e-9))
    cell = 2.6 * k * (np.eye(3) + rng.uniform(-0.08, 0.08, size=(3, 3)))
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[rng.choice(len(grid), size=n, replace=False)]
    frac = (sites + 0.5 + rng.uniform(-0.06, 0.06, size=(n, 3))) / k
    atoms = Atoms(rng.choice(elements, size=n), scaled_positions=frac, cell=cell, pbc=pbc)
    # a position outside the cell exercises the shifts
    atoms.positions[0] += cell[0] - cell[2]
    return atoms


def mixed_structures(seed: int = 0) -> list[Atoms]:
    """Eight structures of 1-64 atoms and 1-4 of the elements; the fourth a 6-atom cluster."""
    rng = np.random.default_rng(seed)
    chems = [("Cu",), ("Cu", "Au"), ("Ni", "Al"), ("Cu", "Ni", "Au", "Al")]
    sizes = [1, 2, 5, 13, 64, 8, 27]
    out = [random_crystal(n, rng, chems[k % len(chems)]) for k, n in enumerate(sizes)]
    cluster = random_crystal(6, rng, ("Au", "Ni"), pbc=False)
    out.insert(3, cluster)
    return out
