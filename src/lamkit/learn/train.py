"""The train stage: fine-tune ``members`` models from the pretrained one on the labelled set.

Every member starts from the same pretrained weights (``lam train --finetune``: a lamkit or
DeePMD-kit v3 model, single- or multi-task with the chosen branch) and differs only by its
training seed (the order of batches). The input is the pretrained branch's own model section
(type map extended by any new element of the structures), so the user sets only the training
length, learning rate and loss. Every iteration starts again from the pretrained model on all
frames labelled so far, as DPGen2's fine-tune mode does.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

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


def pretrained_model_config(cfg: LearnConfig) -> tuple[dict, str | None, list[str]]:
    """The pretrained branch's model section, the branch to fine-tune from and its type map."""
    from ..train.finetune import Pretrained

    pre = Pretrained(cfg.model)
    if pre.multi:
        branch = pre.check_branch(cfg.head or "", "head") if cfg.head else None
        if branch is None:
            from ..errors import ConfigError

            raise ConfigError(
                f"head: {cfg.model} is a multi-task model; choose a branch ({pre.branches})"
            )
    else:
        branch = None
    model = pre.model(branch or "Default")
    conf = copy.deepcopy(model.config)
    for key in ("finetune_head", "model_branch"):
        conf.pop(key, None)
    return conf, branch, list(model.type_map)


def member_input(
    cfg: LearnConfig, model_conf: dict, type_map: list[str], systems: list[str], seed: int
) -> dict:
    """The ``lam train`` input of one member."""
    spec = cfg.train
    conf = copy.deepcopy(model_conf)
    conf["type_map"] = list(type_map)
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

    model_conf, branch, _ = pretrained_model_config(cfg)
    paths = []
    for k in range(cfg.train.members):
        seed = cfg.train.seed + 1000 * k + iteration
        conf = member_input(cfg, model_conf, type_map, [str(s) for s in systems], seed)
        out = folder / f"member.{k}"
        log.info("learn: iteration %d, training member %d (seed %d)", iteration, k, seed)
        trainer = Trainer(conf, out, finetune=cfg.model, model_branch=branch)
        try:
            ckpt = trainer.run()
        finally:
            trainer.dist.close()
        paths.append(Path(ckpt))
    return paths
