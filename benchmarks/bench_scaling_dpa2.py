#!/usr/bin/env python3
"""Scaling of DPA-2 small inference with system size: lamkit vs DeePMD-kit.

Periodic water boxes are built by replicating water data_3 frame 0 (192 atoms, 12.44 Å cube):
1x1x1 (192 atoms), 2x2x2 (1,536), 4x4x4 (12,288) and 6x6x3 (20,736 atoms, 74.7 x 74.7 x
37.3 Å). Each (tool, size) runs in a fresh subprocess under a memory cap (``RLIMIT_AS``,
``--mem-limit-gb``) and a time limit (``--time-limit``): it loads the model, evaluates the
192-atom frame once (library warm-up), then evaluates energy, forces and virial of the box
``--repeat`` times. Recorded: wall and process CPU time of each evaluation, and the peak RSS of
the process (from ``wait4``), so out-of-memory and time-outs are reported as such.

Tools: ``lamkit`` (``lamkit.infer.DeepPot`` with its default ``chunk_atoms``: frames above 1024
atoms evaluated in slices of centre atoms), ``lamkit-whole`` (``chunk_atoms=0``: whole frames,
like the reference), ``deepmd`` (``deepmd.infer.DeepPot``) and ``deepmd-lower`` (the
reference's model through ``forward_lower`` on lamkit's neighbour list, since the reference's own
CPU neighbour search needs O(N^2) memory); ``--tools lamkit-ase`` adds lamkit's ASE calculator
(``get_forces`` and ``get_stress``). All load the same reference
checkpoint: the DPA-2 small preset (spec §8.1) trained one step with ``dp --pt train
--skip-neighbor-stat`` here (or ``--ckpt``). Outputs of tools that both finished are compared.

    python3 benchmarks/bench_scaling_dpa2.py [--ckpt model.ckpt-1.pt] [--sizes 1,1,1 2,2,2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, device_env, resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "water"
SIZES = ("1,1,1", "2,2,2", "4,4,4", "6,6,3")
TOOLS = ("lamkit", "lamkit-whole", "deepmd", "deepmd-lower")
EXTRA_TOOLS = ("lamkit-ase",)  # LamCalculator.get_forces (and the stress) on ase.Atoms


# --- the measured process -------------------------------------------------------------------
def water_box(data: Path, reps: tuple[int, int, int]):
    """data_3 frame 0 replicated ``reps`` times: coords [1, n*3], cell [1, 9], types [n]."""
    import numpy as np

    d3 = data / "data_3"
    coord = np.load(d3 / "set.000" / "coord.npy")[0].reshape(-1, 3)
    cell = np.load(d3 / "set.000" / "box.npy")[0].reshape(3, 3)
    types = np.loadtxt(d3 / "type.raw", dtype=np.int64).reshape(-1)
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    coords = (coord[None] + (grid @ cell)[:, None]).reshape(1, -1)
    big_cell = (cell * np.asarray(reps)[:, None]).reshape(1, 9)
    return coords, big_cell, np.tile(types, len(grid))


class RefLowerEval:
    """The reference's model (as its ``DeepPot`` loads it) called through ``forward_lower`` on
    neighbour data built by lamkit (vesin), i.e. without the reference's native neighbour
    search, which on CPU allocates ``nloc x nall x 3`` doubles (98 GB for 12,288 atoms)."""

    def __init__(self, ckpt: Path):
        from deepmd.infer import DeepPot

        from lamkit.geometry import NeighborBuilder

        ref = DeepPot(str(ckpt))
        self.model = ref.deep_eval.dp.model["Default"]
        self.device = next(self.model.parameters()).device
        self.neighbors = NeighborBuilder(ref.get_rcut(), [sum(self.model.get_sel())], True)

    def eval(self, coords, cells, types):
        import torch

        coord = torch.tensor(coords.reshape(1, -1, 3))
        nbr = self.neighbors(coord, types[None], cells)  # on the CPU, then moved
        mapping = nbr["mapping"]
        ext = torch.gather(coord, 1, mapping[..., None].expand(-1, -1, 3))
        ext = ext + torch.bmm(nbr["shift"].double(), torch.tensor(cells.reshape(1, 3, 3)))
        dev = self.device
        out = self.model.forward_lower(
            ext.to(dev), torch.tensor(types)[mapping].to(dev), nbr["nlist"].to(dev), mapping.to(dev)
        )
        force = torch.zeros(1, len(types), 3, dtype=torch.float64)
        force.index_add_(1, mapping[0], out["extended_force"].detach().cpu())
        energy, virial = out["energy"].detach().cpu(), out["virial"].detach().cpu()
        return energy.numpy().reshape(1, 1), force.numpy(), virial.numpy().reshape(1, 9)


class AseEval:
    """``eval`` through an ASE calculator: forces and stress of ``ase.Atoms``."""

    def __init__(self, ckpt: Path):
        from lamkit.infer import LamCalculator

        self.calc = LamCalculator(str(ckpt))

    def eval(self, coords, cells, types):
        import numpy as np
        from ase import Atoms

        names = self.calc.dp.get_type_map()
        atoms = Atoms(
            [names[t] for t in types],
            positions=coords.reshape(-1, 3),
            cell=cells.reshape(3, 3),
            pbc=True,
        )
        self.calc.reset()  # no cached results: evaluate every time
        atoms.calc = self.calc
        force = atoms.get_forces()
        atoms.get_stress()  # from the same calculation (no second evaluation)
        virial = self.calc.results["virial"].reshape(1, 9)
        return np.array([[atoms.get_potential_energy()]]), force[None], virial


def worker(a) -> int:
    """Evaluate one box with one tool; print one JSON line; save the outputs as npz."""
    import warnings

    import numpy as np

    warnings.simplefilter("ignore")
    reps = tuple(int(x) for x in a.reps.split(","))
    result = {"tool": a.worker, "reps": a.reps, "evals": []}
    try:
        if a.worker == "deepmd":
            from deepmd.infer import DeepPot

            dp = DeepPot(str(a.ckpt))
        elif a.worker == "deepmd-lower":
            dp = RefLowerEval(a.ckpt)
        elif a.worker == "lamkit-ase":
            dp = AseEval(a.ckpt)
        else:
            from lamkit.infer import DeepPot

            chunk = 0 if a.worker == "lamkit-whole" else None
            dp = DeepPot(str(a.ckpt), chunk_atoms=chunk, device=a.device)
        dp.eval(*water_box(a.data, (1, 1, 1)))  # warm-up: lazy initialisation of both stacks
        coords, cells, types = water_box(a.data, reps)
        result["natoms"] = len(types)
        for _ in range(a.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            out = dp.eval(coords, cells, types)
            result["evals"].append(
                {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
            )
        e, f, v = (np.asarray(x, dtype=np.float64) for x in out[:3])
        np.savez(a.save, energy=e.reshape(-1), force=f.reshape(-1, 3), virial=v.reshape(-1))
        result["status"] = "ok"
    except (MemoryError, RuntimeError) as exc:
        msg = str(exc)
        oom = isinstance(exc, MemoryError) or "memory" in msg.lower() or "alloc" in msg.lower()
        result["status"] = "OOM" if oom else "error"
        result["error"] = f"{type(exc).__name__}: {msg[-400:]}"  # the end names the allocation
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --- the driver -----------------------------------------------------------------------------
def train_reference(data: Path, workdir: Path, env: dict) -> Path:
    """One reference training step of the DPA-2 small preset on water data_0."""
    from lamkit.presets import make_input

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from water_models import reference_checkpoint

    conf = make_input("dpa2", "small", [str(data / "data_0")], [str(data / "data_3")], steps=1)
    conf["training"].pop("stat_file", None)
    conf["model"]["data_stat_nbatch"] = 2
    return reference_checkpoint(conf, workdir, env)


def run_one(a, tool: str, reps: str, save: Path, env: dict) -> dict:
    """One worker subprocess under the memory cap and the time limit."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, "--reps", reps]
    cmd += ["--ckpt", str(a.ckpt), "--data", str(a.data), "--repeat", str(a.repeat)]
    cmd += ["--save", str(save), "--device", a.device]
    cap = int(a.mem_limit_gb * 2**30)

    def limit():
        if a.device == "cpu":  # CUDA reserves far more address space than it uses
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=limit, text=True
        )
        timed_out = False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > a.time_limit:
                os.kill(proc.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    res = json.loads(lines[-1][7:]) if lines else {"tool": tool, "reps": reps, "evals": []}
    if timed_out:
        res["status"] = f"timeout ({a.time_limit:.0f} s)"
    elif not lines:
        res["status"] = f"killed (exit {proc.returncode})"
        res["error"] = text[-500:]
    res["peak_rss_mb"] = ru.ru_maxrss / 1024  # the child's, whatever way it ended
    res["process_cpu"] = ru.ru_utime + ru.ru_stime
    res["process_wall"] = time.perf_counter() - t0
    return res


def compare(a_npz: Path, b_npz: Path) -> str:
    import numpy as np

    if not (a_npz.exists() and b_npz.exists()):
        return ""
    x, y = np.load(a_npz), np.load(b_npz)
    parts = []
    for k in ("energy", "force", "virial"):
        scale = max(np.abs(y[k]).max(), 1e-300)
        parts.append(f"{k} {np.abs(x[k] - y[k]).max() / scale:.1e}")
    return ", ".join(parts)


def fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def report(results: list[dict], a, workdir: Path) -> None:
    first = {t: {} for t in TOOLS + EXTRA_TOOLS}
    print(
        f"# checkpoint {a.ckpt}; {a.threads} threads; memory cap {a.mem_limit_gb:g} GiB; "
        f"time limit {a.time_limit:.0f} s; load average now {os.getloadavg()[0]:.2f}"
    )
    print(
        "| atoms | tool | status | 1st eval wall s | 1st eval CPU s | "
        + ("2nd eval wall s | 2nd eval CPU s | " if a.repeat > 1 else "")
        + "peak RSS MB |"
    )
    print("|---|---|---|---|---|" + ("---|---|" if a.repeat > 1 else "") + "---|")
    for r in results:
        ev = r["evals"]
        natoms = r.get("natoms") or "?"
        cells = [fmt(ev[0]["wall"]) if ev else "-", fmt(ev[0]["cpu"]) if ev else "-"]
        if a.repeat > 1:
            cells += [fmt(ev[1]["wall"]) if len(ev) > 1 else "-"]
            cells += [fmt(ev[1]["cpu"]) if len(ev) > 1 else "-"]
        print(
            f"| {natoms} | {r['tool']} | {r['status']} | "
            + " | ".join(cells)
            + f" | {r['peak_rss_mb']:.0f} |"
        )
        first[r["tool"]][r["reps"]] = r
    print(
        "\nRatios deepmd / lamkit (1st eval wall, CPU, peak RSS) and output differences "
        "(max |diff| / max |value|):"
    )
    for reps in a.sizes:
        lam = first["lamkit"].get(reps)
        natoms = lam.get("natoms") if lam else reps
        for other in ("deepmd", "deepmd-lower", "lamkit-whole", "lamkit-ase"):
            o = first[other].get(reps)
            if not lam or not o:
                continue
            if lam["status"] == "ok" and o["status"] == "ok":
                le, oe = lam["evals"][-1], o["evals"][-1]
                ratio = (
                    f"wall {o['evals'][0]['wall'] / lam['evals'][0]['wall']:.2f}, "
                    f"CPU {o['evals'][0]['cpu'] / lam['evals'][0]['cpu']:.2f}, "
                    f"last eval wall {oe['wall'] / le['wall']:.2f}, "
                )
            else:
                ratio = f"{other} {o['status']}, "
            ratio += f"RSS {o['peak_rss_mb'] / lam['peak_rss_mb']:.2f}"
            diff = compare(workdir / f"lamkit-{reps}.npz", workdir / f"{other}-{reps}.npz")
            print(f"- {natoms} atoms, {other}/lamkit: {ratio}" + (f"; diff {diff}" if diff else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, default=None, help="reference DPA-2 checkpoint (.pt)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="water data folder")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), help="replications a,b,c")
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS + EXTRA_TOOLS)
    p.add_argument("--repeat", type=int, default=2, help="evaluations of each box")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mem-limit-gb", type=float, default=12.0, help="RLIMIT_AS of each run")
    p.add_argument("--time-limit", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--worker", choices=TOOLS + EXTRA_TOOLS, help=argparse.SUPPRESS)
    p.add_argument("--reps", help=argparse.SUPPRESS)
    p.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    add_device_argument(p)
    a = p.parse_args(argv)
    a.data = a.data.resolve()
    if a.worker:  # the driver set the environment; cuda:N is the worker's cuda:0
        a.device = "cpu" if a.device == "cpu" else "cuda"
        return worker(a)
    device = resolve_device(a.device)
    a.device = str(device)

    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(a.threads),
        MKL_NUM_THREADS=str(a.threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(a.threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
        NUM_WORKERS="0",
    )
    env = device_env(env, device)
    workdir = (a.workdir or Path(tempfile.mkdtemp(prefix="bench_scaling_dpa2_"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if a.ckpt is None:
        print(f"# training the reference 1 step in {workdir} ...", flush=True)
        a.ckpt = train_reference(a.data, workdir / "train", env)
    a.ckpt = a.ckpt.resolve()
    results = []
    for reps in a.sizes:
        for tool in a.tools:
            res = run_one(a, tool, reps, workdir / f"{tool}-{reps}.npz", env)
            ev = ", ".join(f"{e['wall']:.1f} s" for e in res["evals"])
            print(
                f"# {tool} {reps} ({res.get('natoms', '?')} atoms): {res['status']} "
                f"[{ev}] peak RSS {res['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            if res.get("error"):
                print(f"#   {res['error'].strip().splitlines()[-1][:200]}", flush=True)
            results.append(res)
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    print()
    report(results, a, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
