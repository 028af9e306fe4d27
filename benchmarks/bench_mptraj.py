#!/usr/bin/env python3
"""Training at MPtraj data scale: lamkit vs the reference on the same generated dataset.

The data is the MPtraj-like set of ``make_mptraj_like.py`` (1.58 M frames, 444 mixed-type
systems, 89 elements).  Both tools train the same small DPA-1 (``--steps`` steps,
``batch_size: "auto:128"``, ``prob_sys_size``, energy + force + virial loss,
``data_stat_nbatch`` = ``--stat-nbatch``), each in its own process.  Reported per tool:

* time to first step: process start until the first training step has finished (imports, data
  opening, statistics, model build and the step itself);
* peak RSS of the process (``/usr/bin/time -v``) and, for lamkit, its anonymous/file split;
* steps/s after the first two steps, and the fraction of that time spent fetching batches
  (lamkit: ``MultiSystemSampler.next``; the reference: ``Trainer.get_data``).

    python3 benchmarks/make_mptraj_like.py --out /tmp/mptraj-like
    python3 benchmarks/bench_mptraj.py --data /tmp/mptraj-like --steps 30
    python3 benchmarks/bench_mptraj.py --data /tmp/mptraj-like --only lamkit --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_mptraj_like import ELEMENTS  # noqa: E402


def model_config(systems: list[str], steps: int, stat_nbatch: int) -> dict:
    """A small DPA-1 (one attention layer) with energy, force and virial loss."""
    from lamkit.presets import make_input

    conf = make_input("dpa1", None, systems, None, list(ELEMENTS), steps)
    desc = conf["model"]["descriptor"]
    desc.update(sel=120, rcut=6.0, rcut_smth=0.5, attn_layer=1, attn=64, neuron=[16, 32, 64])
    desc["axis_neuron"] = 8
    conf["model"]["fitting_net"]["neuron"] = [128, 128, 128]
    conf["model"]["data_stat_nbatch"] = stat_nbatch
    conf["loss"].update(start_pref_v=0.02, limit_pref_v=1.0)
    tr = conf["training"]
    tr.pop("validation_data", None)
    tr.pop("stat_file", None)
    tr["training_data"].update(batch_size="auto:128", auto_prob="prob_sys_size")
    tr.update(seed=1, disp_freq=max(1, steps), save_freq=steps)
    return conf


CHILD = r"""
import json, resource, sys, time
t_start = float(sys.argv[1]); tool = sys.argv[2]; conf = sys.argv[3]; device = sys.argv[4]
calls = []  # (start, end) wall time of every batch fetch

def timed(fn):
    def wrapper(*a, **k):
        t0 = time.time()
        out = fn(*a, **k)
        calls.append((t0, time.time()))
        return out
    return wrapper

if tool == "lamkit":
    from lamkit.data.loader import MultiSystemSampler
    MultiSystemSampler.next = timed(MultiSystemSampler.next)
    from lamkit.train.trainer import Trainer
    tr = Trainer(json.load(open(conf)), ".", device=None if device == "cpu" else device)
    tr.run()
else:
    from deepmd.pt.train.training import Trainer
    Trainer.get_data = timed(Trainer.get_data)
    from deepmd.main import main
    main(["--pt", "train", conf, "--skip-neighbor-stat"])
t_end = time.time()
status = {}
for line in open("/proc/self/status"):
    if line.startswith(("RssAnon", "RssFile", "VmHWM")):
        k, v = line.split(":")
        status[k] = int(v.split()[0]) / 1024
print("BENCH_JSON " + json.dumps({"start": t_start, "end": t_end, "calls": calls,
      "rss_mb": status}), flush=True)
"""


def summarize(info: dict) -> dict:
    calls = info["calls"]
    if len(calls) < 4:
        return {"error": f"only {len(calls)} batches fetched"}
    first_step = calls[1][0] - info["start"]  # the second fetch starts when step 1 is done
    steady = calls[2:]
    span = steady[-1][0] - steady[0][0]
    data = sum(e - s for s, e in steady[:-1])
    return {
        "time_to_first_step_s": round(first_step, 1),
        "steps_per_s": round((len(steady) - 1) / span, 3),
        "data_fraction": round(data / span, 4),
        "data_ms_per_step": round(1000 * data / (len(steady) - 1), 2),
    }


def run_tool(tool: str, conf: dict, workdir: Path, env: dict, device: str, timeout: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.json").write_text(json.dumps(conf, indent=1))
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-c",
        CHILD,
        repr(time.time()),
        tool,
        "input.json",
        device,
    ]
    t0 = time.time()
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"tool": tool, "error": f"timed out after {timeout} s"}
    wall = time.time() - t0
    (workdir / "log.txt").write_text(proc.stdout + proc.stderr)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    out = {"tool": tool, "wall_s": round(wall, 1), "rc": proc.returncode}
    if peak:
        out["peak_rss_mb"] = round(int(peak.group(1)) / 1024)
    line = next((s for s in proc.stdout.splitlines() if s.startswith("BENCH_JSON ")), None)
    if line is None:
        out["error"] = (proc.stdout + proc.stderr)[-1500:]
        return out
    info = json.loads(line[len("BENCH_JSON ") :])
    out.update(summarize(info))
    out["rss_at_end_mb"] = {k: round(v) for k, v in info["rss_mb"].items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("/tmp/mptraj-like"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--stat-nbatch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--only", choices=["lamkit", "reference"], default=None)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args()
    systems = sorted(str(d) for d in a.data.iterdir() if (d / "type.raw").is_file())
    if not systems:
        sys.exit(f"error: no deepmd systems in {a.data}; run make_mptraj_like.py first")
    size_gb = sum(f.stat().st_size for f in a.data.rglob("*.npy")) / 1e9
    print(f"data: {a.data}, {len(systems)} systems, {size_gb:.2f} GB of .npy", flush=True)
    env = dict(os.environ)
    t = str(a.threads)
    env.update(
        OMP_NUM_THREADS=t,
        MKL_NUM_THREADS=t,
        DP_INTRA_OP_PARALLELISM_THREADS=t,
        DP_INTER_OP_PARALLELISM_THREADS="1",
        NUM_WORKERS="0",
    )
    if a.device == "cuda":
        env["DEVICE"] = "gpu"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    conf = model_config(systems, a.steps, a.stat_nbatch)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_mptraj_") as tmp:
        for tool in ("lamkit", "reference"):
            if a.only and tool != a.only:
                continue
            print(f"running {tool} ... (load: {os.getloadavg()[0]:.1f})", flush=True)
            res = run_tool(tool, conf, Path(tmp) / tool, env, a.device, a.timeout)
            res["load_1min_after"] = round(os.getloadavg()[0], 1)
            print(json.dumps(res), flush=True)
            results.append(res)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
