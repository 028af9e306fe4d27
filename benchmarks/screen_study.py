#!/usr/bin/env python3
"""Ground-truth screening study: ASE's EMT stands in for DFT on Cu-Ag-Au-Ni-Pd-Pt-Al.

Stages (each resumable: finished chunks and files are kept in the work folder and skipped):

    pool        EMT relaxations (ASE FIRE + FrechetCellFilter) of the reference prototypes
                (fcc/bcc/hcp, L1_2, L1_0, B2, B32, D0_3, L2_1, C1_b), of swapped/rattled
                supercells of them and of random pyxtal crystals (seeds apart from the
                candidates'); trajectory frames and perturbed copies of the minima, all
                labelled with EMT energy, forces and stress
    refdb       the reference database: the relaxed reference prototypes, model "emt"
    data        deepmd/npy training and validation systems from the pool (lamkit's writer)
    train       `lam train` of a small type-mixed DPA-1 model (runs in the background; --wait)
    candidates  >= 2,000 candidates: the prototypes NOT in the reference set, swapped/rattled
                supercells of the reference ones, random symmetric crystals (pyxtal)
    model-refs  the reference structures relaxed by the trained model, stored in the same
                database under --model-name, so the model is measured against its own hull
    screen      lamkit.screen.screen of the candidates with EMT (hull "emt") and with the model
                (hull --model-name)
    report      F1, DAF, precision, recall, MAE/RMSE of e_above_hull (model vs EMT), S.U.N.
                rates, wall times; parity plot

    python3 benchmarks/screen_study.py all --work ~/.cache/lamkit-screen-study
    python3 benchmarks/screen_study.py pool data train candidates --work DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ELEMENTS = ["Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al"]
REFERENCE_PROTOTYPES = ["fcc", "bcc", "hcp", "L1_2", "L1_0", "B2", "B32", "D0_3", "L2_1", "C1_b"]
MODEL_NAME = "lamkit-emt-dpa1"
CHUNK = 50
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, resolve_device  # noqa: E402

DEVICE = "cpu"  # --device, set by main()
DEFAULT_WORK = Path.home() / ".cache" / "lamkit-screen-study"
# frames of a relaxation trajectory kept as training data: early steps densely
KEEP_STEPS = {0, 1, 3, 6, 10, 16, 25, 40, 60, 90, 140, 200, 300}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_atomic(path: Path, frames: list) -> None:
    """Write extxyz frames to ``path`` through a temporary file (a killed run leaves no half
    chunk behind)."""
    from ase.io import write

    tmp = path.with_suffix(".tmp.extxyz")
    write(tmp, frames, format="extxyz")
    tmp.replace(path)


def read_frames(path: Path) -> list:
    from ase.io import read

    return read(path, index=":", format="extxyz") if path.exists() else []


def label(atoms, calc=None):
    """A copy of ``atoms`` with EMT energy, forces and stress in a SinglePointCalculator."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    work = atoms.copy()
    work.calc = calc or EMT()
    e, f, s = work.get_potential_energy(), work.get_forces(), work.get_stress()
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=e, forces=f, stress=s)
    return out


# ---------------------------------------------------------------------------------- pool


