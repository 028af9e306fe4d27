#!/usr/bin/env python3
"""Training benchmark: lamkit vs the reference DeePMD-kit on the water examples.

Both tools train the same config (``--model``: se_e2_a, the classic example of spec §8.4, or a
preset of the reference's water examples: se_e3_tebd, dpa1, dpa2-small/medium/large, spec §8.1-8.2;
data_0-2 training with batch size 1, data_3 validation with one batch, seed 10, ``--steps``
steps, ``disp_freq = steps/10``, ``save_freq = steps``; see water_models.py),
one after the other, as subprocesses with the same environment
(``OMP_NUM_THREADS``/``DP_INTRA_OP_PARALLELISM_THREADS`` = ``--threads``, ``NUM_WORKERS=0`` so the
reference uses no data-loader worker processes). Reported per tool:

* s/100 steps from the tool's own "average training time" log line (first steps excluded) and
  from the wall time of the whole process (start-up, statistics and validation included).
  The two log lines differ: lamkit times the training steps alone, the reference the wall
  time between display lines, so its figure includes the validation batch at every display.
  The "display intervals" row measures lamkit the reference's way (from its ``s since last``
  log fields) and is the fair one for ratios;
* CPU time (user+sys) of the process per 100 steps, which is less sensitive to other load;
* peak RSS (``/usr/bin/time -v``, else ``getrusage(RUSAGE_CHILDREN)``);
* energy-per-atom and force RMSE of the final model on data_3 (``lam test`` / ``dp --pt test``,
  each tool on its own model).

The reference computes neighbour statistics before training unless ``--skip-neighbor-stat``;
lamkit does not need them with an explicit ``sel``, so by default the reference skips them too
(``--dp-neighbor-stat`` keeps them). Exits non-zero only if a run fails.

    python3 benchmarks/bench_train_water.py --steps 300
    python3 benchmarks/bench_train_water.py --model dpa2-medium --steps 50
    python3 benchmarks/bench_train_water.py --model dpa2-medium --steps 30 --compile

``--compile`` adds a third run, ``lamc``: lamkit with ``training.enable_compile`` (energy, forces
and virial through one compiled graph, :mod:`lamkit.train.compiled`); its log average excludes
the first two steps, so the one-off compilation shows only in the process wall and CPU time.
``--device cuda`` trains both tools on the GPU (``cpu``, the default, hides any GPU from both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import malloc_env  # noqa: E402
from water_models import MODELS, water_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "water"


def bench_env(threads: int, malloc_tune: bool) -> dict:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
        NUM_WORKERS="0",
    )
    if malloc_tune:
        env.update(malloc_env())
    return env


_TIME_V = Path("/usr/bin/time").exists()


def run(cmd: list[str], cwd: Path, log: Path, env: dict) -> dict:
    """Run ``cmd``; wall, CPU and peak RSS of it (its own children included)."""
    timefile = log.with_suffix(".time")
    full = (["/usr/bin/time", "-v", "-o", str(timefile)] + cmd) if _TIME_V else cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.call(full, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = {
        "rc": rc,
        "wall": wall,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "rss_mb": after.ru_maxrss / 1024.0,
        "rss_src": "getrusage (max over children)",
    }
    if _TIME_V and timefile.exists():
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", timefile.read_text())
        if m:
            res["rss_mb"] = int(m.group(1)) / 1024.0
            res["rss_src"] = "/usr/bin/time -v"
    if rc != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        print(
            f"FAILED (rc {rc}): {' '.join(cmd)}\n--- last lines of {log} ---\n{text[-3000:]}",
            file=sys.stderr,
        )
    return res


def avg_step_time(text: str) -> float | None:
    m = re.findall(r"average training time:\s*([0-9.eE+-]+)\s*s/", text)
    return float(m[-1]) if m else None


def interval_step_time(text: str, disp_freq: int) -> float | None:
    """lamkit's seconds per step measured as the reference measures its "average training
    time": wall time between display lines (so the validation at each display counts),
    leaving out the intervals that end within the first ``disp_freq`` steps."""
    rows = re.findall(r"step (\d+)/\d+:.*?([0-9.]+) s since last", text)
    total, steps, last = 0.0, 0, None
    for step, secs in ((int(a), float(b)) for a, b in rows):
        if last is not None and step - 1 >= disp_freq:
            total, steps = total + secs, steps + step - last
        last = step
    return total / steps if steps else None


def test_rmse(text: str) -> dict:
    out = {}
    for key, pat in (
        ("rmse_ea", r"Energy RMSE/Natoms\s*:\s*(\S+)"),
        ("rmse_f", r"Force\s+RMSE\s*:\s*(\S+)"),
    ):
        m = re.findall(pat, text)
        out[key] = float(m[-1]) if m else float("nan")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="se_e2_a", choices=MODELS)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="water data folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None, help="keep the runs here")
    p.add_argument("--order", default=None, help="run order, e.g. dp,lam (default lam,lamc,dp)")
    p.add_argument("--compile", action="store_true", help="also lamkit with enable_compile")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--malloc-tune",
        action="store_true",
        help="lamkit's malloc settings (MALLOC_MMAP_MAX_=0, no trimming) for both tools",
    )
    p.add_argument(
        "--dp-neighbor-stat",
        action="store_true",
        help="let the reference compute neighbour statistics (slower start)",
    )
    p.add_argument("--test-frames", type=int, default=0, help="data_3 frames to test (0 = all)")
    p.add_argument(
        "--own-init",
        action="store_true",
        help="let each tool draw its own random initial weights (default: both start from one "
        "reference checkpoint made by a 1-step reference run, so accuracy compares training only)",
    )
    a = p.parse_args(argv)

    data = a.data.resolve()
    if not (data / "data_3").is_dir():
        print(f"no water data in {data}", file=sys.stderr)
        return 2
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench_train_water_"))
    work = work.resolve()
    env = bench_env(a.threads, a.malloc_tune)
    if a.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # both tools on the CPU even where a GPU is present
    conf = water_config(a.model, data, a.steps)
    tools = {
        "lam": [sys.executable, "-m", "lamkit.cli.main", "train", "input.json"]
        + ["--device", a.device],
        "dp": [sys.executable, "-m", "deepmd", "--pt", "train", "input.json"]
        + ([] if a.dp_neighbor_stat else ["--skip-neighbor-stat"]),
    }
    if a.compile:
        tools["lamc"] = list(tools["lam"])
    testers = {
        "lam": [sys.executable, "-m", "lamkit.cli.main", "test"],
        "dp": [sys.executable, "-m", "deepmd", "--pt", "test"],
    }
    testers["lamc"] = testers["lam"]
    if not a.own_init:
        init = work / "init"
        init.mkdir(parents=True, exist_ok=True)
        iconf = water_config(a.model, data, 1)
        (init / "input.json").write_text(json.dumps(iconf, indent=1))
        print("## making the common initial weights (1 reference step) ...", flush=True)
        r0 = run(tools["dp"], init, init / "train.log", env)
        if r0["rc"] != 0:
            return 1
        for tool in tools:
            tools[tool] = tools[tool] + ["--init-model", str(init / "model.ckpt-1.pt")]
    order = [t.strip() for t in (a.order or "lam,lamc,dp").split(",") if t.strip()]
    order = [t for t in order if t in tools]
    print(f"# water {a.model}, {a.steps} steps, {a.threads} threads, {a.device}, work dir {work}")
    print(f"# python {sys.version.split()[0]}, load average {os.getloadavg()}")
    results, failed = {}, False
    for tool in order:
        wd = work / tool
        wd.mkdir(parents=True, exist_ok=True)
        tconf = json.loads(json.dumps(conf))
        if tool == "lamc":
            tconf["training"]["enable_compile"] = True
        (wd / "input.json").write_text(json.dumps(tconf, indent=1))
        print(f"## {tool}: training ...", flush=True)
        r = run(tools[tool], wd, wd / "train.log", env)
        text = (wd / "train.log").read_text(encoding="utf-8", errors="replace")
        r["avg"] = avg_step_time(text)
        if tool != "dp":
            r["interval"] = interval_step_time(text, conf["training"]["disp_freq"])
        ckpt = wd / f"model.ckpt-{a.steps}.pt"
        if r["rc"] != 0 or not ckpt.exists():
            failed = True
            results[tool] = r
            continue
        print(f"## {tool}: testing on data_3 ...", flush=True)
        cmd = testers[tool] + [
            "-m",
            str(ckpt),
            "-s",
            str(data / "data_3"),
            "-n",
            str(a.test_frames),
        ]
        t = run(cmd, wd, wd / "test.log", env)
        if t["rc"] != 0:
            failed = True
        r.update(test_rmse((wd / "test.log").read_text(encoding="utf-8", errors="replace")))
        r["test_wall"] = t["wall"]
        results[tool] = r
        per100 = 100.0 / a.steps
        avg = "n/a" if r["avg"] is None else f"{100 * r['avg']:.1f}"
        print(
            f"   {tool}: log avg {avg} s/100 steps, wall {r['wall']:.1f} s "
            f"({r['wall'] * per100:.1f} s/100 steps incl. start-up), CPU {r['cpu']:.1f} s, "
            f"peak RSS {r['rss_mb']:.0f} MB, load {r['load_before']:.2f}->"
            f"{r['load_after']:.2f}; test: rmse_e/atom {r['rmse_ea']:.3e} eV, "
            f"rmse_f {r['rmse_f']:.3e} eV/A",
            flush=True,
        )

    per100 = 100.0 / a.steps
    cols = [t for t in order if t in results]
    rows = [
        (
            "s/100 steps (tool log average)",
            lambda r: "n/a" if r.get("avg") is None else f"{100 * r['avg']:.2f}",
        ),
        (
            "s/100 steps (display intervals, validation included, as the reference's log)",
            lambda r: f"{100 * r['avg']:.2f}"
            if "interval" not in r and r.get("avg")
            else ("n/a" if r.get("interval") is None else f"{100 * r['interval']:.2f}"),
        ),
        ("s/100 steps (process wall, incl. start-up)", lambda r: f"{r['wall'] * per100:.2f}"),
        ("CPU s/100 steps (user+sys)", lambda r: f"{r['cpu'] * per100:.2f}"),
        ("total wall of training (s)", lambda r: f"{r['wall']:.1f}"),
        ("peak RSS (MB)", lambda r: f"{r['rss_mb']:.0f}"),
        (
            "load average before -> after",
            lambda r: f"{r['load_before']:.2f} -> {r['load_after']:.2f}",
        ),
        ("data_3 energy RMSE/atom (eV)", lambda r: f"{r.get('rmse_ea', float('nan')):.4e}"),
        ("data_3 force RMSE (eV/A)", lambda r: f"{r.get('rmse_f', float('nan')):.4e}"),
    ]
    print()
    print("| metric | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, fmt in rows:
        print(f"| {name} | " + " | ".join(fmt(results[c]) for c in cols) + " |")
    for mine, label in (("lam", "lamkit"), ("lamc", "lamkit compiled")):
        if mine not in results or "dp" not in results:
            continue
        lam, ref = results[mine], results["dp"]
        if lam.get("avg") and ref.get("avg"):
            print(f"\nratio reference/{label} (log average): {ref['avg'] / lam['avg']:.2f}")
        if lam.get("interval") and ref.get("avg"):
            print(
                f"ratio reference/{label} (display intervals, both with validation): "
                f"{ref['avg'] / lam['interval']:.2f}"
            )
        print(f"ratio reference/{label} (process wall): {ref['wall'] / lam['wall']:.2f}")
        print(f"ratio reference/{label} (CPU time): {ref['cpu'] / lam['cpu']:.2f}")
    if results.get("lam", {}).get("avg") and results.get("lamc", {}).get("avg"):
        speedup = results["lam"]["avg"] / results["lamc"]["avg"]
        print(f"ratio lamkit eager/compiled (log average): {speedup:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
