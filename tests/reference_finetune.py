"""Reference (DeePMD-kit v3, PyTorch backend) side of the fine-tuning parity tests.

Everything here drives the installed reference package in subprocesses (``python -m deepmd
--pt ...``), one thread each, in caller-provided working folders, so that the reference's import
side effects stay out of the pytest process. The pieces:

* :func:`multitask_input` / :func:`make_reference_multitask`: a two-task water model (tasks
  ``water_a`` on data_0 and ``water_b`` on data_1) sharing one small DPA-2 descriptor, trained a
  few steps; its checkpoint is the pretrained model of the fine-tuning cases, and its
  ``lcurve.out`` header (:data:`MULTITASK_LCURVE_HEADER`) the per-task columns lamkit must write.
* :func:`single_task_input` / :func:`make_reference_single`: the same architecture trained as a
  single-task model on data_0 (pretrained model of case (e)).
* :func:`finetune_input` / :func:`reference_finetune`: ``dp --pt train --finetune`` with
  ``numb_steps`` 0. The reference then builds the model, loads the pretrained weights (the chosen
  branch, or a fresh fitting for RANDOM), adapts the type map, refits the energy bias and saves
  ``model.ckpt-0.pt`` without a single optimizer step: the model exactly as the reference has it
  at the start of fine-tuning.
* :func:`reference_energies`: energies and forces of a checkpoint with the reference's own
  ``deepmd.infer.DeepPot`` (in a subprocess).
* :data:`CASES` / :func:`run_case`: the fine-tuning cases (a)-(e).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from .conftest import SHARED_DATA

WATER = SHARED_DATA / "water"
TYPE_MAP = ["O", "H"]
DP = [sys.executable, "-m", "deepmd", "--pt"]
PREFIX = "model.{branch}.atomic_model."
TIMEOUT = 600

# A DPA-2 in the spirit of the small preset (presets/dpa2_small.json), shrunk so that a reference
# run on 192-atom water frames takes seconds on one thread.
DESCRIPTOR = {
    "type": "dpa2",
    "repinit": {
        "tebd_dim": 8,
        "rcut": 6.0,
        "rcut_smth": 0.5,
        "nsel": 30,
        "neuron": [8, 16],
        "axis_neuron": 4,
        "activation_function": "tanh",
        "use_three_body": True,
        "three_body_sel": 12,
        "three_body_rcut": 4.0,
        "three_body_rcut_smth": 3.5,
        "three_body_neuron": [2, 4],
    },
    "repformer": {
        "rcut": 4.0,
        "rcut_smth": 3.5,
        "nsel": 20,
        "nlayers": 2,
        "g1_dim": 32,
        "g2_dim": 16,
        "attn2_hidden": 16,
        "attn2_nhead": 2,
        "attn1_hidden": 32,
        "attn1_nhead": 2,
        "axis_neuron": 4,
        "update_h2": False,
        "update_g1_has_conv": True,
        "update_g1_has_grrg": True,
        "update_g1_has_drrd": True,
        "update_g1_has_attn": False,
        "update_g2_has_g1g1": False,
        "update_g2_has_attn": True,
        "update_style": "res_residual",
        "update_residual": 0.01,
        "update_residual_init": "norm",
        "attn2_has_gate": True,
        "use_sqrt_nnei": True,
        "g1_out_conv": True,
        "g1_out_mlp": True,
    },
    "precision": "float64",
    "add_tebd_to_repinit_out": False,
    "seed": 1,
}
# Energy fitting per pretrained branch ("Default" is the single-task model's).
FITTING_SEED = {"water_a": 1, "water_b": 2, "Default": 1}
DATA_STAT_NBATCH = 10  # batches (frames) per system for the statistics
NFRAMES = 4  # frames of each water system the reference runs use (see subset_system)
LEARNING_RATE = {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-5, "decay_steps": 5000}
LOSS = {
    "type": "ener",
    "start_pref_e": 0.02,
    "limit_pref_e": 1,
    "start_pref_f": 1000,
    "limit_pref_f": 1,
}


def fitting(seed: int = 1) -> dict:
    return {"neuron": [32, 32, 32], "resnet_dt": True, "precision": "float64", "seed": seed}


def water(k: int) -> Path:
    """Water system data_k (deepmd/npy, 192 atoms, type_map [O, H])."""
    return WATER / f"data_{k}"


def subset_system(src: Path, dst: Path, nframes: int) -> Path:
    """Write the first ``nframes`` frames of the deepmd/npy system ``src`` as a one-set system
    ``dst`` (a scratch copy, never in the repository). With at most ``DATA_STAT_NBATCH`` frames
    (batch size 1) every frame enters the reference's statistics, whatever its (seeded, shuffled)
    data order: lamkit can then reproduce them."""
    src, dst = Path(src), Path(dst)
    (dst / "set.000").mkdir(parents=True, exist_ok=True)
    for name in ("type.raw", "type_map.raw"):
        (dst / name).write_text((src / name).read_text())
    sets = sorted(src.glob("set.*"))
    for key in ("coord", "box", "energy", "force"):
        arr = np.concatenate([np.load(s / f"{key}.npy") for s in sets])[:nframes]
        np.save(dst / "set.000" / f"{key}.npy", arr)
    return dst


def reference_env(threads: int = 1) -> dict:
    """The environment of a reference subprocess: ``threads`` intra-op threads, no data-loader
    workers."""
    env = dict(os.environ)
    env.update(
        NUM_WORKERS="0",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1",
    )
    return env


def run_reference(args: list[str], workdir: Path, log: str = "train.log") -> str:
    """Run ``python -m deepmd --pt ARGS`` in ``workdir``; its output goes to ``workdir/log``
    (returned); raises RuntimeError with the log's tail on failure."""
    workdir = Path(workdir)
    with open(workdir / log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(
            DP + list(args),
            cwd=workdir,
            env=reference_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT,
            check=False,
        )
    text = (workdir / log).read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(DP + list(args))} failed (rc {proc.returncode}) in {workdir}:\n"
            f"{text[-4000:]}"
        )
    return text


