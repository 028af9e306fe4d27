"""Shared helpers of the screening tests (no tests here): a small EMT crystal database, a
mixed candidate set whose answers are known, and calculators that fail on purpose.

The database holds fcc Cu, fcc Au and L1_2 CuAu3, each relaxed with lamkit.relax and EMT at
the screening's default settings, so the same input screened again gives the same energy
(e_above_hull exactly 0, matched by the novelty check).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT


def l12(a: float, major: str, minor: str) -> Atoms:
    """L1_2 (Cu3Au type) cubic cell: ``minor`` at the corner, ``major`` on the face centres."""
    atoms = bulk(major, "fcc", a=a, cubic=True)
    atoms.symbols[0] = minor
    return atoms


def l10(a: float) -> Atoms:
    """L1_0 CuAu: alternating (001) planes of Cu and Au in the cubic fcc cell."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.symbols[[0, 1]] = "Au"
    return atoms


def reference_structures() -> list[Atoms]:
    """The database's structures (before relaxation)."""
    return [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.1), l12(4.0, "Au", "Cu")]


def build_db(path_or_db) -> tuple:
    """A CrystalDB (an SQLite file at a path, or the empty database given) holding the
    EMT-relaxed references (model "emt"); returns (db, record ids in
    :func:`reference_structures` order)."""
    from lamkit.db import CrystalDB
    from lamkit.relax import relax

    db = path_or_db
    if not isinstance(db, CrystalDB):
        db = CrystalDB(str(path_or_db)).init()
    results = relax(reference_structures(), EMT())
    ids = [
        db.add(r.atoms, energy=r.energy, model="emt", source=f"ref{k}").id
        for k, r in enumerate(results)
    ]
    return db, ids


def candidates() -> list[Atoms]:
    """20 candidates with known fates (see :data:`EXPECTED`)."""
    rng = np.random.default_rng(7)
    shifted = l12(3.75, "Cu", "Au")
    shifted.positions += [0.3, 0.2, 0.1]
    rattled_cu = bulk("Cu", "fcc", a=3.55)
    rattled_cu.positions += rng.normal(0, 0.02, (1, 3))
    cuau3 = l12(4.0, "Au", "Cu")
    cuau3.rattle(0.01, seed=3)
    overlapping = bulk("Cu", "fcc", a=3.6, cubic=True)
    overlapping.positions[1] = overlapping.positions[0] + [0.2, 0.0, 0.0]
    nan = bulk("Cu", "fcc", a=3.6)
    nan.positions[0, 0] = np.nan
    return [
        bulk("Cu", "fcc", a=3.6),  # 0 = a database record: e_hull 0, not novel
        bulk("Au", "fcc", a=4.1),  # 1 = a database record
        l12(4.0, "Au", "Cu"),  # 2 = the database's CuAu3
        l12(3.75, "Cu", "Au"),  # 3 Cu3Au: new, below the Cu-CuAu3 hull
        l12(3.75, "Cu", "Au").repeat((1, 1, 2)),  # 4 duplicate of 3 (supercell)
        shifted,  # 5 duplicate of 3 (translated)
        l10(3.9),  # 6 CuAu L1_0: new
        bulk("Cu", "bcc", a=2.87),  # 7 bcc Cu: above the hull
        bulk("Au", "bcc", a=3.25),  # 8
        bulk("Cu", "hcp", a=2.55),  # 9
        rattled_cu,  # 10 duplicate of 0
        Atoms(
            "Cu2Au",
            scaled_positions=[[0, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]],
            cell=np.diag([3.7, 3.7, 3.7]),
            pbc=True,
        ),  # 11: fails (FlakyEMT)
        nan,  # 12 rejected: NaN coordinates
        overlapping,  # 13 rejected: atoms too close
        bulk("Pt", "fcc", a=3.9),  # 14 rejected: no Pt reference in the database
        Atoms("Cu", cell=np.diag([10.0, 10.0, 10.0]), pbc=True),  # 15 rejected: volume/atom
        Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]),  # 16 rejected: not periodic
        Atoms(
            "CuAu",
            scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]],
            cell=np.diag([3.1, 3.1, 3.1]),
            pbc=True,
        ),  # 17 B2 CuAu: new
        cuau3,  # 18 duplicate of 2, not novel
        bulk("Cu", "fcc", a=3.6, cubic=True),  # 19 duplicate of 0
    ]


#: index -> (status, reason fragment) of the candidates that are not relaxed normally.
EXPECTED_NOT_OK = {
    11: ("failed", "non-finite"),
    12: ("rejected", "NaN"),
    13: ("rejected", "too close"),
    14: ("rejected", "elemental reference"),
    15: ("rejected", "volume per atom"),
    16: ("rejected", "not periodic"),
}
#: index -> the earlier index it duplicates.
EXPECTED_DUPLICATES = {4: 3, 5: 3, 10: 0, 18: 2, 19: 0}


class FlakyEMT(EMT):
    """EMT that returns a NaN energy for structures of exactly three atoms (an explosion)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        kwargs = {} if system_changes is None else {"system_changes": system_changes}
        super().calculate(atoms, properties, **kwargs)
        if len(self.atoms) == 3:
            self.results["energy"] = float("nan")
            self.results["free_energy"] = float("nan")


SLOW_CALCULATOR = """
import time

from ase.calculators.emt import EMT


class SlowEMT(EMT):
    \"\"\"EMT that sleeps 10 ms per evaluation (gives a test time to kill a screening).\"\"\"

    def calculate(self, *args, **kwargs):
        time.sleep(0.01)
        super().calculate(*args, **kwargs)
"""


def write_slow_calculator(folder) -> None:
    """Write the module ``slowcalc`` (class SlowEMT) into ``folder`` (put it on PYTHONPATH)."""
    (folder / "slowcalc.py").write_text(SLOW_CALCULATOR)


def varied(n: int, seed: int = 0) -> list[Atoms]:
    """``n`` small Cu-Au cells (1-8 atoms) with random lattice constants and rattles."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        kind = k % 4
        a = float(rng.uniform(3.5, 4.1))
        if kind == 0:
            atoms = bulk("Cu", "fcc", a=a, cubic=True)
        elif kind == 1:
            atoms = l12(a, "Cu", "Au")
        elif kind == 2:
            atoms = l10(a)
        else:
            atoms = bulk("Au", "fcc", a=a).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    return out


class KillerEMT(EMT):
    """EMT that ends its process on structures of exactly three atoms (a crashing worker);
    only for Dask workers."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        import os

        if atoms is not None and len(atoms) == 3:
            os._exit(13)
        kwargs = {} if system_changes is None else {"system_changes": system_changes}
        super().calculate(atoms, properties, **kwargs)


def tiny_model_file(path) -> str:
    """A small random se_e2_a lamkit model for Cu and Au saved at ``path`` (a stand-in for a
    trained model: its energies are arbitrary but smooth)."""
    import torch

    from lamkit.model import build_model
    from lamkit.model.io import save_model
    from lamkit.testing import randomize_statistics

    model = build_model(
        {
            "type_map": ["Cu", "Au"],
            "descriptor": {
                "type": "se_e2_a",
                "sel": [30, 30],
                "rcut": 4.0,
                "rcut_smth": 1.0,
                "neuron": [4, 8],
                "axis_neuron": 4,
                "seed": 1,
            },
            "fitting_net": {"neuron": [8, 8], "seed": 1},
        }
    )
    randomize_statistics(model, 1)
    with torch.no_grad():
        model.out_bias.copy_(torch.tensor([[-3.5], [-3.8]], dtype=torch.float64))
    save_model(model.eval(), path)
    return str(path)