def emt_relax(atoms, fmax: float, steps: int):
    """ASE FIRE + FrechetCellFilter with EMT. Returns (kept frames, relaxed frame, converged,
    steps taken); frames are labelled copies at the steps in KEEP_STEPS."""
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    work = atoms.copy()
    work.calc = EMT()
    frames, counter = [], [0]

    def keep():
        if counter[0] in KEEP_STEPS:
            frames.append(label(work))
        counter[0] += 1

    opt = FIRE(FrechetCellFilter(work), logfile=None)
    opt.attach(keep, interval=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            converged = bool(opt.run(fmax=fmax, steps=steps))
        except Exception as exc:  # a blow-up: keep what we have, mark it
            log(f"  EMT relaxation failed: {exc!r}")
            return frames, None, False, counter[0]
    final = label(work)
    return frames, final, converged, opt.nsteps


def perturbed(atoms, rng, n: int, rattle: float, strain: float) -> list:
    """``n`` copies strained by a symmetric Gaussian strain (``strain`` std) and rattled by
    ``rattle`` Å, EMT-labelled."""
    out = []
    for _ in range(n):
        a = atoms.copy()
        e = rng.normal(0.0, strain, (3, 3))
        a.set_cell(a.cell.array @ (np.eye(3) + 0.5 * (e + e.T)), scale_atoms=True)
        a.positions += rng.normal(0.0, rattle, a.positions.shape)
        out.append(label(a))
    return out


def pool_structures(group: str) -> tuple[list, dict]:
    """The structures of one pool group and its relaxation settings."""
    from lamkit.screen.generate import decorated_prototypes, random_crystals

    if group == "ref":
        return decorated_prototypes(ELEMENTS, REFERENCE_PROTOTYPES), dict(
            fmax=0.01, steps=500, n_perturb=4, rattle=0.06, strain=0.03)
    if group == "var":
        return decorated_prototypes(ELEMENTS, REFERENCE_PROTOTYPES, variants=2, rattle=0.05,
                                    max_atoms=32, rng=11)[1::6], dict(
            fmax=0.05, steps=200, n_perturb=1, rattle=0.05, strain=0.02)
    if group == "rand":
        return random_crystals(ELEMENTS, 300, 12, max_atoms=48), dict(
            fmax=0.05, steps=300, n_perturb=2, rattle=0.05, strain=0.03)
    raise ValueError(group)


def stage_pool(work: Path, groups=("ref", "rand", "var")) -> None:
    pool = work / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for group in groups:
        structures, opts = pool_structures(group)
        nchunks = (len(structures) + CHUNK - 1) // CHUNK
        log(f"pool {group}: {len(structures)} structures, {nchunks} chunks")
        for c in range(nchunks):
            path = pool / f"{group}-{c:03d}.extxyz"
            if path.exists():
                continue
            t0 = time.perf_counter()
            rng = np.random.default_rng([hash_seed(group), c])
            frames = []
            for k, atoms in enumerate(structures[c * CHUNK:(c + 1) * CHUNK]):
                sid = f"{group}-{c * CHUNK + k}"
                traj, final, conv, nsteps = emt_relax(atoms, opts["fmax"], opts["steps"])
                for f in traj:
                    f.info.update(sid=sid, kind="traj", source=atoms.info["source"])
                frames += traj
                if final is None:
                    continue
                final.info.update(sid=sid, kind="final", converged=conv, nsteps=nsteps,
                                  source=atoms.info["source"])
                frames.append(final)
                for f in perturbed(final, rng, opts["n_perturb"], opts["rattle"],
                                   opts["strain"]):
                    f.info.update(sid=sid, kind="perturb", source=atoms.info["source"])
                    frames.append(f)
            write_atomic(path, frames)
            log(f"  {path.name}: {len(frames)} frames in {time.perf_counter() - t0:.0f} s")


def hash_seed(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def pool_frames(work: Path, group: str | None = None) -> list:
    frames = []
    for path in sorted((work / "pool").glob(f"{group or '*'}-*.extxyz")):
        if ".tmp." not in path.name:
            frames += read_frames(path)
    return frames


# ---------------------------------------------------------------------------------- refdb


def stage_refdb(work: Path) -> None:
    from lamkit.db import CrystalDB

    db = CrystalDB(work / "refdb.sqlite").init()
    if db.count(model="emt"):
        log(f"refdb: {db.count(model='emt')} emt records already there")
        return
    finals = [f for f in pool_frames(work, "ref") if f.info["kind"] == "final"]
    t0 = time.perf_counter()  # Atoms: energy from the calculator, source from info
    report = db.import_records(finals, model="emt", submitter="screen_study", progress=False)
    log(f"refdb: {report.summary()} ({time.perf_counter() - t0:.0f} s); "
        f"unconverged {sum(not f.info['converged'] for f in finals)}")


# ---------------------------------------------------------------------------------- data


def stage_data(work: Path, valid_fraction: float = 0.05, max_force: float = 30.0) -> None:
    """deepmd/npy systems: frames grouped by composition (atoms sorted by type), structures
    (all frames of one pool structure) split between training and validation; frames with a
    force component above ``max_force`` eV/Å (the most compressed starts of random crystals,
    0.3 % of them) are left out."""
    from lamkit.data.writer import write_deepmd_system

    out = work / "data"
    if (out / "done").exists():
        log("data: already written")
        return
    frames = [f for f in pool_frames(work) if np.abs(f.get_forces()).max() <= max_force]
    systems: dict[tuple[str, tuple], list] = {}
    for f in frames:
        types = np.array([ELEMENTS.index(s) for s in f.get_chemical_symbols()])
        order = np.argsort(types, kind="stable")
        split = "valid" if hash_seed(f.info["sid"]) % 1000 < valid_fraction * 1000 else "train"
        systems.setdefault((split, tuple(types[order])), []).append((f, order))
    counts = {"train": 0, "valid": 0}
    for k, ((split, types), group) in enumerate(sorted(systems.items())):
        coords = np.array([f.positions[o] for f, o in group])
        boxes = np.array([f.cell.array.reshape(9) for f, _ in group])
        labels = {
            "energy": np.array([f.get_potential_energy() for f, _ in group]),
            "force": np.array([f.get_forces()[o] for f, o in group]),
            "virial": np.array([-f.get_stress(voigt=False).reshape(9) * f.get_volume()
                                for f, _ in group]),
        }
        name = "".join(f"{ELEMENTS[t]}{n}" for t, n in zip(*np.unique(types, return_counts=True)))
        write_deepmd_system(out / split / f"{k:04d}_{name}", coords, np.array(types), ELEMENTS,
                            boxes, labels)
        counts[split] += len(group)
    (out / "done").write_text(json.dumps(counts))
    log(f"data: {counts} frames in {len(systems)} systems")


def model_input(work: Path, steps: int) -> dict:
    """A small DPA-1 (se_atten) type-mixed energy model without attention layers (type
    embedding + smooth embedding: 0.02 s per step here, one attention layer makes it 0.33 s),
    float32."""
    train = sorted(str(p) for p in (work / "data" / "train").iterdir())
    valid = sorted(str(p) for p in (work / "data" / "valid").iterdir())
    return {
        "model": {
            "type_map": ELEMENTS,
            "descriptor": {
                "type": "dpa1", "sel": 120, "rcut_smth": 2.0, "rcut": 6.0,
                "neuron": [24, 48, 96], "tebd_dim": 8, "axis_neuron": 12,
                "type_one_side": True, "attn": 64, "attn_layer": 0, "attn_dotr": True,
                "attn_mask": False, "activation_function": "tanh", "scaling_factor": 1.0,
                "normalize": True, "temperature": 1.0, "precision": "float32", "seed": 1,
            },
            "fitting_net": {"neuron": [200, 200, 200], "resnet_dt": True,
                            "precision": "float32", "seed": 1},
        },
        "learning_rate": {"type": "exp", "decay_steps": max(steps // 40, 1),
                          "start_lr": 2e-3, "stop_lr": 2e-5},
        "loss": {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 20,
                 "start_pref_f": 100, "limit_pref_f": 20,
                 "start_pref_v": 0.02, "limit_pref_v": 1},
        "training": {
            "training_data": {"systems": train, "batch_size": "auto:32"},
            "validation_data": {"systems": valid, "batch_size": "auto:32", "numb_btch": 2},
            "numb_steps": steps, "seed": 10, "disp_file": "lcurve.out",
            "disp_freq": max(steps // 50, 1), "save_freq": max(steps // 20, 1),
            "stat_file": str(work / "train" / "stat.hdf5"),
        },
    }


def stage_train(work: Path, steps: int, threads: int, wait: bool) -> Path:
    """Start `lam train` in the background (nohup; continues a killed run with --restart);
    returns the frozen model path (frozen once training has finished)."""
    tdir = work / "train"
    tdir.mkdir(parents=True, exist_ok=True)
    frozen = tdir / "frozen_model.pth"
    if frozen.exists():
        return frozen
    final = tdir / f"model.ckpt-{steps}.pt"
    if not final.exists() and not _training_running(tdir):
        (tdir / "input.json").write_text(json.dumps(model_input(work, steps), indent=1))
        ckpts = sorted(tdir.glob("model.ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[-1]))
        cmd = ["lam", "train", "input.json", "--device", DEVICE]
        if ckpts:
            cmd += ["--restart", ckpts[-1].name]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        with open(tdir / "train.log", "a") as logf:
            proc = subprocess.Popen(["nohup", *cmd], cwd=tdir, stdout=logf,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        (tdir / "train.pid").write_text(str(proc.pid))
        log(f"train: started `{' '.join(cmd)}` in {tdir} (pid {proc.pid}, {threads} threads)")
    while wait and not final.exists():
        if not _training_running(tdir):
            raise SystemExit(f"train: `lam train` stopped before step {steps}; see "
                             f"{tdir / 'train.log'}")
        time.sleep(60)
    if final.exists():
        subprocess.run(["lam", "freeze", "-c", str(tdir), "-o", str(frozen)], check=True,
                       cwd=tdir)
        return frozen
    return final


def _training_running(tdir: Path) -> bool:
    pid_file = tdir / "train.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes().find(b"train") >= 0


# ---------------------------------------------------------------------------------- candidates


def make_candidates(n_random: int, seed: int = 2025) -> list:
    """Candidate structures: prototypes outside the reference set, one swapped/rattled
    supercell per reference prototype, and ``n_random`` random symmetric crystals."""
    from lamkit.screen.generate import PROTOTYPES, decorated_prototypes, random_crystals

    others = [p for p in PROTOTYPES if p not in REFERENCE_PROTOTYPES]
    out = decorated_prototypes(ELEMENTS, others)
    variants = decorated_prototypes(ELEMENTS, REFERENCE_PROTOTYPES, variants=1, rattle=0.03,
                                    max_atoms=64, rng=seed)
    out += [a for a in variants if "/v" in a.info["source"]]
    out += random_crystals(ELEMENTS, n_random, seed, max_atoms=64)
    return out


def stage_candidates(work: Path, n_random: int) -> Path:
    path = work / "candidates" / "candidates.extxyz"
    if path.exists():
        log(f"candidates: {path} exists")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cands = make_candidates(n_random)
    for k, a in enumerate(cands):
        a.info = {"source": a.info["source"], "candidate": k}
    write_atomic(path, cands)
    sizes = [len(a) for a in cands]
    log(f"candidates: {len(cands)} structures ({min(sizes)}-{max(sizes)} atoms, median "
        f"{int(np.median(sizes))}) in {time.perf_counter() - t0:.0f} s -> {path}")
    return path


# ---------------------------------------------------------------------------------- phase B


def stage_model_refs(work: Path, model: Path, dtype: str) -> None:
    """Relax the stored EMT reference structures with the model (lamkit.relax, FIRE +
    Frechet, fmax 0.05, 500 steps) and store them under MODEL_NAME: the model's own hull."""
    from lamkit.db import CrystalDB
    from lamkit.relax import relax

    db = CrystalDB(work / "refdb.sqlite")
    if db.count(model=MODEL_NAME):
        log(f"model-refs: {db.count(model=MODEL_NAME)} {MODEL_NAME} records already there")
        return
    refs = list(db.iter_query(model="emt", as_="atoms"))
    t0 = time.perf_counter()
    results = relax(refs, str(model), fmax=0.05, steps=500, dtype=dtype, device=DEVICE)
    t_relax = time.perf_counter() - t0
    keep = []
    for ref, r in zip(refs, results):
        if r.status == "exploded" or not np.isfinite(r.energy):
            continue
        r.atoms.info = {"source": f"model-relaxed lam-{ref.info.get('id')}"}
        keep.append(r.atoms)
    report = db.import_records(keep, model=MODEL_NAME, submitter="screen_study")
    stats = {"n": len(refs), "converged": sum(r.converged for r in results),
             "exploded": sum(r.status == "exploded" for r in results), "wall_s": t_relax}
    (work / "model_refs.json").write_text(json.dumps(stats))
    log(f"model-refs: {stats}; {report.summary()}")


def stage_screen(work: Path, which: str, model: Path | None, dtype: str, threads: int) -> dict:
    """lamkit.screen.screen of the candidates with EMT ("emt") or the model (MODEL_NAME),
    each against its own hull; returns the summary (with the wall time)."""
    import torch

    from lamkit.screen import ScreenConfig, screen

    torch.set_num_threads(threads)
    out = work / f"screen-{which}"
    name = "emt" if which == "emt" else MODEL_NAME
    config = ScreenConfig(fmax=0.05, steps=500, dtype=dtype if which == "model" else "float64",
                          hull_model=name, preset="openlam", parse_workers=1, device=DEVICE)
    t0 = time.perf_counter()
    res = screen([str(work / "candidates" / "candidates.extxyz")],
                 "emt" if which == "emt" else str(model), out_dir=out,
                 db=str(work / "refdb.sqlite"), config=config, model_name=name, progress=False)
    wall = time.perf_counter() - t0
    summary = dict(res.summary, study_wall_s=wall)
    (out / "study_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"screen {which}: {len(res.table)} rows in {wall:.0f} s; counts {res.summary['counts']}")
    return summary


def stage_report(work: Path) -> dict:
    """Model against EMT: classifier metrics at 0 and 0.1 eV/atom, S.U.N. rates, wall times;
    writes report.json and the parity plot."""
    import pandas as pd

    from lamkit.screen.metrics import stability_metrics

    emt = pd.read_csv(work / "screen-emt" / "results.csv")
    mod = pd.read_csv(work / "screen-model" / "results.csv")
    both = emt.merge(mod, on="index", suffixes=("_emt", "_model"))
    rep = {"n_candidates": len(both)}
    for th in (0.0, 0.1):
        rep[f"metrics@{th}"] = stability_metrics(both.e_above_hull_model,
                                                 both.e_above_hull_emt, threshold=th)
    for which in ("emt", "model"):
        summ = json.loads((work / f"screen-{which}" / "study_summary.json").read_text())
        rep[which] = {"counts": summ["counts"], "rates": summ["rates"],
                      "wall_s": summ["study_wall_s"], "timing": summ.get("timing")}
    pair = both[both.sun_emt.fillna(False).astype(bool) & both.sun_model.fillna(False)
                .astype(bool)]
    rep["sun_both"] = len(pair)
    err = np.abs(both.e_above_hull_model - both.e_above_hull_emt)
    near = both.e_above_hull_emt <= 0.1
    rep["abs_error"] = {"median": float(err.median()),
                        "MAE_emt_within_0.1": float(err[near].mean()),
                        "n_emt_within_0.1": int(near.sum())}
    mr = work / "model_refs.json"
    rep["model_refs"] = json.loads(mr.read_text()) if mr.exists() else None
    rep["training"] = training_summary(work)
    rep["model_errors"] = model_errors(work)
    (work / "report.json").write_text(json.dumps(rep, indent=1, default=float))
    parity_plot(both, work / "parity_e_above_hull.png", rep["metrics@0.0"])
    return rep


def training_summary(work: Path) -> dict:
    """Steps and wall time of the training, from train.log's time stamps."""
    lines = (work / "train" / "train.log").read_text().splitlines()
    stamps = [ln[1:9] for ln in lines if ln.startswith("[") and ln[9:10] == "]"]
    t0, t1 = (time.strptime(x, "%H:%M:%S") for x in (stamps[0], stamps[-1]))
    wall = (time.mktime(t1) - time.mktime(t0)) % 86400
    steps = json.loads((work / "train" / "input.json").read_text())["training"]["numb_steps"]
    return {"steps": steps, "wall_s": wall}


def model_errors(work: Path) -> dict:
    """The trained model on the held-out pool structures (the validation systems' frames):
    energy MAE per atom (eV/atom) and force MAE (eV/Å) by kind of frame."""
    from lamkit import LamCalculator

    calc = LamCalculator(str(work / "train" / "frozen_model.pth"), device=DEVICE)
    out: dict[str, list] = {}
    for f in pool_frames(work):
        if hash_seed(f.info["sid"]) % 1000 >= 50 or np.abs(f.get_forces()).max() > 30.0:
            continue  # the validation split of stage_data
        w = f.copy()
        w.calc = calc
        de = abs(w.get_potential_energy() - f.get_potential_energy()) / len(f)
        df = float(np.abs(w.get_forces() - f.get_forces()).mean())
        out.setdefault(f.info["kind"], []).append((de, df))
    return {k: {"frames": len(v), "energy_MAE_per_atom": float(np.mean([x[0] for x in v])),
                "force_MAE": float(np.mean([x[1] for x in v]))} for k, v in sorted(out.items())}


def parity_plot(both, path: Path, m: dict) -> None:
    """Model against EMT e_above_hull: all candidates, and the region near the hull."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = both.e_above_hull_emt.to_numpy(float), both.e_above_hull_model.to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.7), dpi=100)
    lo = min(float(x[ok].min()), float(y[ok].min()), 0.0) - 0.01
    for ax, hi in zip(axes, (float(np.nanpercentile(x[ok], 99.5)), 0.2)):
        lim = [lo, hi]
        ax.scatter(x[ok], y[ok], s=4, alpha=0.5, lw=0)
        ax.plot(lim, lim, "k-", lw=0.7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_xlabel("EMT e_above_hull (eV/atom)")
    axes[0].set_ylabel("model e_above_hull (eV/atom)")
    fig.suptitle(f"{ok.sum()} candidates, each relaxed by EMT and by the model: MAE "
                 f"{m['MAE'] * 1000:.0f} meV/atom, F1 {m['F1']:.2f}, DAF {m['DAF']:.1f}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main

STAGES = ("pool", "refdb", "data", "train", "candidates", "model-refs", "screen-emt",
          "screen-model", "report")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stages", nargs="+", choices=(*STAGES, "all"))
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder (cache)")
    p.add_argument("--steps", type=int, default=60000, help="training steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--wait", action="store_true", help="train: wait until training ends")
    p.add_argument("--random", type=int, default=1000, help="random crystals among candidates")
    p.add_argument("--model", type=Path, default=None,
                   help="model for model-refs/screen-model (default: the trained one)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="precision of the model's relaxations")
    add_device_argument(p)
    a = p.parse_args(argv)
    global DEVICE
    DEVICE = str(resolve_device(a.device))
    work = a.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    stages = STAGES if "all" in a.stages else a.stages
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        if stage == "pool":
            stage_pool(work)
        elif stage == "refdb":
            stage_refdb(work)
        elif stage == "data":
            stage_data(work)
        elif stage == "train":
            stage_train(work, a.steps, a.threads, a.wait or "all" in a.stages)
        elif stage == "candidates":
            stage_candidates(work, a.random)
        elif stage == "model-refs":
            stage_model_refs(work, model_path(work, a), a.dtype)
        elif stage in ("screen-emt", "screen-model"):
            which = stage.split("-")[1]
            stage_screen(work, which, model_path(work, a) if which == "model" else None,
                         a.dtype, a.threads)
        elif stage == "report":
            print(json.dumps(stage_report(work), indent=1, default=float))
        log(f"stage {stage}: {time.perf_counter() - t0:.0f} s")
    return 0


def model_path(work: Path, a) -> Path:
    if a.model is not None:
        return a.model.expanduser().resolve()
    frozen = work / "train" / "frozen_model.pth"
    if not frozen.exists():
        final = work / "train" / f"model.ckpt-{a.steps}.pt"
        if not final.exists():
            raise SystemExit(f"no trained model yet ({final}); run the train stage (--wait)")
        stage_train(work, a.steps, a.threads, wait=False)
    return frozen


if __name__ == "__main__":
    sys.exit(main())
