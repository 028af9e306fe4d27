#!/usr/bin/env python3
"""Relaxation throughput: lamkit batched vs serial ASE loops, the same DPA-2 small weights.

The same ``--n`` mixed structures (8-64 atoms, Cu-Ag-Au-Ni-Pd-Pt-Al: half random symmetric
crystals, half swapped/rattled supercells of decorated prototypes, lamkit.screen.generate) are
relaxed three ways with FIRE + FrechetCellFilter (ASE's algorithm), the same ``--fmax`` and
``--steps`` cap:

  batched     lamkit.relax.relax (all structures advance together, one model call per step)
  lamkit-ase  a serial ASE loop: FIRE(FrechetCellFilter(atoms)) with lamkit's LamCalculator
  deepmd-ase  the same loop with the reference's ASE calculator deepmd.calculator.DP (what the
              public OpenLAM client does, there with BFGS)
  batched-float32  (``--also-float32``) the batched relaxation with the model in float32

The serial loops run on a random subset of ``--serial-n`` structures (their per-structure rate
is extrapolated); the batched run relaxes all ``--n`` (or a random ``--batched-n`` of them that
holds the serial subset). The work is cut into ``--blocks``
rounds, each round a block of every tool, the order alternating between rounds, so the load of
a shared machine hits all three alike. Printed: structures per hour (wall and CPU time), the
ratios batched/serial, optimizer steps per structure on the serial subset (from each tool, and
from the batched run for the same structures) and the agreement of the three on that subset.

Weights: ``--ckpt`` (a DeePMD-kit v3 checkpoint), or the reference trains the DPA-2 small
preset (``lam init dpa2 --size small``, type map of the seven elements) for ``--ref-steps`` on a
small EMT-labelled data set written here; lamkit loads the same checkpoint. Energies and forces
of the three are compared before any timing.

    python3 benchmarks/bench_screen.py [--n 1000] [--serial-n 40] [--blocks 4] [--threads 2]
        [--device cpu|cuda] [--dtype float64] [--ckpt model.ckpt.pt] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, resolve_device  # noqa: E402

ELEMENTS = ["Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al"]
TOOLS = ("batched", "lamkit-ase", "deepmd-ase")


def set_threads(threads: int, device: str) -> None:
    """The same thread settings for every tool; before torch/deepmd are imported."""
    os.environ.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
        NUM_WORKERS="0",
    )
    if device == "cpu":
        os.environ["DEVICE"] = "cpu"  # the reference's device switch
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


# ----------------------------------------------------------------------------- inputs


def bench_structures(n: int, seed: int = 2024) -> list:
    """``n`` structures of 8-64 atoms: half random crystals, half prototype supercells."""
    from lamkit.screen.generate import decorated_prototypes, random_crystals

    rng = np.random.default_rng(seed)
    half = n // 2
    rand = random_crystals(ELEMENTS, n - half, rng, min_atoms=8, max_atoms=64)
    protos = decorated_prototypes(ELEMENTS, variants=1, rattle=0.05, max_atoms=64, rng=rng)
    protos = [a for a in protos if "/v" in a.info["source"] and 8 <= len(a) <= 64]
    pick = rng.choice(len(protos), size=min(half, len(protos)), replace=False)
    out = rand + [protos[i] for i in sorted(pick)]
    order = rng.permutation(len(out))  # mix the kinds (and sizes) through the blocks
    return [out[i] for i in order]


def emt_data(folder: Path, nsys: int = 8, nframes: int = 10, seed: int = 5) -> list[Path]:
    """Small EMT-labelled deepmd/npy systems with all seven elements: fcc/bcc 32- and
    16-atom cells with random species, strained and rattled."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from lamkit.data.writer import write_deepmd_system

    rng = np.random.default_rng(seed)
    dirs = []
    for k in range(nsys):
        kind, a = ("fcc", 3.9) if k % 2 == 0 else ("bcc", 3.1)
        base = bulk("Cu", kind, a=a, cubic=True).repeat((2, 2, 2))
        types = np.sort(rng.integers(0, len(ELEMENTS), len(base)))
        types[: len(ELEMENTS)] = np.arange(len(ELEMENTS)) if k == 0 else types[: len(ELEMENTS)]
        types = np.sort(types)
        coords, boxes, e, f, v = [], [], [], [], []
        for _ in range(nframes):
            atoms = base.copy()
            atoms.set_chemical_symbols([ELEMENTS[t] for t in types])
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))),
                           scale_atoms=True)
            atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
            atoms.calc = EMT()
            e.append(atoms.get_potential_energy())
            f.append(atoms.get_forces())
            v.append((-atoms.get_stress(voigt=False) * atoms.get_volume()).reshape(9))
            coords.append(atoms.positions.copy())
            boxes.append(atoms.cell.array.reshape(9))
        labels = {"energy": np.array(e), "force": np.array(f), "virial": np.array(v)}
        dirs.append(write_deepmd_system(folder / f"sys_{k}", np.array(coords), types, ELEMENTS,
                                        np.array(boxes), labels))
    return dirs


