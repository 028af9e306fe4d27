"""Float32 against float64 for DPA-2 small and a small DPA-3: speed and accuracy at equal steps.

For each model the same input (the built-in Cu-Au example data of ``lam example``, same seed,
same weights at step 0, same number of steps) is trained once with ``precision: float64`` and
once with ``float32`` in descriptor and fitting. Printed per run: the trainer's own loop rate
and the validation energy and force RMSEs of the trained model on the example's validation
system. Then the two trained models are timed side by side, in blocks whose order alternates
(a shared machine's load hits both alike): seconds per training step (energy + force + virial
loss, backward, Adam) and per ``DeepPot.eval`` (energy, forces, virial) of one validation frame.

    python benchmarks/bench_float32.py --steps 300
    python benchmarks/bench_float32.py --device cuda      # on a machine with a CUDA device

Accuracy after a few hundred steps is a learning-curve point, not converged accuracy: the
question is whether float32 follows the float64 curve.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, resolve_device  # noqa: E402

MODELS = ("dpa2_small", "dpa3_small")
PRECISIONS = ("float64", "float32")


class _RateLog(logging.Handler):
    """Keeps the trainer's last reported loop rate (the ``N steps/s`` of its display line)."""

    def __init__(self) -> None:
        super().__init__()
        self.rate: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"\| ([0-9.eE+-]+) steps/s", record.getMessage())
        if found:
            self.rate = float(found.group(1))


def model_section(name: str, precision: str) -> dict:
    """The preset's model for the example's Cu/Au type map, in ``precision``."""
    from lamkit.examples import TYPE_MAP
    from lamkit.presets import load_preset

    if name == "dpa2_small":
        model = load_preset("dpa2", "small")["model"]
    elif name == "dpa3_small":  # the water DPA-3 example at half depth and width
        model = load_preset("dpa3")["model"]
        rf = model["descriptor"]["repflow"]
        rf.update(n_dim=64, e_dim=32, a_dim=16, nlayers=3)
        model["fitting_net"]["neuron"] = [120, 120, 120]
    else:
        raise SystemExit(f"--models: unknown model '{name}'; choose from {', '.join(MODELS)}")
    model = copy.deepcopy(model)
    model["type_map"] = list(TYPE_MAP)
    model["descriptor"]["precision"] = precision
    model["fitting_net"]["precision"] = precision
    return model


def make_input(name: str, precision: str, data: Path, steps: int, seed: int = 0) -> dict:
    """``seed`` moves the model's initial weights and the batch order together (both precisions
    of one seed start from the same weights and see the same batches)."""
    from lamkit.examples import example_input

    train = [str(p) for p in sorted((data / "data").glob("train_*"))]
    conf = example_input(train, [str(data / "data" / "valid")], steps)
    conf["model"] = model_section(name, precision)
    if seed:
        for section in ("descriptor", "fitting_net"):
            conf["model"][section]["seed"] = 1 + seed
        conf["training"]["seed"] = 10 + seed
    conf["learning_rate"] = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": 50}
    conf["training"].update(disp_freq=steps, save_freq=steps)
    conf["training"]["training_data"]["batch_size"] = 1
    return conf


def run_one(name: str, precision: str, data: Path, args, device, out: Path) -> dict:
    import torch

    from lamkit.infer.deep_pot import DeepPot
    from lamkit.infer.metrics import run_test
    from lamkit.train.trainer import Trainer

    conf = make_input(name, precision, data, args.steps, args.seed)
    torch.manual_seed(args.seed)
    rate, log = _RateLog(), logging.getLogger("lamkit.train")
    saved = log.level, log.propagate
    log.addHandler(rate)
    log.setLevel(logging.INFO)
    log.propagate = False  # the progress lines are read, not printed
    try:
        t0 = time.perf_counter()
        ckpt = Trainer(conf, out, device=str(device)).run()
        wall = time.perf_counter() - t0
    finally:
        log.removeHandler(rate)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    res = run_test(DeepPot(ckpt, device=device), str(data / "data" / "valid"))["average"]
    row = {
        "model": name,
        "precision": precision,
        "seed": args.seed,
        "steps": args.steps,
        "ckpt": str(ckpt),
        "trainer_s_per_step": None if rate.rate is None else 1.0 / rate.rate,
        "train_wall_s": wall,
        "rmse_e_per_atom": float(res["rmse_ea"]),
        "rmse_f": float(res["rmse_f"]),
    }
    print(
        f"{name:11s} {precision}: trainer loop {row['trainer_s_per_step']:.3f} s/step, "
        f"valid RMSE E {row['rmse_e_per_atom'] * 1e3:.2f} meV/atom, "
        f"F {row['rmse_f'] * 1e3:.1f} meV/A",
        flush=True,
    )
    return row


