"""The train stage: fine-tune ``members`` models from the pretrained one on the labelled set.

Every member starts from the pretrained weights (``lam train --finetune``: a lamkit or
DeePMD-kit v3 model, single- or multi-task with the chosen branch) and differs by its training
seed (the order of batches) and, with ``random_fitting``, by a freshly initialised fitting net
(more spread between members; its energy bias set from the data). A list of pretrained models
gives member k the model k mod len. The input is the pretrained branch's own model section
(type map extended by any new element of the structures), so the user sets only the training
length, learning rate and loss. Every iteration starts again from the pretrained model on all
frames labelled so far, as DPGen2's fine-tune mode does.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from ..errors import ConfigError
from ..train.finetune import RANDOM
from .config import LearnConfig

log = logging.getLogger("lamkit")

DEFAULT_LOSS = {
    "type": "ener",
    "start_pref_e": 0.02,
    "limit_pref_e": 1.0,
    "start_pref_f": 1000.0,
    "limit_pref_f": 1.0,
    "start_pref_v": 0.02,
    "limit_pref_v": 1.0,
}


def pretrained_model_config(cfg: LearnConfig, path: str) -> tuple[dict, str | None, list[str]]:
    """The model section of ``path``'s branch (``cfg.head``), the branch to fine-tune from
    (None for a single-task model) and its type map."""
    from ..train.finetune import Pretrained

    pre = Pretrained(path)
    branch = None
    if pre.multi:
        if not cfg.head:
            raise ConfigError(f"head: {path} is a multi-task model; choose one of {pre.branches}")
        branch = pre.check_branch(cfg.head, "head")
    model = pre.model(branch or "Default")
    conf = copy.deepcopy(model.config)
    for key in ("finetune_head", "model_branch"):
        conf.pop(key, None)
    return conf, branch, list(model.type_map)


def check_pretrained(cfg: LearnConfig) -> list[str]:
    """The common type map of the pretrained models; ConfigError naming them when their type
    maps or cutoffs differ (the members form one ensemble)."""
    from ..train.finetune import Pretrained

    maps, rcuts = [], []
    for path in cfg.models:
        conf, branch, type_map = pretrained_model_config(cfg, path)
        maps.append(type_map)
        rcuts.append(float(Pretrained(path).model(branch or "Default").rcut))
    if any(m != maps[0] for m in maps):
        listing = "; ".join(f"{p}: {m}" for p, m in zip(cfg.models, maps))
        raise ConfigError(f"model: the pretrained models have different type maps ({listing})")
    if any(r != rcuts[0] for r in rcuts):
        listing = "; ".join(f"{p}: {r:g} Å" for p, r in zip(cfg.models, rcuts))
        raise ConfigError(f"model: the pretrained models have different cutoffs ({listing})")
    return maps[0]


def member_input(
    cfg: LearnConfig, model_conf: dict, type_map: list[str], systems: list[str], seed: int
) -> dict:
    """The ``lam train`` input of one member."""
    spec = cfg.train
    conf = copy.deepcopy(model_conf)
    conf["type_map"] = list(type_map)
    if spec.random_fitting and isinstance(conf.get("fitting_net"), dict):
        conf["fitting_net"]["seed"] = seed
    steps = spec.numb_steps
    return {
        "model": conf,
        "learning_rate": {
            "type": "exp",
            "start_lr": spec.start_lr,
            "stop_lr": spec.stop_lr,
            "decay_steps": max(1, steps // 10),
        },
        "loss": {**DEFAULT_LOSS, **spec.loss},
        "training": {
            "training_data": {"systems": systems, "batch_size": spec.batch_size},
            "numb_steps": steps,
            "seed": seed,
            "disp_freq": max(1, steps // 5),
            "save_freq": steps,
            "max_ckpt_keep": 1,
        },
    }


def train_ensemble(
    cfg: LearnConfig, systems: list[Path], folder: Path, iteration: int, type_map: list[str]
) -> list[Path]:
    """Fine-tune the members into ``folder/member.K``; returns their checkpoints."""
    from ..train import Trainer

    paths = []
    for k in range(cfg.train.members):
        pretrained = cfg.models[k % len(cfg.models)]
        model_conf, branch, _ = pretrained_model_config(cfg, pretrained)
        if cfg.train.random_fitting:
            branch = RANDOM
        seed = cfg.train.seed + 1000 * k + iteration
        conf = member_input(cfg, model_conf, type_map, [str(s) for s in systems], seed)
        out = folder / f"member.{k}"
        log.info("learn: iteration %d, training member %d (seed %d)", iteration, k, seed)
        trainer = Trainer(conf, out, finetune=pretrained, model_branch=branch)
        try:
            ckpt = trainer.run()
        finally:
            trainer.dist.close()
        paths.append(Path(ckpt))
    return paths