def _training(steps: int, seed: int) -> dict:
    return {"numb_steps": steps, "seed": seed, "disp_freq": 5, "save_freq": max(steps, 1)}


# --- pretrained models ------------------------------------------------------------------------
def multitask_input(data_a: Path, data_b: Path, steps: int = 20, seed: int = 10) -> dict:
    """A DeePMD-kit v3 multi-task input: tasks ``water_a`` (trained on ``data_a``) and
    ``water_b`` (``data_b``) share the DPA-2 descriptor ``dpa2_desc`` and the type map
    ``type_map_all``; each has its own energy fitting [32, 32, 32] and ener loss; the tasks are
    drawn with probability 0.5 each, batch size 1."""
    branch = {"type_map": "type_map_all", "descriptor": "dpa2_desc"}
    return {
        "model": {
            "shared_dict": {
                "type_map_all": list(TYPE_MAP),
                "dpa2_desc": copy.deepcopy(DESCRIPTOR),
            },
            "model_dict": {
                task: {
                    **branch,
                    "fitting_net": fitting(FITTING_SEED[task]),
                    "data_stat_nbatch": DATA_STAT_NBATCH,
                }
                for task in ("water_a", "water_b")
            },
        },
        "learning_rate": dict(LEARNING_RATE),
        "loss_dict": {"water_a": dict(LOSS), "water_b": dict(LOSS)},
        "training": {
            "model_prob": {"water_a": 0.5, "water_b": 0.5},
            "data_dict": {
                "water_a": {"training_data": {"systems": [str(data_a)], "batch_size": 1}},
                "water_b": {"training_data": {"systems": [str(data_b)], "batch_size": 1}},
            },
            **_training(steps, seed),
        },
    }


