#!/usr/bin/env python3
"""Property benchmark: lamkit vs the reference DeePMD-kit on the QM9-like property example.

Both tools train the reference's property example (spec §8.3: DPA-1 descriptor with
``attn_layer`` 0, ``property`` fitting of the 3 intensive columns of ``band_prop`` = [HOMO,
LUMO, gap] in Hartree, smooth-MAE loss, lr 2e-4 -> 3.51e-8, gradient clipping 5; data_0 and
data_1 for training, data_2 for validation, batch size 1, seed 10) for ``--steps`` steps, one
after the other, as subprocesses with the same environment (``--threads`` threads,
``NUM_WORKERS=0``). By default both start from one set of initial weights and statistics: a
1-step reference run makes a checkpoint that both load with ``--init-model``, so the errors
compare the training itself (``--own-init``: each tool draws its own weights and computes its
own statistics). Then ``dp --pt test -d`` / ``lam test -d`` on data_2 give the MAE of each
column, read from the detail files. Reported: MAE per column and overall, s/step from each
tool's "average training time" log line, process wall and CPU time, and the ratios.

    python3 benchmarks/bench_property.py --steps 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, device_env, resolve_device  # noqa: E402
from bench_train_water import avg_step_time, bench_env, run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "property"
COLUMNS = ("HOMO", "LUMO", "gap")


def property_config(data: Path, steps: int) -> dict:
    """The reference's examples/property/train/input_torch.json (v3.1+), ``steps`` long."""
    return {
        "model": {
            "type_map": ["H", "C", "N", "O"],
            "descriptor": {
                "type": "dpa1",
                "sel": 120,
                "rcut_smth": 0.5,
                "rcut": 6.0,
                "neuron": [25, 50, 100],
                "tebd_dim": 8,
                "axis_neuron": 16,
                "type_one_side": True,
                "attn": 128,
                "attn_layer": 0,
                "attn_dotr": True,
                "attn_mask": False,
                "activation_function": "tanh",
                "scaling_factor": 1.0,
                "normalize": True,
                "temperature": 1.0,
            },
            "fitting_net": {
                "type": "property",
                "intensive": True,
                "task_dim": 3,
                "property_name": "band_prop",
                "neuron": [240, 240, 240],
                "resnet_dt": True,
                "seed": 1,
            },
        },
        "learning_rate": {
            "type": "exp",
            "decay_steps": 5000,
            "start_lr": 0.0002,
            "stop_lr": 3.51e-08,
        },
        "loss": {"type": "property", "metric": ["mae"], "loss_func": "smooth_mae", "beta": 1.0},
        "training": {
            "training_data": {
                "systems": [str(data / "data_0"), str(data / "data_1")],
                "batch_size": 1,
            },
            "validation_data": {"systems": [str(data / "data_2")], "batch_size": 1},
            "numb_steps": steps,
            "gradient_max_norm": 5.0,
            "seed": 10,
            "disp_file": "lcurve.out",
            "disp_freq": max(1, steps // 10),
            "save_freq": steps,
        },
    }


def column_mae(tool: str, wd: Path) -> np.ndarray | None:
    """MAE of each column on the tested frames, from the tool's detail files."""
    if tool == "lam":
        path = wd / "det.property.out"
        if not path.exists():
            return None
        table = np.loadtxt(path, ndmin=2)
        half = table.shape[1] // 2
        return np.abs(table[:, half:] - table[:, :half]).mean(0)
    files = sorted(wd.glob("det.property.out.*"), key=lambda p: int(p.suffix[1:]))
    if not files:
        return None
    rows = np.stack([np.loadtxt(f, ndmin=2) for f in files])  # [nf, task_dim, 2]
    return np.abs(rows[:, :, 1] - rows[:, :, 0]).mean(0)


def timing_runs(a, data: Path, work: Path, tools: dict, env: dict) -> dict:
    """``a.timing_runs`` short trainings per tool, alternating; median s/step of each tool."""
    vals: dict[str, list[float]] = {"lam": [], "dp": []}
    for k in range(a.timing_runs):
        for tool in ("lam", "dp") if k % 2 == 0 else ("dp", "lam"):
            wd = work / f"timing_{tool}_{k}"
            wd.mkdir(parents=True, exist_ok=True)
            conf = property_config(data, a.timing_steps)
            (wd / "input.json").write_text(json.dumps(conf, indent=1))
            r = run(tools[tool], wd, wd / "train.log", env)
            avg = avg_step_time((wd / "train.log").read_text(encoding="utf-8", errors="replace"))
            if r["rc"] == 0 and avg is not None:
                vals[tool].append(avg)
    return {t: (float(np.median(v)) if v else 0.0, v) for t, v in vals.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="property data folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None, help="keep the runs here")
    p.add_argument("--order", default="lam,dp", help="run order, e.g. dp,lam")
    p.add_argument("--test-frames", type=int, default=0, help="data_2 frames to test (0 = all)")
    p.add_argument("--own-init", action="store_true", help="each tool draws its own weights")
    p.add_argument(
        "--timing-runs",
        type=int,
        default=0,
        help="after the main runs, K more short trainings per tool, alternating lam/dp, for a "
        "median s/step that drifting machine load distorts less",
    )
    p.add_argument("--timing-steps", type=int, default=300, help="steps of each timing run")
    add_device_argument(p)
    a = p.parse_args(argv)
    device = resolve_device(a.device)

    data = a.data.resolve()
    if not (data / "data_2").is_dir():
        print(f"no property data in {data}", file=sys.stderr)
        return 2
    work = (a.workdir or Path(tempfile.mkdtemp(prefix="bench_property_"))).resolve()
    env = device_env(bench_env(a.threads, False), device)
    tools = {
        "lam": [sys.executable, "-m", "lamkit.cli.main", "train", "input.json"],
        "dp": [sys.executable, "-m", "deepmd", "--pt", "train", "input.json"],
    }
    testers = {
        "lam": [sys.executable, "-m", "lamkit.cli.main", "test"],
        "dp": [sys.executable, "-m", "deepmd", "--pt", "test"],
    }
    if not a.own_init:
        init = work / "init"
        init.mkdir(parents=True, exist_ok=True)
        (init / "input.json").write_text(json.dumps(property_config(data, 1), indent=1))
        print("## making the common initial weights (1 reference step) ...", flush=True)
        if run(tools["dp"] + ["--skip-neighbor-stat"], init, init / "train.log", env)["rc"]:
            return 1
        for tool in tools:
            tools[tool] = tools[tool] + ["--init-model", str(init / "model.ckpt-1.pt")]
    else:
        tools["dp"].append("--skip-neighbor-stat")  # lamkit needs none with an explicit sel
    order = [t.strip() for t in a.order.split(",") if t.strip()]
    print(f"# property example, {a.steps} steps, {a.threads} threads, device {device}")
    print(f"# work dir {work}")
    print(f"# python {sys.version.split()[0]}, load average {os.getloadavg()}")
    results, failed = {}, False
    for tool in order:
        wd = work / tool
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "input.json").write_text(json.dumps(property_config(data, a.steps), indent=1))
        print(f"## {tool}: training ...", flush=True)
        r = run(tools[tool], wd, wd / "train.log", env)
        r["avg"] = avg_step_time((wd / "train.log").read_text(encoding="utf-8", errors="replace"))
        ckpt = wd / f"model.ckpt-{a.steps}.pt"
        results[tool] = r
        if r["rc"] != 0 or not ckpt.exists():
            failed = True
            continue
        print(f"## {tool}: testing on data_2 ...", flush=True)
        for old in list(wd.glob("det.property.out*")):
            old.unlink()
        cmd = testers[tool] + ["-m", str(ckpt), "-s", str(data / "data_2")]
        cmd += ["-n", str(a.test_frames), "-d", "det"]
        if run(cmd, wd, wd / "test.log", env)["rc"] != 0:
            failed = True
        r["mae"] = column_mae(tool, wd)
        mae = "n/a" if r["mae"] is None else np.array2string(r["mae"], precision=5)
        avg = "n/a" if r["avg"] is None else f"{r['avg']:.4f}"
        print(f"   {tool}: {avg} s/step (log), wall {r['wall']:.1f} s, MAE per column {mae}")

    cols = [t for t in order if t in results]
    name = {"lam": "lamkit", "dp": "reference"}
    print()
    print("| metric | " + " | ".join(name[c] for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for k, col in enumerate(COLUMNS):
        vals = [results[c].get("mae") for c in cols]
        cells = ["n/a" if v is None else f"{v[k]:.5f}" for v in vals]
        print(f"| data_2 MAE {col} (Ha) | " + " | ".join(cells) + " |")
    vals = [results[c].get("mae") for c in cols]
    cells = ["n/a" if v is None else f"{v.mean():.5f}" for v in vals]
    print("| data_2 MAE, all columns (Ha) | " + " | ".join(cells) + " |")
    for label, fmt in (
        (
            "s/step (tool log average)",
            lambda r: "n/a" if r.get("avg") is None else f"{r['avg']:.4f}",
        ),
        ("process wall (s)", lambda r: f"{r['wall']:.1f}"),
        ("CPU time (s)", lambda r: f"{r['cpu']:.1f}"),
        ("peak RSS (MB)", lambda r: f"{r['rss_mb']:.0f}"),
        ("load before -> after", lambda r: f"{r['load_before']:.2f} -> {r['load_after']:.2f}"),
    ):
        print(f"| {label} | " + " | ".join(fmt(results[c]) for c in cols) + " |")
    lam, ref = results.get("lam", {}), results.get("dp", {})
    if a.timing_runs > 0:
        medians = timing_runs(a, data, work, tools, env)
        print(f"\n{a.timing_runs} alternating timing runs of {a.timing_steps} steps:")
        for tool, (med, vals) in medians.items():
            print(
                f"  {name[tool]}: median {med:.4f} s/step ({', '.join(f'{v:.4f}' for v in vals)})"
            )
        if all(m[0] for m in medians.values()):
            ratio = medians["dp"][0] / medians["lam"][0]
            print(f"ratio reference/lamkit s/step (median): {ratio:.2f}")
    if lam.get("avg") and ref.get("avg"):
        print(f"\nratio reference/lamkit s/step (log average): {ref['avg'] / lam['avg']:.2f}")
    if lam.get("cpu") and ref.get("cpu"):
        print(f"ratio reference/lamkit CPU time: {ref['cpu'] / lam['cpu']:.2f}")
    if lam.get("mae") is not None and ref.get("mae") is not None:
        ratio = np.array2string(lam["mae"] / ref["mae"], precision=3)
        print(f"ratio lamkit/reference MAE per column: {ratio}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
