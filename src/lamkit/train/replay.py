"""Replay fine-tuning: keep rehearsing the pretraining data so the model forgets less.

``training.replay`` in a single-task fine-tuning input (``lam train --finetune PRE``)::

    "replay": {"systems": ["pretrain/data_0", "pretrain/data_1"], "nframes": 100,
               "selection": "fps", "prob": 0.2, "head": "water"}

turns the run into a two-task run without a hand-written multi-task input: the task
``Default`` learns the new data, the task ``replay`` keeps the pretrained branch ``head``
(weights and energy bias exactly as pretrained) and trains on ``nframes`` frames of
``systems``. The two share the descriptor (sharing level 0); a step trains ``replay`` with
probability ``prob``. The frames are chosen by farthest-point sampling on per-frame
fingerprints (per element, the mean of the pretrained descriptor over the atoms of that element;
Euclidean distance), so that a small set covers the pretraining configurations, or at random.

The checkpoint is a multi-task checkpoint whose default head is ``Default``: ``lam test``,
``lam freeze`` and ``DeepPot`` use the fine-tuned head unless ``--head replay`` is given.
The chosen frames are stored in the checkpoint, so ``--restart`` trains on the same ones.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import keys
from ..config.multitask import SharedLink
from ..data import load_systems
from ..data.loader import frames_to_batch
from ..data.system import System, select_frames
from ..errors import ConfigError, DataError
from ..geometry.neighbor import NeighborBuilder
from ..model import normalize_model_config
from ..model.type_map import change_type_map
from .finetune import DEFAULT, FinetuneRule, Pretrained
from .loss import build_loss
from .tasks import Task, data_requirements

log = logging.getLogger("lamkit.train")
REPLAY = "replay"
FP_CHUNK = 16  # frames per descriptor evaluation when computing fingerprints


@dataclass
class ReplayPlan:
    """What the replay task trains on: the pretrained head and the chosen frames."""

    head: str
    selection: str
    prob: float
    frames: dict[str, list[int]] = field(default_factory=dict)  # system path -> frame indices

    def to_dict(self) -> dict:
        return {
            "head": self.head,
            "selection": self.selection,
            "prob": self.prob,
            "frames": {k: list(map(int, v)) for k, v in self.frames.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> ReplayPlan:
        return cls(d["head"], d["selection"], float(d["prob"]), dict(d["frames"]))

    @property
    def nframes(self) -> int:
        return sum(len(v) for v in self.frames.values())


# --- frame selection ----------------------------------------------------------------------------
@torch.no_grad()
def fingerprints(model, systems: list[System]) -> np.ndarray:
    """``[total frames, ntypes * dim]``: per element, the mean descriptor of its atoms (zeros
    for an element a frame does not have), frames of all systems in order."""
    model.eval()
    builder = NeighborBuilder(model.rcut, model.sel, model.mixed_types)
    ntypes = len(model.type_map)
    out = []
    for sys_ in systems:
        for start in range(0, sys_.nframes, FP_CHUNK):
            b = frames_to_batch(sys_, np.arange(start, min(start + FP_CHUNK, sys_.nframes)))
            coord, atype, box = b[keys.COORD], b[keys.ATYPE], b.get(keys.BOX)
            nbr = builder(coord, atype, box)
            ext, ext_atype = model.extend(coord, atype, box, nbr)
            desc = model.descriptor(ext, ext_atype, nbr[keys.NLIST], nbr[keys.MAPPING])
            desc = desc[keys.DESCRIPTOR].to(torch.float64)  # [nf, nloc, d]
            onehot = torch.nn.functional.one_hot(atype.clamp(min=0), ntypes).to(desc.dtype)
            onehot = onehot * (atype >= 0).unsqueeze(-1).to(desc.dtype)  # virtual atoms out
            total = torch.einsum("fat,fad->ftd", onehot, desc)
            count = onehot.sum(1).clamp(min=1).unsqueeze(-1)
            out.append((total / count).reshape(len(coord), -1).numpy())
    return np.concatenate(out, 0)


def farthest_points(x: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` rows of ``x`` chosen greedily, each the farthest (Euclidean) from those
    already chosen; the first is the row farthest from the mean."""
    n = min(n, len(x))
    chosen = [int(np.argmax(((x - x.mean(0)) ** 2).sum(1)))]
    dist = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(1))
    return np.asarray(chosen, dtype=np.int64)


def choose_frames(
    systems: list[System], nframes: int, selection: str, model, seed
) -> dict[str, list[int]]:
    """``{system path: sorted frame indices}`` with ``nframes`` frames in all."""
    offsets = np.cumsum([0] + [s.nframes for s in systems])
    total = int(offsets[-1])
    if nframes >= total:
        picked = np.arange(total)
    elif selection == "random":
        picked = np.random.default_rng(seed).choice(total, nframes, replace=False)
    else:
        log.info("replay: descriptor fingerprints of %d pretraining frames", total)
        picked = farthest_points(fingerprints(model, systems), nframes)
    out: dict[str, list[int]] = {}
    for i, s in enumerate(systems):
        mine = picked[(picked >= offsets[i]) & (picked < offsets[i + 1])] - offsets[i]
        if mine.size:
            out[s.path] = sorted(int(j) for j in mine)
    return out


