#!/usr/bin/env python3
"""Inference benchmark: ``DeepPot.eval`` of one 192-atom water frame, lamkit vs DeePMD-kit.

Both APIs load the same weights (a reference ``dp --pt train`` checkpoint: ``--ckpt``, or the
reference is trained for one step here on the ``--model`` water config, see water_models.py)
and evaluate data_3 frame 0 (energy, forces, virial), ``--evals`` times each after
``--warmup`` calls, interleaved in blocks of ``--block`` calls whose order alternates, so slow
phases of a shared machine hit every tool. Printed: mean and median wall ms/eval, CPU ms/eval,
the ratio reference/lamkit, and the largest relative difference between the outputs
(max |diff| / max |value|).

By default the tools share one process (and so one heap and the caches: each runs right after
the other has swept its own working set through them). ``--isolated`` runs each tool in its own
worker process (children of this one, kept alive and driven block by block in the same
alternating order), which is how a user runs either of them.

lamkit tunes glibc malloc in its process (``lamkit.runtime.tune_allocator``), which in the
shared process also serves the reference; ``--isolated --tune-ref-malloc`` gives the
reference's own process the same settings (glibc's ``MALLOC_*`` variables), so that only the
computation differs.

``--compile`` adds a third contender, ``DeepPot(..., compile=True)`` (compiled graphs,
:mod:`lamkit.infer.compiled`); its one-off compilation happens in the warm-up and is printed.

    python3 benchmarks/bench_infer_water.py [--model dpa2-medium] [--ckpt model.ckpt.pt]
        [--compile] [--isolated [--tune-ref-malloc]]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, malloc_env, resolve_device  # noqa: E402
from water_models import MODELS, reference_checkpoint, water_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "water"
TOOLS = ("lamkit", "deepmd", "lamkit-compiled")


def train_reference(model: str, data: Path, workdir: Path, env: dict) -> Path:
    """One reference training step of the ``model`` water config."""
    return reference_checkpoint(water_config(model, data, 1), workdir, env)


def set_threads(threads: int) -> None:
    """The same thread settings for every tool; before torch/deepmd are imported."""
    os.environ.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
        NUM_WORKERS="0",
    )


def frame(data: Path):
    import numpy as np

    d3 = data / "data_3"
    coord = np.load(d3 / "set.000" / "coord.npy")[:1].astype(np.float64)
    box = np.load(d3 / "set.000" / "box.npy")[:1].astype(np.float64)
    atype = np.loadtxt(d3 / "type.raw", dtype=np.int64).reshape(-1)
    return coord, box, atype


def load_tool(name: str, ckpt: Path, data: Path, device: str = "cpu"):
    """``(call, load seconds)``: ``call()`` evaluates the frame with tool ``name`` on
    ``device`` (the reference reads it from the ``DEVICE`` variable that :func:`main` sets)."""
    coord, box, atype = frame(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        if name == "deepmd":
            from deepmd.infer import DeepPot

            dp = DeepPot(str(ckpt))
        else:
            from lamkit.infer.deep_pot import DeepPot

            dp = DeepPot(str(ckpt), compile=name == "lamkit-compiled", device=device)
        t_load = time.perf_counter() - t0

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dp.eval(coord, box, atype)

    return call, t_load


def run_block(call, n: int) -> tuple[list[float], float]:
    """Wall seconds of ``n`` calls and their process CPU seconds."""
    c0 = time.process_time()
    wall = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        wall.append(time.perf_counter() - t0)
    return wall, time.process_time() - c0


def worker(a) -> int:
    """``--worker NAME``: load, warm up, report; then run blocks as asked on stdin."""
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    call, t_load = load_tool(a.worker, a.ckpt, a.data, a.device)
    t0 = time.perf_counter()
    for _ in range(max(1, a.warmup)):
        out = call()
    t_warm = time.perf_counter() - t0
    first = {
        "load": t_load,
        "warm": t_warm,
        "out": [np.asarray(x, dtype=np.float64).ravel().tolist() for x in out[:3]],
    }
    print(json.dumps(first), flush=True)
    for line in sys.stdin:
        n = int(line)
        if n <= 0:
            break
        wall, cpu = run_block(call, n)
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
    return 0


class Remote:
    """A worker process driven over stdin/stdout."""

    def __init__(self, name: str, a, ckpt: Path, data: Path):
        cmd = [sys.executable, __file__, "--worker", name, "--ckpt", str(ckpt)]
        cmd += ["--data", str(data), "--threads", str(a.threads), "--warmup", str(a.warmup)]
        cmd += ["--device", a.device]
        env = dict(os.environ)
        if name == "deepmd" and a.tune_ref_malloc:  # lamkit.runtime.tune_allocator's settings
            env.update(malloc_env())
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.first = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.proc.args[3]} died")
        return json.loads(line)

    def block(self, n: int) -> tuple[list[float], float]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        r = self._read()
        return r["wall"], r["cpu"]

    def close(self) -> None:
        self.proc.stdin.write("0\n")
        self.proc.stdin.close()
        self.proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="se_e2_a", choices=MODELS)
    p.add_argument("--ckpt", type=Path, default=None, help="reference checkpoint (.pt)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="water data folder")
    p.add_argument("--evals", type=int, default=100)
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--compile", action="store_true", help="also time DeepPot(compile=True)")
    p.add_argument("--isolated", action="store_true", help="each tool in its own process")
    p.add_argument(
        "--tune-ref-malloc",
        action="store_true",
        help="with --isolated: the reference's process gets lamkit's malloc settings",
    )
    p.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    add_device_argument(p)
    a = p.parse_args(argv)
    a.data = a.data.resolve()
    a.device = str(resolve_device(a.device))
    if a.device == "cpu":  # the reference's own switch (deepmd.pt.utils.env.DEVICE)
        os.environ["DEVICE"] = "cpu"

    set_threads(a.threads)
    if a.worker:
        return worker(a)
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    ckpt = a.ckpt
    if ckpt is None:
        work = (a.workdir or Path(tempfile.mkdtemp(prefix="bench_infer_water_"))).resolve()
        print(f"# training the reference 1 step in {work} ...", flush=True)
        ckpt = train_reference(a.model, a.data, work, dict(os.environ))
    ckpt = ckpt.resolve()
    names = [t for t in TOOLS if a.compile or t != "lamkit-compiled"]

    t_load, t_warm, outputs, blocks = {}, {}, {}, {}
    remotes = []
    for name in names:
        if a.isolated:
            r = Remote(name, a, ckpt, a.data)
            remotes.append(r)
            t_load[name], t_warm[name] = r.first["load"], r.first["warm"]
            outputs[name] = r.first["out"]
            blocks[name] = r.block
        else:
            call, t_load[name] = load_tool(name, ckpt, a.data, a.device)
            t0 = time.perf_counter()
            for _ in range(max(1, a.warmup)):
                out = call()
            t_warm[name] = time.perf_counter() - t0
            outputs[name] = [np.asarray(x, dtype=np.float64).ravel() for x in out[:3]]
            blocks[name] = lambda n, call=call: run_block(call, n)

    wall = {n: [] for n in names}
    cpu = {n: 0.0 for n in names}
    load_before = os.getloadavg()
    nblocks = max(1, a.evals // a.block)
    for b in range(nblocks):
        for name in names if b % 2 == 0 else names[::-1]:
            w, c = blocks[name](a.block)
            wall[name] += w
            cpu[name] += c
    load_after = os.getloadavg()
    for r in remotes:
        r.close()

    diffs = {}
    for tool in (t for t in names if t != "deepmd"):
        for n, r, g in zip(("energy", "force", "virial"), outputs["deepmd"], outputs[tool]):
            r, g = np.asarray(r), np.asarray(g)
            diffs[f"{tool} {n}"] = float(np.abs(r - g).max() / max(np.abs(r).max(), 1e-300))

    n_each = nblocks * a.block
    print(f"# model {a.model}, checkpoint {ckpt}")
    print(
        f"# one frame of {len(frame(a.data)[2])} atoms, {n_each} evals each (blocks of "
        f"{a.block}, alternating order), {a.warmup} warm-up calls, {a.threads} threads, "
        f"device {a.device}, torch {torch.__version__}, "
        + ("each tool in its own process" if a.isolated else "all tools in one process")
        + (", reference with lamkit's malloc settings" if a.tune_ref_malloc else "")
    )
    print(f"# load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print("# model load: " + ", ".join(f"{n} {t:.2f} s" for n, t in t_load.items()))
    print("# warm-up: " + ", ".join(f"{n} {t:.1f} s" for n, t in t_warm.items()))
    print("| | mean ms/eval | median ms/eval | min ms/eval | CPU ms/eval |")
    print("|---|---|---|---|---|")
    stats = {}
    for name in names:
        w = np.array(wall[name]) * 1e3
        stats[name] = (w.mean(), np.median(w), w.min(), cpu[name] * 1e3 / n_each)
        print(
            f"| {name} | {stats[name][0]:.1f} | {stats[name][1]:.1f} | {stats[name][2]:.1f} | "
            f"{stats[name][3]:.1f} |"
        )
    for tool in (t for t in names if t != "deepmd"):
        print(
            f"ratio deepmd/{tool}: mean {stats['deepmd'][0] / stats[tool][0]:.2f}, "
            f"median {stats['deepmd'][1] / stats[tool][1]:.2f}, "
            f"CPU {stats['deepmd'][3] / stats[tool][3]:.2f}"
        )
    print(
        "max relative difference (max|diff|/max|ref|): "
        + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