def interleaved_timing(rows: list[dict], data: Path, args, device) -> None:
    """Seconds per training step (energy + force + virial loss and its backward, then an Adam
    step) on one validation frame and per ``DeepPot.eval`` of it, for the trained float64 and
    float32 models, in blocks whose order alternates so that load changes on a shared machine
    hit both precisions alike. Adds ``train_s_per_step`` and ``infer_s_per_eval`` to rows."""
    import numpy as np
    import torch

    from lamkit.infer.deep_pot import DeepPot
    from lamkit.model import load_model
    from lamkit.train.loss import build_loss

    valid = data / "data" / "valid" / "set.000"
    coord = np.load(valid / "coord.npy")[:1]
    cell = np.load(valid / "box.npy")[:1]
    atype = np.loadtxt(valid.parent / "type.raw", dtype=np.int64).reshape(1, -1)
    batch = {
        "energy": torch.as_tensor(np.load(valid / "energy.npy")[:1].reshape(1, 1), device=device),
        "force": torch.as_tensor(np.load(valid / "force.npy")[:1].reshape(1, -1, 3), device=device),
        "virial": torch.as_tensor(np.load(valid / "virial.npy")[:1].reshape(1, 9), device=device),
        "find_energy": 1.0,
        "find_force": 1.0,
        "find_virial": 1.0,
    }
    c_t = torch.as_tensor(coord.reshape(1, -1, 3), device=device)
    a_t = torch.as_tensor(atype, device=device)
    b_t = torch.as_tensor(cell.reshape(1, 9), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    loss_fn = build_loss(make_input("dpa2_small", "float64", data, 1)["loss"], 1e-3)
    runs = {}
    for row in rows:
        model = load_model(row["ckpt"]).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        nbr = model.neighbor_builder()(c_t, a_t, b_t)
        dp = DeepPot(row["ckpt"], device=device)

        def step(model=model, opt=opt, nbr=nbr):
            opt.zero_grad()
            loss, _ = loss_fn(model(c_t, a_t, b_t, nbr, create_graph=True), batch, 1e-4)
            loss.backward()
            opt.step()

        def infer(dp=dp):
            dp.eval(coord, cell, atype[0])

        for _ in range(2):  # warm-up
            step()
            infer()
        runs[row["precision"]] = (row, step, infer)
    totals = {k: [0.0, 0.0] for k in runs}
    order = list(runs)
    for b in range(args.blocks):
        for prec in order if b % 2 == 0 else order[::-1]:
            _, step, infer = runs[prec]
            sync()
            t0 = time.perf_counter()
            for _ in range(args.block_steps):
                step()
            sync()
            t1 = time.perf_counter()
            for _ in range(args.block_evals):
                infer()
            sync()
            totals[prec][0] += t1 - t0
            totals[prec][1] += time.perf_counter() - t1
    for prec, (row, _, _) in runs.items():
        row["train_s_per_step"] = totals[prec][0] / (args.blocks * args.block_steps)
        row["infer_s_per_eval"] = totals[prec][1] / (args.blocks * args.block_evals)
        print(
            f"{row['model']:11s} {prec}: {row['train_s_per_step']:.3f} s/train step, "
            f"{row['infer_s_per_eval'] * 1e3:.1f} ms/eval ({atype.size} atoms; interleaved)",
            flush=True,
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, default=200, help="training steps of every run")
    p.add_argument("--blocks", type=int, default=6, help="interleaved timing blocks")
    p.add_argument("--block-steps", type=int, default=5, help="training steps per block")
    p.add_argument("--block-evals", type=int, default=10, help="inference calls per block")
    p.add_argument("--frames", type=int, default=40, help="example frames per system")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument("--workdir", type=Path, default=None, help="keep the data and runs here")
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    add_device_argument(p)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from lamkit.examples import write_example

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_float32_"))
    data = work / "example"
    if not (data / "data" / "valid").is_dir():
        write_example(data, nframes=args.frames, steps=args.steps)
    print(f"device {device}, {args.threads} threads, torch {torch.__version__}, data {data}")
    print(f"load average before {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for name in args.models:
        runs = [run_one(name, pr, data, args, device, work / name / pr) for pr in PRECISIONS]
        interleaved_timing(runs, data, args, device)
        rows += runs
    print(f"load average after {os.getloadavg()[0]:.2f}")
    for name in args.models:
        r64, r32 = (
            next(r for r in rows if r["model"] == name and r["precision"] == pr)
            for pr in PRECISIONS
        )
        train = r32["train_s_per_step"] / r64["train_s_per_step"]
        infer = r32["infer_s_per_eval"] / r64["infer_s_per_eval"]
        print(
            f"{name}: float32/float64 train time {train:.2f}, infer time {infer:.2f}, "
            f"force RMSE {r32['rmse_f'] / r64['rmse_f']:.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
