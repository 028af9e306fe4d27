"""``lam quickstart``: the main job in one command, a few minutes on two CPU cores.

1. **Data**: EMT-labelled Cu-Au alloys (:func:`write_alloy_data`): fcc, bcc and hcp supercells
   of random composition (0-100 % Au) and random decoration, at Vegard's-law volumes strained by
   a few per cent and rattled, in deepmd/npy *mixed-type* format (one system per lattice, each
   frame its own composition), plus held-out validation systems drawn the same way.
2. **Training**: a small DPA-1 (``se_atten``: type embedding; no attention layer, which on two
   CPU cores costs several times the step time for no gain in two minutes) on energies, forces
   and virials (:func:`quickstart_input`, a DeePMD-kit v3 ``input.json``), float32.
3. **Test and freeze**: ``lam test`` on the validation systems (detail files and parity plot),
   ``frozen_model.pth``.
4. **Screening**: a few dozen Cu-Au candidates (ordered prototypes on fcc, bcc and hcp lattices,
   and random alloys) relaxed by the frozen model with :func:`lamkit.screen.screen` into a local
   crystal database whose hull the model built from its own relaxed elemental references
   (Cu and Au on fcc, bcc, hcp); energies above the hull in ``screen/results.csv``.

:func:`quickstart` returns the numbers; the CLI prints where each output is.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.writer import write_deepmd_system

log = logging.getLogger("lamkit")
TYPE_MAP = ["Cu", "Au"]
MODEL_NAME = "quickstart-dpa1"
DEFAULT_STEPS = 1000
# fcc lattice constants (Å) of the pure metals under EMT, for Vegard's-law cells
_A_FCC = {"Cu": 3.59, "Au": 4.06}
# training lattices: (name, atoms per cell); each is one mixed-type system
_LATTICES = (("fcc", 32), ("bcc", 16), ("hcp", 16))


# ---------------------------------------------------------------------------------------------
# data


def _cell(lattice: str, x_au: float, small: bool = False):
    """An ase.Atoms of pure Cu on ``lattice`` at the Vegard volume of Cu(1-x)Au(x): 32 atoms
    (fcc) or 16 (bcc, hcp, and fcc when ``small``)."""
    from ase.build import bulk

    a_fcc = (1 - x_au) * _A_FCC["Cu"] + x_au * _A_FCC["Au"]
    vol = a_fcc**3 / 4  # Å^3 per atom, kept for every lattice
    if lattice == "fcc":
        return bulk("Cu", "fcc", a=a_fcc, cubic=True).repeat((2, 2, 1 if small else 2))
    if lattice == "bcc":
        return bulk("Cu", "bcc", a=(2 * vol) ** (1 / 3), cubic=True).repeat((2, 2, 2))
    a = (vol * 4 / (np.sqrt(3) * np.sqrt(8 / 3))) ** (1 / 3)  # ideal c/a
    return bulk("Cu", "hcp", a=a, c=a * np.sqrt(8 / 3)).repeat((2, 2, 2))


def alloy_frames(lattice: str, nframes: int, rng: np.random.Generator) -> dict:
    """``nframes`` EMT-labelled random Cu-Au alloys on ``lattice`` (fcc, bcc or hcp).

    Each frame: a composition x(Au) drawn uniformly in [0, 1], a random decoration, a linear
    strain (-2 % to +7 % isotropic, +-3 % per axis, a little shear), a rattle of 0.01-0.06 Å.
    Returns arrays for :func:`write_deepmd_system` plus ``types`` [nf, natoms] (mixed type)."""
    from ase.calculators.emt import EMT

    coords, boxes, types, energies, forces, virials = [], [], [], [], [], []
    for _ in range(nframes):
        x = float(rng.uniform(0.0, 1.0))
        atoms = _cell(lattice, x)
        t = (rng.random(len(atoms)) < x).astype(np.int64)
        atoms.set_chemical_symbols([TYPE_MAP[k] for k in t])
        # volumes from -15 % to +30 %: relaxations of the candidates visit such cells
        strain = np.diag(1 + rng.uniform(-0.03, 0.03, 3)) * (1 + rng.uniform(-0.02, 0.07))
        strain += rng.normal(0.0, 0.01, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0.0, rng.uniform(0.01, 0.06), atoms.positions.shape)
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        virials.append((-atoms.get_stress(voigt=False) * atoms.get_volume()).reshape(9))
        coords.append(atoms.positions.copy())
        boxes.append(atoms.cell.array.reshape(9))
        types.append(t)
    labels = {"energy": np.array(energies), "force": np.array(forces), "virial": np.array(virials)}
    return {"coords": np.array(coords), "boxes": np.array(boxes), "types": np.array(types),
            "labels": labels}


def _write_mixed(path: Path, frames: dict) -> Path:
    """One deepmd/npy mixed-type system (type.raw placeholder, per-frame real_atom_types)."""
    natoms = frames["coords"].shape[1]
    path = write_deepmd_system(
        path, frames["coords"], np.zeros(natoms, np.int64), TYPE_MAP, frames["boxes"],
        frames["labels"],
    )
    np.save(path / "set.000" / "real_atom_types.npy", frames["types"])
    return path


def write_alloy_data(folder: str | Path, nframes: int = 60, seed: int = 2026) -> dict:
    """Training systems ``data/train_<lattice>`` (``nframes`` each) and ``data/valid`` (the
    three lattices, ``nframes // 4`` frames each, held out) under ``folder``; returns the
    relative paths ``{"train": [...], "valid": [...]}``."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    train = []
    for lattice, _ in _LATTICES:
        _write_mixed(folder / "data" / f"train_{lattice}", alloy_frames(lattice, nframes, rng))
        train.append(f"data/train_{lattice}")
    valid = []
    for lattice, _ in _LATTICES:
        frames = alloy_frames(lattice, max(nframes // 4, 2), rng)
        _write_mixed(folder / "data" / f"valid_{lattice}", frames)
        valid.append(f"data/valid_{lattice}")
    return {"train": train, "valid": valid}


# ---------------------------------------------------------------------------------------------
# training input


def quickstart_input(train: list[str], valid: list[str], steps: int) -> dict:
    """A DeePMD-kit v3 input: small DPA-1 (se_atten), float32, energy + force + virial loss.

    Tuned on two cores: batch size 1 (more steps beat larger batches here), a high starting
    learning rate (1e-2 -> 2e-4) and the force-first prefactors of DeePMD-kit's examples; 1,000
    steps reach a validation force RMSE of about 0.09 eV/Å."""
    disp = max(steps // 25, 1)
    return {
        "model": {
            "type_map": TYPE_MAP,
            "descriptor": {
                "type": "se_atten",
                "sel": 64,
                "rcut": 5.0,
                "rcut_smth": 2.0,
                "neuron": [16, 32],
                "axis_neuron": 8,
                "tebd_dim": 8,
                "attn": 32,
                "attn_layer": 0,
                "attn_dotr": True,
                "type_one_side": False,
                "precision": "float32",
                "seed": 1,
            },
            "fitting_net": {"neuron": [64, 64], "resnet_dt": True, "precision": "float32",
                            "seed": 1},
        },
        "learning_rate": {"type": "exp", "start_lr": 1e-2, "stop_lr": 2e-4,
                          "decay_steps": max(steps // 30, 1)},
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02,
            "limit_pref_e": 1,
            "start_pref_f": 1000,
            "limit_pref_f": 1,
            "start_pref_v": 0.02,
            "limit_pref_v": 0.5,
        },
        "training": {
            "training_data": {"systems": train, "batch_size": "auto:16"},
            "validation_data": {"systems": valid, "batch_size": "auto:16",
                                "numb_btch": 6},
            "numb_steps": steps,
            "seed": 10,
            "disp_freq": disp,
            "save_freq": steps,
        },
    }


# ---------------------------------------------------------------------------------------------
# screening


def reference_structures() -> list:
    """Pure Cu and Au on fcc, bcc and hcp: the "known" structures of the local database."""
    from .screen.generate import decorated_prototypes

    return decorated_prototypes(TYPE_MAP, ["fcc", "bcc", "hcp"])


def candidate_structures(seed: int = 7) -> list:
    """A few dozen Cu-Au candidates: every Cu-Au decoration of the binary prototypes in
    :mod:`lamkit.screen.generate` (L1_2, L1_0, B2, D0_3, D0_22, Laves C15, ...; primitive cells
    at Vegard volumes) and random fcc, bcc and hcp alloys of 25, 50 and 75 % Au (16 atoms)."""
    from .screen.generate import PROTOTYPES, decorated_prototypes

    binaries = [n for n, p in PROTOTYPES.items() if len(p.labels) == 2]
    out = decorated_prototypes(TYPE_MAP, binaries)
    rng = np.random.default_rng(seed)
    for (lattice, _), x, k in itertools.product(_LATTICES, (0.25, 0.5, 0.75), (1, 2)):
        atoms = _cell(lattice, x, small=True)
        t = np.zeros(len(atoms), np.int64)
        t[rng.permutation(len(atoms))[: round(x * len(atoms))]] = 1
        atoms.set_chemical_symbols([TYPE_MAP[i] for i in t])
        atoms.info.update(source=f"random-{lattice}:{atoms.get_chemical_formula()}/{k}",
                          prototype=f"random-{lattice}")
        out.append(atoms)
    return out


def build_database(db_path: Path, model: str) -> dict:
    """Relax :func:`reference_structures` with ``model`` (FIRE + Frechet cell filter) and store
    them in a new crystal database at ``db_path`` under :data:`MODEL_NAME`: the elemental
    references of the model's own convex hull."""
    from .db import CrystalDB
    from .relax import relax

    refs = reference_structures()
    results = relax(refs, model, fmax=0.02, steps=300)
    keep = []
    for ref, r in zip(refs, results):
        if r.status == "exploded" or not np.isfinite(r.energy):
            log.warning("quickstart: reference %s exploded (%s)", ref.info["source"], r.reason)
            continue
        r.atoms.info = {"source": f"quickstart reference {ref.info['source']}"}
        keep.append(r.atoms)
    with CrystalDB(db_path) as db:
        db.init()
        report = db.import_records(keep, model=MODEL_NAME, submitter="quickstart")
    log.info("quickstart: reference database %s: %s", db_path, report.summary())
    return {"n": len(refs), "stored": len(keep)}


def screen_candidates(folder: Path, model: str, db_path: Path):
    """:func:`lamkit.screen.screen` of :func:`candidate_structures` (written as POSCAR files to
    ``folder/candidates``) with ``model`` against the hull of ``db_path``; the relaxed
    candidates are inserted into the database."""
    from ase.io import write

    from .screen import ScreenConfig, screen

    cand_dir = folder / "candidates"
    cand_dir.mkdir(parents=True, exist_ok=True)
    for old in cand_dir.glob("*.vasp"):
        old.unlink()
    for k, atoms in enumerate(candidate_structures()):
        label = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in atoms.info["source"])
        write(cand_dir / f"{k:02d}-{label.strip('-')}.vasp", atoms, format="vasp", direct=True)
    config = ScreenConfig(fmax=0.05, steps=300, hull_model=MODEL_NAME, parse_workers=0)
    return screen([str(cand_dir)], model, out_dir=folder / "screen", db=str(db_path),
                  config=config, insert=True, model_name=MODEL_NAME, submitter="quickstart",
                  progress=False, restart=True)


# ---------------------------------------------------------------------------------------------
# the main job


@dataclass
class QuickstartResult:
    """What :func:`quickstart` made: paths (under ``folder``), metrics and times."""

    folder: Path
    steps: int
    valid: dict  # lam test averages over the validation systems (rmse_f in eV/Å, ...)
    force_rms: float  # root mean square of the validation force labels, eV/Å
    screen_table: Path
    screen_counts: dict
    db: Path
    timing: dict = field(default_factory=dict)  # seconds per stage

    def summary(self) -> str:
        """The closing message: where each output is and what it shows."""
        f = self.folder
        v, c = self.valid, self.screen_counts
        lines = [
            f"lam quickstart finished in {self.timing.get('total', 0.0):.0f} s; outputs in {f}/",
            f"  model        {f / 'frozen_model.pth'}: DPA-1 (se_atten), {self.steps} steps",
            f"  learning     {f / 'lcurve.png'}: training and validation RMSEs per step "
            f"({f / 'lcurve.out'})",
            f"  validation   {f / 'valid.parity.png'}: predicted vs EMT energies, forces, "
            f"virials; force RMSE {v['rmse_f']:.3f} eV/Å (labels' RMS {self.force_rms:.2f} "
            f"eV/Å), energy RMSE {1000 * v['rmse_ea']:.1f} meV/atom ({f}/valid.*.out)",
            f"  screening    {self.screen_table}: {c['inputs']} Cu-Au candidates relaxed by the "
            f"model; {c['converged']} converged, {c['with_hull']} with an energy above the "
            f"references' hull, {c['stable']} on or below it, {c['metastable']} within 0.1 eV/atom "
            f"(histogram {self.screen_table.parent / 'e_above_hull.png'})",
            f"  database     {self.db}: the model's references and the screened structures "
            f"with their hull distances",
            f"  web page     lam db --db {self.db} serve   then open http://127.0.0.1:8000/",
        ]
        return "\n".join(lines)


def quickstart(folder: str | Path = "lamkit-quickstart", steps: int | None = None,
               nframes: int = 60) -> QuickstartResult:
    """Data -> train -> test -> freeze -> screen, in ``folder`` (see the module docstring);
    ``steps`` training steps (default :data:`DEFAULT_STEPS`)."""
    import os

    from .infer import freeze
    from .infer.metrics import run_test
    from .train import Trainer

    folder = Path(folder)
    steps = DEFAULT_STEPS if steps is None else steps
    timing: dict[str, float] = {}
    t0 = t = time.perf_counter()
    log.info("quickstart [1/4] writing EMT-labelled Cu-Au data to %s/data", folder)
    systems = write_alloy_data(folder, nframes=nframes)
    conf = quickstart_input(systems["train"], systems["valid"], steps)
    (folder / "input.json").write_text(json.dumps(conf, indent=2) + "\n")
    timing["data"] = time.perf_counter() - t
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        t = time.perf_counter()
        log.info("quickstart [2/4] training DPA-1 for %d steps (input.json)", steps)
        ckpt = Trainer(conf, ".").run()
        timing["train"] = time.perf_counter() - t
        t = time.perf_counter()
        log.info("quickstart [3/4] freezing and testing on the validation systems")
        freeze(str(ckpt), "frozen_model.pth")
        metrics = run_test("frozen_model.pth", systems["valid"], detail_file="valid")
        force_rms = float(np.sqrt(np.mean(np.concatenate(
            [np.load(Path(d) / "set.000" / "force.npy").ravel() for d in systems["valid"]]
        ) ** 2)))
        timing["test"] = time.perf_counter() - t
    finally:
        os.chdir(cwd)
    t = time.perf_counter()
    log.info("quickstart [4/4] screening Cu-Au candidates into %s", folder / "crystals.db")
    db_path = folder / "crystals.db"
    if db_path.exists():
        db_path.unlink()  # a fresh database: a re-run must not keep an older model's records
    model = str(folder / "frozen_model.pth")
    build_database(db_path, model)
    res = screen_candidates(folder, model, db_path)
    timing["screen"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0
    return QuickstartResult(
        folder=folder, steps=steps, valid=metrics["average"], force_rms=force_rms,
        screen_table=folder / "screen" / "results.csv", screen_counts=res.summary["counts"],
        db=db_path, timing=timing,
    )
