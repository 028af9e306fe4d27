#!/usr/bin/env python3
"""MD throughput (atom-steps per second) of DPA-2 small water: LAMMPS and ASE.

The same weights (the ``dpa2_small`` preset, float64, seeded random weights and statistics:
throughput does not depend on training) run NVE MD (0.5 fs, 300 K start) on periodic water
boxes made by replicating water data_3 frame 0 (192 atoms): 2x2x2 = 1,536 and 4x4x4 = 12,288
atoms. Contenders, all with ``--threads`` threads (OMP/MKL and DeePMD-kit's intra-op pool):

* ``lamkit-lmp``: LAMMPS ``pair_style deepmd`` (deepmd-kit 3.2.0's plugin, torch 2.11; the
  environment of ``.ci/dp-lmp.sh``) with the file of ``lam freeze --format pth``;
* ``deepmd-lmp``: the same LAMMPS and input with the same weights frozen by the reference
  (``lam convert`` to a DeePMD-kit checkpoint, then ``dp --pt freeze`` of the reference
  installed next to lamkit: the LAMMPS environment's ``dp`` lacks e3nn, which it imports);
* ``ase``: ASE ``VelocityVerlet`` with ``lamkit.LamCalculator`` (its defaults).

Each runs ``--warmup`` steps, then ``--steps`` timed steps (LAMMPS: its ``Loop time`` of the
second ``run``; ASE: wall time of the timed steps). Printed: atom-steps/s per contender and
size, the ratios lamkit-lmp / deepmd-lmp and lamkit-lmp / ase, and the largest relative
difference of the potential energy between the two LAMMPS runs at the first step (the same
weights must give the same numbers).

    python3 benchmarks/bench_md.py [--sizes 1536 12288] [--steps 10] [--warmup 2]
        [--threads 2] [--tools lamkit-lmp deepmd-lmp ase] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import malloc_env  # noqa: E402
from bench_scaling_dpa2 import DEFAULT_DATA, water_box  # noqa: E402

TOOLS = ("lamkit-lmp", "deepmd-lmp", "ase")
REPS = {192: (1, 1, 1), 1536: (2, 2, 2), 12288: (4, 4, 4)}
MASSES = (15.999, 1.008)  # O, H
VENV = Path.home() / ".cache" / "lamkit-dp-lmp" / "venv"
LOOP = re.compile(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms")


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
        DEVICE="cpu",
    )
    return env


def lammps_env(threads: int, malloc_tune: bool = True) -> dict:
    """LAMMPS's environment; ``malloc_tune``: glibc keeps freed memory in the heap, the
    setting lamkit applies in its own process (``lamkit.runtime.tune_allocator``), so that
    all contenders allocate alike (1.23x for the lamkit file at 1,536 atoms)."""
    env = thread_env(threads)
    if malloc_tune:
        env.update(malloc_env())
    libs = os.environ.get("LAMKIT_DP_LMP_LIBS") or str(
        next(VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    )
    env["LD_LIBRARY_PATH"] = libs
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    return env


def make_models(work: Path, seed: int) -> dict[str, Path]:
    """lamkit model file, its ``lam freeze --format pth`` and the reference's ``dp --pt
    freeze`` of its ``lam convert`` (``dp`` on PATH)."""
    import torch

    from lamkit.infer import freeze
    from lamkit.interop.convert import convert
    from lamkit.model import build_model
    from lamkit.model.io import save_model
    from lamkit.presets import load_preset
    from lamkit.testing import randomize_statistics

    model = build_model(load_preset("dpa2", size="small")["model"])
    randomize_statistics(model, seed)
    with torch.no_grad():  # set_davg_zero, the DPA-2 default
        for name, buf in model.named_buffers():
            if name.endswith("davg"):
                buf.zero_()
    paths = {"model": work / "model.pt"}
    save_model(model.eval(), paths["model"])
    t = time.perf_counter()
    paths["lamkit-lmp"] = freeze(paths["model"], work / "lamkit.pth", format="pth")
    print(f"lam freeze --format pth: {time.perf_counter() - t:.0f} s", flush=True)
    convert(paths["model"], work / "ref.pt", to="deepmd")
    t = time.perf_counter()
    subprocess.run(
        [shutil.which("dp") or "dp", "--pt", "freeze", "-c", "ref.pt", "-o", "ref.pth"],
        cwd=work,
        env=thread_env(1),
        check=True,
        capture_output=True,
    )
    print(f"dp --pt freeze: {time.perf_counter() - t:.0f} s", flush=True)
    paths["deepmd-lmp"] = work / "ref.pth"
    return paths


def write_data(path: Path, natoms: int, data: Path) -> None:
    coords, cell, types = water_box(data, REPS[natoms])
    box = cell.reshape(3, 3)
    assert abs(box - box.diagonal() * 1.0 * (box != 0)).max() == 0, "an orthogonal box"
    xyz = coords.reshape(-1, 3)
    lines = ["water", "", f"{len(types)} atoms", "2 atom types", ""]
    lines += [f"0 {float(box[d, d])!r} {lo}lo {lo}hi" for d, lo in enumerate("xyz")]
    lines += ["", "Masses", "", *(f"{t + 1} {m}" for t, m in enumerate(MASSES)), ""]
    lines += ["Atoms # atomic", ""]
    lines += [
        f"{i + 1} {t + 1} {float(x)!r} {float(y)!r} {float(z)!r}"
        for i, (t, (x, y, z)) in enumerate(zip(types, xyz))
    ]
    path.write_text("\n".join(lines) + "\n")


def run_lammps(pth: Path, natoms: int, a, work: Path) -> dict:
    tag = f"{pth.stem}_{natoms}"
    write_data(work / f"{tag}.data", natoms, a.data)
    (work / f"{tag}.in").write_text(
        f"""units metal