# --- the task ------------------------------------------------------------------------------------
def _head(conf: dict, pre: Pretrained | None, rules: dict) -> str:
    if conf["head"] is not None:
        if pre is None:
            return conf["head"]
        return pre.check_branch(conf["head"], "training/replay/head")
    if not pre.multi:
        return DEFAULT
    rule = rules.get(DEFAULT)
    if rule is not None and not rule.random_fitting:
        return rule.branch
    raise ConfigError(
        f"training/replay/head: {pre.path} is a multi-task model; name the branch the replay "
        f"data was trained with (one of {pre.branches})"
    )


def _model_config(trainer, pre: Pretrained, head: str) -> dict:
    main = trainer.tasks[DEFAULT].model_config
    fitting = copy.deepcopy(pre.configs[head]["fitting_net"])
    if fitting.get("type", "ener") != main["fitting_net"].get("type", "ener"):
        raise ConfigError(
            f"training/replay/head: branch '{head}' has a '{fitting.get('type', 'ener')}' "
            f"fitting but the fine-tuned model a '{main['fitting_net'].get('type', 'ener')}' "
            "one; replay needs both heads to fit the same kind of output"
        )
    conf = copy.deepcopy(main)
    conf["fitting_net"] = fitting
    return normalize_model_config(conf, "training/replay")


def add_replay_task(
    trainer, conf: dict, pre: Pretrained | None, rules: dict, links: list, resume: dict | None
) -> ReplayPlan:
    """Add the ``replay`` task to ``trainer.tasks`` (and its rule and sharing link)."""
    if DEFAULT not in trainer.tasks or len(trainer.tasks) != 1:
        raise ConfigError("training/replay: replay fine-tuning is for single-task inputs")
    if not 0.0 < conf["prob"] < 1.0:
        raise ConfigError(f"training/replay/prob: expected a number in (0, 1), got {conf['prob']}")
    if conf["nframes"] < 1:
        raise ConfigError(f"training/replay/nframes: expected >= 1, got {conf['nframes']}")
    if resume is not None:
        plan = ReplayPlan.from_dict(resume["replay"])
        model_config = resume["model_config"]["model_dict"][REPLAY]
    else:
        if pre is None:
            raise ConfigError(
                "training/replay: replay fine-tuning needs the pretrained model "
                "(lam train input.json --finetune PRETRAINED)"
            )
        head = _head(conf, pre, rules)
        plan = ReplayPlan(head, conf["selection"], float(conf["prob"]))
        model_config = _model_config(trainer, pre, head)
    loss = build_loss(trainer.config.get("loss"), trainer.lr.start_lr, model_config)
    reqs = data_requirements(loss, model_config)
    type_map = model_config["type_map"]
    try:
        systems = load_systems(conf["systems"], type_map, reqs)
    except (ConfigError, DataError) as exc:
        raise ConfigError(f"training/replay/systems: {exc}") from exc
    if not systems:
        raise ConfigError(f"training/replay/systems: no systems found in {conf['systems']}")
    if resume is None:
        frames = None
        if trainer.dist.is_main:
            model = pre.model(plan.head)
            if list(model.type_map) != list(type_map):
                model = change_type_map(model, type_map)
            frames = choose_frames(systems, conf["nframes"], plan.selection, model, trainer.seed)
        plan.frames = trainer.dist.broadcast_object(frames)
    by_path = {s.path: s for s in systems}
    missing = [p for p in plan.frames if p not in by_path]
    if missing:
        raise ConfigError(
            f"training/replay/systems: the checkpoint's replay frames come from {missing}, "
            "which the input no longer lists"
        )
    chosen = [select_frames(by_path[p], idx) for p, idx in plan.frames.items()]
    data_config = {
        "training_data": {
            "systems": list(plan.frames),
            "batch_size": conf["batch_size"],
            "auto_prob": "prob_sys_size",
            "sys_probs": None,
        },
        "validation_data": None,
        "stat_file": None,
    }
    trainer.tasks[REPLAY] = Task(REPLAY, model_config, data_config, loss, chosen, [])
    if resume is None:
        rules[REPLAY] = FinetuneRule(plan.head, resuming=True)
        links.append(SharedLink("descriptor", "descriptor", [(DEFAULT, 0), (REPLAY, 0)]))
    trainer.tr["model_prob"] = {DEFAULT: 1.0 - plan.prob, REPLAY: plan.prob}
    log.info(
        "replay: %d of %d pretraining frames (%s) for branch '%s', trained with probability %g",
        plan.nframes,
        sum(s.nframes for s in systems),
        plan.selection,
        plan.head,
        plan.prob,
    )
    return plan
