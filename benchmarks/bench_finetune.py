#!/usr/bin/env python3
"""Multi-task pretraining, fine-tuning and replay: what pretraining buys and what replay keeps.

1. Pretrain a two-task model: task ``water`` (water data_0 + data_1) and task ``alloy`` (the
   built-in Cu-Au EMT example data, :mod:`lamkit.examples`) sharing one DPA-1 descriptor, type map
   [O, H, Cu, Au]; test each head (water data_3, alloy validation set) and freeze the water head.
2. Fine-tune from the ``water`` head onto water data_2 (type map [O, H]) for ``--steps`` steps,
   and train the same model from scratch for the same steps; test both on data_3.
3. Forgetting: fine-tune from the ``water`` head on data_2 keeping the full type map, once plain
   and once with ``training.replay`` (``--replay-frames`` alloy frames chosen by farthest-point
   sampling, head ``alloy``, probability ``--replay-prob``); then test the alloy head on the
   alloy validation set: the pretrained alloy fitting on the fine-tuned descriptor (plain run)
   versus the replay head (replay run), next to the pretrained model's own alloy error.

Everything runs in this process with ``--threads`` threads; results are printed as a table and
written as JSON (``--json``).

    python3 benchmarks/bench_finetune.py --pre-steps 2000 --steps 300
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WATER = REPO / ".." / "shared" / "data" / "water"

DESCRIPTOR = {
    "type": "dpa1",
    "sel": 120,
    "rcut": 6.0,
    "rcut_smth": 0.5,
    "neuron": [16, 32, 64],
    "axis_neuron": 8,
    "tebd_dim": 16,  # not ntypes or 2 ntypes for 2 or 4 types (no residual type embedding)
    "attn_layer": 0,
    "type_one_side": True,
    "precision": "float32",
    "seed": 1,
}
FITTING = {"neuron": [64, 64, 64], "resnet_dt": True, "precision": "float32", "seed": 1}
WATER_LOSS = {
    "type": "ener",
    "start_pref_e": 0.02,
    "limit_pref_e": 1,
    "start_pref_f": 1000,
    "limit_pref_f": 1,
}
ALLOY_LOSS = {**WATER_LOSS, "start_pref_v": 0.02, "limit_pref_v": 1}
TYPE_MAP = ["O", "H", "Cu", "Au"]


def lr(steps: int, start: float = 1e-3, stop: float = 1e-5) -> dict:
    return {"type": "exp", "start_lr": start, "stop_lr": stop, "decay_steps": max(steps // 20, 1)}


def training(steps: int, **data) -> dict:
    return {
        **data,
        "numb_steps": steps,
        "seed": 10,
        "disp_freq": max(steps // 10, 1),
        "save_freq": steps,
    }


def pretrain_config(water: Path, alloy: list[Path], steps: int) -> dict:
    branch = {"type_map": "types", "descriptor": "desc"}
    return {
        "model": {
            "shared_dict": {"types": list(TYPE_MAP), "desc": copy.deepcopy(DESCRIPTOR)},
            "model_dict": {
                "water": {**branch, "fitting_net": dict(FITTING)},
                "alloy": {**branch, "fitting_net": {**FITTING, "seed": 2}},
            },
        },
        "learning_rate": lr(steps),
        "loss_dict": {"water": dict(WATER_LOSS), "alloy": dict(ALLOY_LOSS)},
        "training": training(
            steps,
            data_dict={
                "water": {
                    "training_data": {
                        "systems": [str(water / "data_0"), str(water / "data_1")],
                        "batch_size": 1,
                    }
                },
                "alloy": {"training_data": {"systems": [str(p) for p in alloy], "batch_size": 1}},
            },
        ),
    }


def water_config(water: Path, steps: int, type_map=("O", "H")) -> dict:
    return {
        "model": {
            "type_map": list(type_map),
            "descriptor": copy.deepcopy(DESCRIPTOR),
            "fitting_net": dict(FITTING),
        },
        "learning_rate": lr(steps),
        "loss": dict(WATER_LOSS),
        "training": training(
            steps, training_data={"systems": [str(water / "data_2")], "batch_size": 1}
        ),
    }


DEVICE = "cpu"  # --device, set by main()


def test(model, system: Path) -> dict:
    """Per-atom energy RMSE (meV/atom) and force RMSE (meV/Å) of ``model`` on ``system``."""
    from lamkit.infer import DeepPot
    from lamkit.infer.metrics import run_test

    avg = run_test(DeepPot(model, device=DEVICE), str(system))["average"]
    return {"rmse_e_meV_atom": 1e3 * avg["rmse_ea"], "rmse_f_meV_A": 1e3 * avg["rmse_f"]}


def train(config: dict, out: Path, **kw) -> tuple[Path, float]:
    from lamkit.train import Trainer

    t0 = time.perf_counter()
    ckpt = Trainer(config, out, device=DEVICE, **kw).run()
    return ckpt, time.perf_counter() - t0


def with_descriptor(head_model, descriptor_source):
    """``head_model`` with the descriptor weights of ``descriptor_source`` (same architecture)."""
    state = head_model.state_dict()
    for k, v in descriptor_source.state_dict().items():
        if k.startswith("descriptor."):
            state[k] = v
    head_model.load_state_dict(state)
    return head_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--water", type=Path, default=DEFAULT_WATER)
    ap.add_argument("--pre-steps", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning / scratch steps")
    ap.add_argument("--replay-frames", type=int, default=40)
    ap.add_argument("--replay-prob", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--json", type=Path, default=None)
    add_device_argument(ap)
    args = ap.parse_args()
    global DEVICE
    DEVICE = str(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from lamkit.examples import write_example
    from lamkit.model import load_model

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_finetune_"))
    water = args.water.resolve()
    if not (water / "data_3").exists():
        sys.exit(f"no water data under {water} (use --water)")
    ex = write_example(work / "alloy", nframes=40)
    alloy = [ex / "data" / "train_0", ex / "data" / "train_1"]
    alloy_valid = ex / "data" / "valid"
    res: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    def log(msg):
        print(msg, flush=True)

    # 1. multi-task pretraining
    pre, secs = train(pretrain_config(water, alloy, args.pre_steps), work / "pretrain")
    res["pretrain_s"] = secs
    res["pretrained_water_head"] = test(load_model(pre, head="water"), water / "data_3")
    res["pretrained_alloy_head"] = test(load_model(pre, head="alloy"), alloy_valid)
    from lamkit.infer import freeze

    freeze(pre, work / "water_head.pth", head="water")
    log(f"pretrained {args.pre_steps} steps in {secs:.0f} s: {res['pretrained_water_head']}")

    # 2. fine-tuning vs scratch on data_2, tested on data_3
    from lamkit.train import Trainer

    zero = Trainer(
        water_config(water, 0),
        work / "ft0",
        finetune=str(pre),
        model_branch="water",
        device=DEVICE,
    )
    res["finetune_0_steps"] = test(zero.model, water / "data_3")  # bias refit only
    ft, secs_ft = train(
        water_config(water, args.steps), work / "ft", finetune=str(pre), model_branch="water"
    )
    res["finetune"] = test(load_model(ft), water / "data_3")
    sc, secs_sc = train(water_config(water, args.steps), work / "scratch")
    res["scratch"] = test(load_model(sc), water / "data_3")
    res["finetune_s"], res["scratch_s"] = secs_ft, secs_sc
    log(f"fine-tune {res['finetune']} vs scratch {res['scratch']}")

    # 3. forgetting, with and without replay
    full = water_config(water, args.steps, type_map=TYPE_MAP)
    plain, _ = train(copy.deepcopy(full), work / "plain", finetune=str(pre), model_branch="water")
    replay_conf = copy.deepcopy(full)
    replay_conf["training"]["replay"] = {
        "systems": [str(p) for p in alloy],
        "nframes": args.replay_frames,
        "selection": "fps",
        "prob": args.replay_prob,
        "head": "alloy",
    }
    rep, _ = train(replay_conf, work / "replay", finetune=str(pre), model_branch="water")
    forgot = with_descriptor(load_model(pre, head="alloy"), load_model(plain))
    res["alloy_after_plain_finetune"] = test(forgot, alloy_valid)
    res["alloy_after_replay_finetune"] = test(load_model(rep, head="replay"), alloy_valid)
    res["water_after_plain_finetune"] = test(load_model(plain), water / "data_3")
    res["water_after_replay_finetune"] = test(load_model(rep), water / "data_3")

    rows = [
        ("pretrained water head, data_3", res["pretrained_water_head"]),
        ("fine-tuned 0 steps (bias refit only), data_3", res["finetune_0_steps"]),
        (f"fine-tuned {args.steps} steps (from water head), data_3", res["finetune"]),
        (f"from scratch {args.steps} steps, data_3", res["scratch"]),
        ("pretrained alloy head, alloy valid", res["pretrained_alloy_head"]),
        ("alloy head after plain fine-tune, alloy valid", res["alloy_after_plain_finetune"]),
        ("alloy head after replay fine-tune, alloy valid", res["alloy_after_replay_finetune"]),
        ("plain fine-tune, data_3", res["water_after_plain_finetune"]),
        ("replay fine-tune, data_3", res["water_after_replay_finetune"]),
    ]
    log(f"\n{'model, test set':<52} {'E meV/atom':>11} {'F meV/A':>9}")
    for name, r in rows:
        log(f"{name:<52} {r['rmse_e_meV_atom']:>11.2f} {r['rmse_f_meV_A']:>9.1f}")
    ratio = res["scratch"]["rmse_f_meV_A"] / res["finetune"]["rmse_f_meV_A"]
    keep = res["alloy_after_plain_finetune"]["rmse_f_meV_A"] / max(
        res["alloy_after_replay_finetune"]["rmse_f_meV_A"], 1e-12
    )
    log(f"\nforce RMSE scratch / fine-tuned: {ratio:.2f}x")
    log(f"alloy force RMSE plain / replay fine-tuning: {keep:.2f}x")
    res["ratio_scratch_over_finetune_f"] = ratio
    res["ratio_plain_over_replay_alloy_f"] = keep
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    log(f"runs in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