boundary p p p
atom_style atomic
read_data {tag}.data
pair_style deepmd {pth.name}
pair_coeff * * O H
velocity all create 300 7 mom yes rot no
timestep 0.0005
fix 1 all nve
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
thermo 1
run {a.warmup}
run {a.steps}
"""
    )
    run = subprocess.run(
        [str(VENV / "bin" / "lmp"), "-in", f"{tag}.in", "-log", f"{tag}.log"],
        cwd=work,
        env=lammps_env(a.threads, not a.no_malloc_tune),
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise SystemExit(f"LAMMPS with {pth.name} failed:\n{(run.stdout + run.stderr)[-2000:]}")
    log = (work / f"{tag}.log").read_text()
    seconds, steps, atoms = LOOP.findall(log)[-1]
    first = re.search(r"^\s*0\s+(\S+)", log, re.M)
    return {
        "atom_steps_per_s": int(atoms) * int(steps) / float(seconds),
        "s_per_step": float(seconds) / int(steps),
        "pe0": float(first.group(1)),
    }


def ase_worker(model: str, natoms: int, steps: int, warmup: int, data: str) -> None:
    """One ASE MD run in this process; prints a JSON line."""
    import numpy as np
    from ase import Atoms, units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from lamkit import LamCalculator

    coords, cell, types = water_box(Path(data), REPS[natoms])
    atoms = Atoms(
        np.array(["O", "H"])[types], positions=coords.reshape(-1, 3), cell=cell.reshape(3, 3)
    )
    atoms.pbc = True
    atoms.calc = LamCalculator(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(7))
    md = VelocityVerlet(atoms, 0.5 * units.fs)
    pe0 = atoms.get_potential_energy()
    md.run(warmup)
    t = time.perf_counter()
    md.run(steps)
    seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "atom_steps_per_s": natoms * steps / seconds,
                "s_per_step": seconds / steps,
                "pe0": float(pe0),
            }
        )
    )


def run_ase(model: Path, natoms: int, a) -> dict:
    here, args = str(Path(__file__).parent), (str(model), natoms, a.steps, a.warmup, str(a.data))
    code = f"import sys; sys.path.insert(0, {here!r}); import bench_md; bench_md.ase_worker{args!r}"
    run = subprocess.run(
        [sys.executable, "-c", code], env=thread_env(a.threads), capture_output=True, text=True
    )
    if run.returncode != 0:
        raise SystemExit(f"ASE MD failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1536, 12288], choices=sorted(REPS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument(
        "--no-malloc-tune",
        action="store_true",
        help="run LAMMPS with glibc's default malloc (default: lamkit's settings for both files)",
    )
    a = p.parse_args()
    if not (VENV / "bin" / "lmp").is_file() and set(a.tools) & {"lamkit-lmp", "deepmd-lmp"}:
        raise SystemExit(f"no LAMMPS with deepmd-kit[lmp] at {VENV} (source .ci/dp-lmp.sh)")
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_md_"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"workdir {work}; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    paths = make_models(work, a.seed)
    results: dict[tuple[str, int], dict] = {}
    for natoms in a.sizes:
        for tool in a.tools:
            if tool == "ase":
                res = run_ase(paths["model"], natoms, a)
            else:
                res = run_lammps(paths[tool], natoms, a, work)
            results[tool, natoms] = res
            print(
                f"{tool:11s} {natoms:6d} atoms: {res['atom_steps_per_s']:10.1f} atom-steps/s "
                f"({res['s_per_step']:.2f} s/step; first PE {res['pe0']:.10f} eV)",
                flush=True,
            )
    print("\n| atoms | " + " | ".join(f"{t} atom-steps/s" for t in a.tools) + " | ratios |")
    print("|---" * (len(a.tools) + 2) + "|")
    for natoms in a.sizes:
        row = [f"{results[t, natoms]['atom_steps_per_s']:.0f}" for t in a.tools]
        ratios = []
        lam = results.get(("lamkit-lmp", natoms))
        for other in ("deepmd-lmp", "ase"):
            if lam and (other, natoms) in results:
                r = lam["atom_steps_per_s"] / results[other, natoms]["atom_steps_per_s"]
                ratios.append(f"lamkit-lmp/{other} {r:.2f}")
        ref = results.get(("deepmd-lmp", natoms))
        if lam and ref:
            ratios.append(f"PE rel. diff. {abs(lam['pe0'] - ref['pe0']) / abs(ref['pe0']):.1e}")
        print(f"| {natoms:,} | " + " | ".join(row) + " | " + "; ".join(ratios) + " |")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
