#!/usr/bin/env python3
"""Inference benchmark: ``DeepPot.eval`` of one 192-atom water frame, lamkit vs DeePMD-kit.

Both APIs load the same weights (a reference ``dp --pt train`` checkpoint: ``--ckpt``, or the
reference is trained for one step here on the ``--model`` water config, see water_models.py)
and evaluate data_3 frame 0 (energy, forces, virial),
``--evals`` times each after ``--warmup`` calls. The two run in one process, interleaved in
blocks of ``--block`` calls whose order alternates, so slow phases of a shared machine hit both.
Printed: mean and median wall ms/eval, process CPU ms/eval, the ratio reference/lamkit, and the
largest relative difference between the two outputs (max |diff| / max |value|).

    python3 benchmarks/bench_infer_water.py [--model dpa2-medium] [--ckpt model.ckpt.pt] [--compile]

``--compile`` adds a third contender, ``DeepPot(..., compile=True)`` (compiled graphs,
:mod:`lamkit.infer.compiled`); its one-off compilation happens in the warm-up and is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from water_models import MODELS, reference_checkpoint, water_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "water"


def train_reference(model: str, data: Path, workdir: Path, env: dict) -> Path:
    """One reference training step of the ``model`` water config."""
    return reference_checkpoint(water_config(model, data, 1), workdir, env)


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
    a = p.parse_args(argv)

    # the same thread settings for both; set before torch/deepmd are imported
    os.environ.update(
        OMP_NUM_THREADS=str(a.threads),
        MKL_NUM_THREADS=str(a.threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(a.threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
        NUM_WORKERS="0",
    )
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    data = a.data.resolve()
    ckpt = a.ckpt
    if ckpt is None:
        work = (a.workdir or Path(tempfile.mkdtemp(prefix="bench_infer_water_"))).resolve()
        print(f"# training the reference 1 step in {work} ...", flush=True)
        ckpt = train_reference(a.model, data, work, dict(os.environ))
    ckpt = ckpt.resolve()

    d3 = data / "data_3"
    coord = np.load(d3 / "set.000" / "coord.npy")[:1].astype(np.float64)
    box = np.load(d3 / "set.000" / "box.npy")[:1].astype(np.float64)
    atype = np.loadtxt(d3 / "type.raw", dtype=np.int64).reshape(-1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deepmd.infer import DeepPot as RefDeepPot

        from lamkit.infer.deep_pot import DeepPot as LamDeepPot

        t0 = time.perf_counter()
        ref = RefDeepPot(str(ckpt))
        t_ref_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        lam = LamDeepPot(str(ckpt))
        t_lam_load = time.perf_counter() - t0

        calls = {
            "lamkit": lambda: lam.eval(coord, box, atype),
            "deepmd": lambda: ref.eval(coord, box, atype),
        }
        if a.compile:
            lamc = LamDeepPot(str(ckpt), compile=True)
            calls["lamkit-compiled"] = lambda: lamc.eval(coord, box, atype)
        outputs, t_warm = {}, {}
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(max(1, a.warmup)):
                outputs[name] = fn()
            t_warm[name] = time.perf_counter() - t0

        wall = {n: [] for n in calls}
        cpu = {n: 0.0 for n in calls}
        load_before = os.getloadavg()
        nblocks = max(1, a.evals // a.block)
        for b in range(nblocks):
            order = list(calls) if b % 2 == 0 else list(calls)[::-1]
            for name in order:
                fn = calls[name]
                c0 = time.process_time()
                for _ in range(a.block):
                    t0 = time.perf_counter()
                    fn()
                    wall[name].append(time.perf_counter() - t0)
                cpu[name] += time.process_time() - c0
        load_after = os.getloadavg()

    names = ("energy", "force", "virial")
    diffs = {}
    for tool in (t for t in calls if t != "deepmd"):
        for n, r, g in zip(names, outputs["deepmd"], outputs[tool]):
            r = np.asarray(r, dtype=np.float64)
            g = np.asarray(g, dtype=np.float64).reshape(r.shape)
            diffs[f"{tool} {n}"] = float(np.abs(r - g).max() / max(np.abs(r).max(), 1e-300))

    n_each = nblocks * a.block
    print(f"# model {a.model}, checkpoint {ckpt}")
    print(
        f"# one frame of {len(atype)} atoms, {n_each} evals each (blocks of {a.block}, "
        f"alternating order), {a.warmup} warm-up calls, {a.threads} threads, "
        f"torch {torch.__version__}"
    )
    print(f"# load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"# model load: lamkit {t_lam_load:.2f} s, deepmd {t_ref_load:.2f} s")
    print("# warm-up: " + ", ".join(f"{n} {t:.1f} s" for n, t in t_warm.items()))
    print("| | mean ms/eval | median ms/eval | min ms/eval | CPU ms/eval |")
    print("|---|---|---|---|---|")
    stats = {}
    for name in calls:
        w = np.array(wall[name]) * 1e3
        stats[name] = (w.mean(), np.median(w), w.min(), cpu[name] * 1e3 / n_each)
        print(
            f"| {name} | {stats[name][0]:.1f} | {stats[name][1]:.1f} | {stats[name][2]:.1f} | "
            f"{stats[name][3]:.1f} |"
        )
    for tool in (t for t in calls if t != "deepmd"):
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
