"""Batched relaxation of a DeePMD-kit v3 checkpoint equals the reference's own ASE loop.

The reference trains a small two-task DPA-2 water model for a few steps; its checkpoint is
then relaxed two ways, 12 FIRE + FrechetCellFilter steps each: by ``lamkit.relax`` (batched,
the chosen head) and by ASE's optimizer driving the reference's ``deepmd.calculator.DP`` (in a
subprocess, so the reference's import side effects stay out of this process). Positions,
cells and energies after the same steps must agree: the whole path (checkpoint reading, head
choice, batched evaluation, the cell filter and FIRE) against the tool users run today.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms

from lamkit.relax import relax

from .conftest import require_reference
from .reference_finetune import make_reference_multitask, reference_env

pytestmark = [pytest.mark.reference, pytest.mark.usefixtures("one_thread")]

STEPS = 12
HEAD = "water_b"

# the reference side: ASE's FIRE on FrechetCellFilter with deepmd.calculator.DP
REFERENCE_LOOP = """
import json, sys
import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from deepmd.calculator import DP

spec = json.load(open(sys.argv[1]))
out = []
for s in spec["structures"]:
    atoms = Atoms(s["symbols"], positions=s["positions"], cell=s["cell"], pbc=True)
    atoms.calc = DP(spec["model"], head=spec["head"])
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    opt.run(fmax=1e-12, steps=spec["steps"])
    out.append({"positions": atoms.get_positions().tolist(), "cell": atoms.cell.array.tolist(),
                "energy": float(atoms.get_potential_energy()), "steps": opt.nsteps})
json.dump(out, open(sys.argv[2], "w"))
"""


def water_structures() -> list[Atoms]:
    """Two small periodic water cells of different sizes, one triclinic (O, H)."""
    rng = np.random.default_rng(7)
    out = []
    for nmol, cell in (
        (4, np.diag([4.6, 4.4, 4.5])),
        (6, [[5.2, 0.0, 0.0], [0.6, 5.0, 0.0], [0.3, -0.4, 5.1]]),
    ):
        cell = np.asarray(cell, dtype=float)
        positions, symbols = [], []
        grid = [(i, j, k) for i in range(2) for j in range(2) for k in range(2)][:nmol]
        for i, j, k in grid:
            o = (np.array([i, j, k]) + 0.25 + 0.1 * rng.random(3)) @ cell / 2
            positions += [o, o + [0.96, 0.0, 0.05], o + [-0.24, 0.93, -0.03]]
            symbols += ["O", "H", "H"]
        out.append(Atoms(symbols, positions=positions, cell=cell, pbc=True))
    return out


def test_relax_checkpoint_equals_reference_ase_loop(tmp_path):
    require_reference()
    ckpt = make_reference_multitask(tmp_path / "ref", steps=2, nframes=4)
    structures = water_structures()
    spec = {
        "model": str(ckpt),
        "head": HEAD,
        "steps": STEPS,
        "structures": [
            {
                "symbols": a.get_chemical_symbols(),
                "positions": a.positions.tolist(),
                "cell": a.cell.array.tolist(),
            }
            for a in structures
        ],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "loop.py").write_text(REFERENCE_LOOP)
    proc = subprocess.run(
        [sys.executable, "loop.py", "spec.json", "ref.json"],
        cwd=tmp_path,
        env=reference_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads((tmp_path / "ref.json").read_text())

    got = relax(structures, ckpt, head=HEAD, fmax=1e-12, steps=STEPS, max_atoms=20)
    for k, (r, e) in enumerate(zip(got, expected)):
        assert r.steps == e["steps"] == STEPS, k
        # energies differ between steps by ~0.1 eV: 1e-8 eV would catch any missed step
        assert abs(r.energy - e["energy"]) < 1e-8 * max(1.0, abs(e["energy"])), k
        np.testing.assert_allclose(r.atoms.cell.array, e["cell"], atol=1e-8, rtol=0)
        np.testing.assert_allclose(r.atoms.positions, e["positions"], atol=1e-8, rtol=0)
    # the batch (max_atoms 20 < 30 atoms in all) ran in flight, and the head mattered
    other = relax(structures[:1], ckpt, head="water_a", fmax=1e-12, steps=0)[0]
    first = relax(structures[:1], ckpt, head=HEAD, fmax=1e-12, steps=0)[0]
    assert abs(other.energy - first.energy) > 1e-6