def single_task_input(data: Path, steps: int = 20, seed: int = 10) -> dict:
    """The same architecture as one branch of :func:`multitask_input`, single-task."""
    return {
        "model": {
            "type_map": list(TYPE_MAP),
            "descriptor": copy.deepcopy(DESCRIPTOR),
            "fitting_net": fitting(FITTING_SEED["Default"]),
            "data_stat_nbatch": DATA_STAT_NBATCH,
        },
        "learning_rate": dict(LEARNING_RATE),
        "loss": dict(LOSS),
        "training": {
            "training_data": {"systems": [str(data)], "batch_size": 1},
            **_training(steps, seed),
        },
    }


def final_checkpoint(workdir: Path) -> Path:
    """The checkpoint ``dp train`` wrote last in ``workdir`` (``model.ckpt.pt`` links to it)."""
    workdir = Path(workdir)
    link = workdir / "model.ckpt.pt"
    if link.exists():
        return link.resolve()
    ckpts = sorted(workdir.glob("model.ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[-1]))
    if not ckpts:
        raise FileNotFoundError(f"no model.ckpt-*.pt in {workdir}")
    return ckpts[-1]


def _train(workdir: Path, config: dict, extra: list[str] = ()) -> Path:
    """``dp --pt train input.json --skip-neighbor-stat EXTRA`` in ``workdir`` (the neighbor
    statistics only fill ``min_nbor_dist`` and cost tens of seconds on water)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.json").write_text(json.dumps(config, indent=1))
    run_reference(["train", "input.json", "--skip-neighbor-stat", *extra], workdir)
    return final_checkpoint(workdir)


def make_reference_multitask(workdir: Path, steps: int = 20, nframes: int = NFRAMES) -> Path:
    """Train :func:`multitask_input` in ``workdir`` on the first ``nframes`` frames of data_0
    (task ``water_a``) and data_1 (``water_b``); returns the final checkpoint."""
    workdir = Path(workdir)
    data_a = subset_system(water(0), workdir / "data_a", nframes)
    data_b = subset_system(water(1), workdir / "data_b", nframes)
    return _train(workdir, multitask_input(data_a, data_b, steps=steps))


def make_reference_single(workdir: Path, steps: int = 20, nframes: int = NFRAMES) -> Path:
    """Train :func:`single_task_input` on the first ``nframes`` frames of data_0 in
    ``workdir``; returns the final checkpoint."""
    workdir = Path(workdir)
    data = subset_system(water(0), workdir / "data", nframes)
    return _train(workdir, single_task_input(data, steps=steps))


def lcurve_header(workdir: Path) -> list[str]:
    """Column names of the ``lcurve.out`` the reference wrote in ``workdir``."""
    first = (Path(workdir) / "lcurve.out").read_text().splitlines()[0]
    assert first.startswith("#"), first
    return first[1:].split()


# --- fine-tuning ------------------------------------------------------------------------------
def finetune_input(
    pretrained_multitask: bool,
    data_train: Path,
    type_map: list[str] | None = None,
    branch: str = "water_a",
    descriptor: dict | None = None,
    seed: int = 10,
) -> dict:
    """A single-task fine-tuning input on ``data_train`` whose model matches the pretrained
    branch (``branch`` of the multi-task model, else the single-task model): same descriptor
    (or ``descriptor``, e.g. a wrong one for ``--use-pretrain-script``), same fitting (seed
    included), ``type_map`` (default [O, H]). ``numb_steps`` is 0 (see :func:`reference_finetune`)
    and every frame enters the bias statistics."""
    config = single_task_input(data_train, steps=0, seed=seed)
    model = config["model"]
    model["type_map"] = list(type_map or TYPE_MAP)
    if descriptor is not None:
        model["descriptor"] = copy.deepcopy(descriptor)
    model["fitting_net"] = fitting(FITTING_SEED[branch if pretrained_multitask else "Default"])
    return config


def reference_finetune(
    workdir: Path,
    pretrained_ckpt: Path,
    input_dict: dict,
    model_branch: str | None = None,
    use_pretrain_script: bool = False,
) -> Path:
    """``dp --pt train input.json --finetune PRETRAINED [--model-branch B]
    [--use-pretrain-script]`` with ``numb_steps`` forced to 0, in ``workdir``.

    With 0 steps the reference still does all of the fine-tuning set-up (weights of the chosen
    branch, type-map change, energy bias change-by-statistic, or set-by-statistic for a random
    fitting) and then saves ``model.ckpt-0.pt`` at once: that checkpoint (returned) is the model
    exactly as the reference has it before its first optimizer update."""
    config = copy.deepcopy(input_dict)
    config["training"]["numb_steps"] = 0
    extra = ["--finetune", str(Path(pretrained_ckpt).resolve())]
    if model_branch is not None:
        extra += ["--model-branch", model_branch]
    if use_pretrain_script:
        extra.append("--use-pretrain-script")
    ckpt = _train(workdir, config, extra)
    assert ckpt.name == "model.ckpt-0.pt", ckpt
    return ckpt


# --- checkpoints and predictions --------------------------------------------------------------
def load_state(ckpt: Path) -> dict:
    """The ``model`` state dict of a reference checkpoint."""
    return torch.load(str(ckpt), map_location="cpu", weights_only=False)["model"]


def branch_tensors(state: dict, branch: str = "Default") -> dict[str, torch.Tensor]:
    """The tensors of one branch, keyed relative to its atomic model (``descriptor.*``,
    ``fitting_net.*``, ``out_bias``, ``out_std``, ...)."""
    prefix = PREFIX.format(branch=branch)
    return {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix) and isinstance(v, torch.Tensor)
    }


def model_params(state: dict) -> dict:
    return state["_extra_state"]["model_params"]


_EVAL_SCRIPT = r"""
import json, sys, warnings
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
warnings.simplefilter("ignore")
from deepmd.infer import DeepPot

ckpt, system, nframes, head, out = sys.argv[1:6]
nframes = int(nframes)
system = Path(system)
kw = {} if head == "" else {"head": head}
dp = DeepPot(ckpt, no_jit=True, **kw)
names = (system / "type_map.raw").read_text().split()
model_map = dp.get_type_map()
atype = np.array([model_map.index(names[t]) for t in np.loadtxt(system / "type.raw", dtype=int)])
coords, boxes = [], []
for s in sorted(system.glob("set.*")):
    coords.append(np.load(s / "coord.npy"))
    boxes.append(np.load(s / "box.npy"))
coord = np.concatenate(coords)[:nframes].astype(np.float64)
box = np.concatenate(boxes)[:nframes].astype(np.float64)
e, f, v = dp.eval(coord, box, atype)
np.savez(out, energy=np.asarray(e, np.float64).reshape(len(coord)),
         force=np.asarray(f, np.float64).reshape(len(coord), -1), type_map=np.array(model_map))
"""


def reference_energies(
    ckpt: Path, system: Path, nframes: int = 5, head: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Energies [nf] and forces [nf, natoms * 3] (float64) of the first ``nframes`` frames of
    the deepmd/npy ``system`` by the reference's ``deepmd.infer.DeepPot(ckpt, head=head)``,
    in a subprocess. Atom types are mapped to the model's type map by element name."""
    ckpt = Path(ckpt).resolve()
    out = ckpt.parent / f"eval_{ckpt.stem}_{Path(system).name}_{head or ''}_{nframes}.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _EVAL_SCRIPT,
            str(ckpt),
            str(system),
            str(nframes),
            head or "",
            str(out),
        ],
        env=reference_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"reference DeepPot failed on {ckpt}:\n{proc.stderr[-4000:]}")
    with np.load(out) as res:
        return res["energy"], res["force"]