def reference_checkpoint(work: Path, steps: int, data: Path | None = None) -> Path:
    """The DPA-2 small preset for the seven elements, trained ``steps`` steps by the
    reference (``dp --pt train``) on EMT data: the systems under ``data`` (e.g. the ground-truth
    study's data/train; the last one validates) or a small set written here."""
    ckpt = work / f"model.ckpt-{steps}.pt"
    if ckpt.exists():
        return ckpt
    work.mkdir(parents=True, exist_ok=True)
    if data is not None:
        dirs = sorted(p.parent for p in data.expanduser().resolve().glob("**/type.raw"))
    else:
        dirs = emt_data(work / "data")
    subprocess.run(["lam", "init", "dpa2", "--size", "small", "-o", str(work / "input.json"),
                    "--type-map", *ELEMENTS, "--steps", str(steps), "--data",
                    *map(str, dirs)], check=True, cwd=work)
    conf = json.loads((work / "input.json").read_text())
    conf["training"].update(disp_freq=max(1, steps // 10), save_freq=steps)
    conf["training"]["training_data"]["batch_size"] = "auto:32"
    conf["training"]["validation_data"]["batch_size"] = "auto:32"
    conf["training"].pop("stat_file", None)
    (work / "input.json").write_text(json.dumps(conf, indent=1))
    env = dict(os.environ)
    with open(work / "train.log", "w") as fh:
        rc = subprocess.call([sys.executable, "-m", "deepmd", "--pt", "train", "input.json",
                              "--skip-neighbor-stat"], cwd=work, env=env, stdout=fh,
                             stderr=subprocess.STDOUT)
    if rc != 0 or not ckpt.exists():
        raise SystemExit(f"reference training failed (rc {rc}); see {work / 'train.log'}")
    return ckpt


# ----------------------------------------------------------------------------- tools


def serial_relax(atoms, calc, fmax: float, steps: int) -> dict:
    """ASE FIRE + FrechetCellFilter with ``calc``, one structure."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    work = atoms.copy()
    work.calc = calc
    opt = FIRE(FrechetCellFilter(work), logfile=None)
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
        energy = float(work.get_potential_energy())
    except Exception as exc:  # noqa: BLE001 - a structure that breaks the calculator
        return {"converged": False, "steps": opt.nsteps, "energy": float("nan"),
                "error": repr(exc)}
    return {"converged": converged, "steps": int(opt.nsteps), "energy": energy}


class Tools:
    """The three contenders, each loaded once; ``run(tool, indices)`` relaxes those
    structures and returns per-structure results keyed by index."""

    def __init__(self, ckpt: Path, structures: list, a):
        from deepmd.calculator import DP

        from lamkit import LamCalculator
        from lamkit.relax import LamkitPotential

        self.structures, self.a = structures, a
        t0 = time.perf_counter()
        self.potential = LamkitPotential(str(ckpt), dtype=a.dtype, device=a.device)
        self.potential32 = (LamkitPotential(str(ckpt), dtype="float32", device=a.device)
                            if a.also_float32 else None)
        self.lam_calc = LamCalculator(str(ckpt), device=a.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.dp_calc = DP(str(ckpt))
        self.t_load = time.perf_counter() - t0

    def run(self, tool: str, indices: list[int]) -> dict[int, dict]:
        from lamkit.relax import relax

        a = self.a
        if tool.startswith("batched"):
            f32 = tool == "batched-float32"
            results = relax([self.structures[i] for i in indices],
                            self.potential32 if f32 else self.potential, fmax=a.fmax,
                            steps=a.steps, max_atoms=a.max_atoms,
                            dtype="float32" if f32 else a.dtype)
            return {i: {"converged": r.converged, "steps": r.steps, "energy": r.energy,
                        "status": r.status} for i, r in zip(indices, results)}
        calc = self.lam_calc if tool == "lamkit-ase" else self.dp_calc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {i: serial_relax(self.structures[i], calc, a.fmax, a.steps)
                    for i in indices}

    def agreement(self, indices: list[int]) -> dict:
        """Largest differences of energy per atom (eV) and forces (eV/Å) of the unrelaxed
        structures: LamCalculator and the batched potential (initial energies of a 1-step
        relax) against the reference's DP calculator."""
        from lamkit.relax import relax

        atoms = [self.structures[i] for i in indices]
        per = {"lamkit-ase": [], "deepmd-ase": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for at in atoms:
                for name, calc in (("lamkit-ase", self.lam_calc), ("deepmd-ase", self.dp_calc)):
                    w = at.copy()
                    w.calc = calc
                    per[name].append((w.get_potential_energy() / len(w), w.get_forces()))
        first = relax(atoms, self.potential, fmax=self.a.fmax, steps=1, dtype=self.a.dtype)
        ref = per["deepmd-ase"]
        return {
            "lamkit-ase dE/atom": max(abs(x[0] - r[0]) for x, r in zip(per["lamkit-ase"], ref)),
            "lamkit-ase dF": max(float(np.abs(x[1] - r[1]).max())
                                 for x, r in zip(per["lamkit-ase"], ref)),
            "batched dE/atom": max(abs(x.initial_energy / len(at) - r[0])
                                   for x, at, r in zip(first, atoms, ref)),
        }


# ----------------------------------------------------------------------------- main


def timed_blocks(tools: Tools, plan: dict[str, list[list[int]]]) -> dict:
    """Run every tool's blocks round by round (order alternating); wall and CPU per tool."""
    stats = {t: {"wall": 0.0, "cpu": 0.0, "results": {}} for t in plan}
    names = list(plan)
    for r in range(len(plan[names[0]])):
        for tool in names if r % 2 == 0 else names[::-1]:
            idx = plan[tool][r]
            c0, t0 = time.process_time(), time.perf_counter()
            res = tools.run(tool, idx)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            st = stats[tool]
            st["wall"] += wall
            st["cpu"] += cpu
            st["results"].update(res)
            print(f"# round {r + 1}: {tool:10s} {len(idx):4d} structures {wall:8.1f} s wall "
                  f"{cpu:8.1f} s CPU, load {os.getloadavg()[0]:.2f}", flush=True)
    return stats


def summarize(stats: dict, subset: list[int]) -> dict:
    out = {}
    for tool, st in stats.items():
        res = st["results"]
        n = len(res)
        sub = [res[i] for i in subset if i in res]
        out[tool] = {
            "structures": n,
            "wall_s": st["wall"],
            "cpu_s": st["cpu"],
            "per_hour_wall": 3600 * n / st["wall"],
            "per_hour_cpu": 3600 * n / st["cpu"],
            "converged": sum(bool(r["converged"]) for r in res.values()),
            "mean_steps_subset": float(np.mean([r["steps"] for r in sub])),
            "converged_subset": sum(bool(r["converged"]) for r in sub),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="structures (batched: all of them)")
    p.add_argument("--serial-n", type=int, default=40, help="random subset for serial loops")
    p.add_argument("--batched-n", type=int, default=None,
                   help="batched: relax this random subset (holding the serial one) instead "
                   "of all --n structures")
    p.add_argument("--blocks", type=int, default=4, help="rounds of interleaved blocks")
    p.add_argument("--threads", type=int, default=2)
    add_device_argument(p)
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                   help="batched relaxation precision (the serial loops use the checkpoint's)")
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--max-atoms", type=int, default=8192, help="batched atom budget")
    p.add_argument("--also-float32", action="store_true",
                   help="a fourth contender: the batched relaxation in float32")
    p.add_argument("--ckpt", type=Path, default=None, help="DeePMD-kit v3 checkpoint")
    p.add_argument("--ref-steps", type=int, default=20, help="reference training steps")
    p.add_argument("--data", type=Path, default=None,
                   help="EMT deepmd/npy systems for the reference training (default: a small "
                   "set written in the work folder)")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    a = p.parse_args(argv)
    set_threads(a.threads, a.device)  # before torch is imported
    a.device = str(resolve_device(a.device))
    import torch

    torch.set_num_threads(a.threads)
    work = (a.workdir or Path(tempfile.mkdtemp(prefix="bench_screen_"))).expanduser().resolve()
    ckpt = a.ckpt.resolve() if a.ckpt else None
    if ckpt is None:
        print(f"# training the reference DPA-2 small {a.ref_steps} steps in {work} ...",
              flush=True)
        ckpt = reference_checkpoint(work / "ref", a.ref_steps, a.data)
    t0 = time.perf_counter()
    structures = bench_structures(a.n, a.seed)
    sizes = [len(s) for s in structures]
    print(f"# {len(structures)} structures, {min(sizes)}-{max(sizes)} atoms (mean "
          f"{np.mean(sizes):.1f}), made in {time.perf_counter() - t0:.0f} s", flush=True)
    tools = Tools(ckpt, structures, a)
    rng = np.random.default_rng(a.seed + 1)
    subset = sorted(rng.choice(len(structures), size=min(a.serial_n, len(structures)),
                               replace=False).tolist())
    agree = tools.agreement(subset[:5])
    print(f"# agreement with the reference on 5 unrelaxed structures: {agree}", flush=True)
    if agree["lamkit-ase dE/atom"] > 1e-6 or agree["batched dE/atom"] > 1e-4:
        raise SystemExit("lamkit and the reference disagree on the same weights; not timing")
    batched = np.arange(len(structures))
    if a.batched_n is not None and a.batched_n < len(structures):
        rest = np.setdiff1d(batched, subset)
        extra = rng.choice(rest, size=max(a.batched_n - len(subset), 0), replace=False)
        batched = rng.permutation(np.concatenate([np.array(subset, dtype=int), extra]))
    plan = {
        "batched": [x.tolist() for x in np.array_split(batched, a.blocks)],
        "lamkit-ase": [x.tolist() for x in np.array_split(np.array(subset), a.blocks)],
        "deepmd-ase": [x.tolist() for x in np.array_split(np.array(subset), a.blocks)],
    }
    if a.also_float32:
        plan["batched-float32"] = plan["batched"]
    load0 = os.getloadavg()
    stats = timed_blocks(tools, plan)
    load1 = os.getloadavg()
    summ = summarize(stats, subset)
    report(summ, stats, subset, sizes, a, ckpt, load0, load1)
    if a.json:
        a.json.write_text(json.dumps({"summary": summ, "agreement": agree, "args": vars(a)},
                                     indent=1, default=str))
    return 0


def report(summ: dict, stats: dict, subset: list[int], sizes: list[int], a, ckpt: Path, load0,
           load1) -> None:
    print(f"# checkpoint {ckpt}; FIRE + FrechetCellFilter, fmax {a.fmax} eV/Å, <= {a.steps} "
          f"steps; {a.threads} threads, device {a.device}, batched dtype {a.dtype}, "
          f"max_atoms {a.max_atoms}")
    print(f"# load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    print("| tool | structures | wall s | CPU s | structures/h (wall) | structures/h (CPU) | "
          "converged | steps/structure (subset) |")
    print("|---|---|---|---|---|---|---|---|")
    for tool, s in summ.items():
        print(f"| {tool} | {s['structures']} | {s['wall_s']:.0f} | {s['cpu_s']:.0f} | "
              f"{s['per_hour_wall']:.0f} | {s['per_hour_cpu']:.0f} | {s['converged']} | "
              f"{s['mean_steps_subset']:.1f} |")
    for fast in [t for t in summ if t.startswith("batched")]:
        b = summ[fast]
        for tool in ("lamkit-ase", "deepmd-ase"):
            s = summ[tool]
            print(f"{fast} / {tool}: {b['per_hour_wall'] / s['per_hour_wall']:.1f}x (wall), "
                  f"{b['per_hour_cpu'] / s['per_hour_cpu']:.1f}x (CPU)")
    diffs = []
    for i in subset:
        rs = [stats[t]["results"][i] for t in TOOLS]
        if all(r["converged"] for r in rs):
            e = [r["energy"] for r in rs]
            diffs.append((max(e) - min(e)) / sizes[i])
    print(f"subset: {len(diffs)} of {len(subset)} converged in all three; largest spread of "
          f"the final energies {max(diffs) if diffs else float('nan'):.2e} eV/atom")

if __name__ == "__main__":
    sys.exit(main())
