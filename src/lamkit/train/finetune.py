"""Fine-tuning: ``lam train input.json --finetune PRETRAINED [--model-branch B|RANDOM]``.

The rules are DeePMD-kit v3's (``dp --pt train --finetune``):

* a single-task input takes the pretrained descriptor and the fitting of the chosen branch
  (``--model-branch``, else the input's ``finetune_head``; a single-task pretrained model has
  only ``Default``); ``RANDOM``, or no branch of a multi-task model, keeps the input's freshly
  initialised fitting (and the first branch's descriptor);
* in a multi-task input every task says where it comes from: ``finetune_head: X`` copies
  branch X, a task with the name of a pretrained branch and no ``finetune_head`` resumes it
  as it is, any other task gets a random fitting;
* ``--use-pretrain-script`` replaces the input's descriptor (and fitting, unless random) with
  the pretrained ones, keeping only the ``trainable`` flags;
* a new ``type_map`` (subset, new order, new elements) is applied to the pretrained weights
  first (:func:`lamkit.model.type_map.change_type_map`); new elements get descriptor
  statistics from the fine-tuning data;
* then the energy bias is refit on ``data_stat_nbatch`` batches of every training system:
  change-by-statistic (the least-squares shift of ``label - prediction``) for a kept fitting,
  set-by-statistic for a random one. Optimizer state is not carried over; training starts at
  step 0.

The pretrained model may be a lamkit checkpoint or frozen model, single- or multi-task, or a
DeePMD-kit v3 ``model.ckpt-*.pt``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config.multitask import choose_head
from ..errors import ConfigError
from ..model.io import model_from_payload, read_file, reader_of
from ..model.type_map import change_type_map
from .checkpoint import latest_checkpoint
from .stats import _extended, energy_bias

log = logging.getLogger("lamkit.train")
RANDOM = "RANDOM"
DEFAULT = "Default"


@dataclass
class FinetuneRule:
    """Where one task's weights come from."""

    branch: str  # pretrained branch ("Default" for a single-task model)
    random_fitting: bool = False
    resuming: bool = False  # multi-task: the task continues a pretrained branch unchanged


class Pretrained:
    """A pretrained model file: its branch configs and a model per branch."""

    def __init__(self, path: str):
        self.path = str(path)
        self.obj = read_file(latest_checkpoint(path))
        reader = reader_of(self.obj)
        if reader is None:
            raise ConfigError(
                f"--finetune {path}: neither a lamkit model nor a DeePMD-kit v3 checkpoint"
            )
        conf = reader.config(self.obj)
        self.multi = "model_dict" in conf
        self.configs = dict(conf["model_dict"]) if self.multi else {DEFAULT: conf}

    @property
    def branches(self) -> list[str]:
        return list(self.configs)

    def model(self, branch: str):
        head = branch if self.multi else None
        return model_from_payload(self.obj, self.path, head=head)

    def check_branch(self, branch: str, where: str) -> str:
        """The pretrained branch ``branch`` names (a branch or a ``model_branch_alias``)."""
        # a single-task model's one branch is Default (its config's aliases do not count)
        branches = self.configs if self.multi else {DEFAULT: {}}
        return choose_head(
            {"model_dict": branches},
            branch,
            f"{where}: the pretrained model {self.path}",
            noun="branch",
            ignore_case=False,
            error=ConfigError,
        )


def _single_rule(pre: Pretrained, branch: str | None, where: str) -> FinetuneRule:
    branch = branch or ""
    if not pre.multi:
        if branch not in ("", DEFAULT, RANDOM):
            raise ConfigError(
                f"{where}: {pre.path} is a single-task model; its only branch is 'Default' "
                f"(or RANDOM for a new fitting), not '{branch}'"
            )
        return FinetuneRule(DEFAULT, random_fitting=branch == RANDOM)
    if branch in ("", RANDOM):
        first = pre.branches[0]
        log.warning(
            "fine-tuning from the multi-task model %s without a branch: the descriptor comes "
            "from '%s', the fitting is re-initialised and its bias set from the data "
            "(choose one of %s with --model-branch to keep a fitting)",
            pre.path,
            first,
            pre.branches,
        )
        return FinetuneRule(first, random_fitting=True)
    return FinetuneRule(pre.check_branch(branch, where))


def plan(
    pre: Pretrained,
    task_configs: dict[str, dict],
    multi_target: bool,
    model_branch: str | None = None,
    use_pretrain_script: bool = False,
) -> tuple[dict[str, dict], dict[str, FinetuneRule]]:
    """The fine-tuning rule of every task, and the task configs (changed by
    ``use_pretrain_script``)."""
    confs = copy.deepcopy(task_configs)
    rules: dict[str, FinetuneRule] = {}
    if not multi_target:
        (task,) = confs
        branch = model_branch if model_branch is not None else confs[task].get("finetune_head")
        rules[task] = _single_rule(pre, branch, "--model-branch")
    else:
        if model_branch is not None:
            raise ConfigError(
                "--model-branch: a multi-task input chooses a branch per task with "
                "'finetune_head' in each model/model_dict entry"
            )
        for task, conf in confs.items():
            head = conf.get("finetune_head")
            where = f"model/model_dict/{task}/finetune_head"
            if head is not None and head != RANDOM:
                rules[task] = FinetuneRule(pre.check_branch(head, where))
            elif head is None and task in pre.configs:
                rules[task] = FinetuneRule(task, resuming=True)
            else:
                rules[task] = _single_rule(pre, RANDOM, where)
    for task, rule in rules.items():
        confs[task].pop("finetune_head", None)
        if use_pretrain_script:
            _use_pretrained_sections(confs[task], pre.configs[rule.branch], rule.random_fitting)
    return confs, rules


def _use_pretrained_sections(conf: dict, pretrained: dict, random_fitting: bool) -> None:
    sections = ["descriptor"] if random_fitting else ["descriptor", "fitting_net"]
    for sec in sections:
        trainable = (
            (conf.get(sec) or {}).get("trainable", True)
            if isinstance(conf.get(sec), dict)
            else True
        )
        conf[sec] = copy.deepcopy(pretrained[sec])
        conf[sec]["trainable"] = trainable


def _fill_new_type_stats(model, new_types: list[int], batches, protection: float) -> None:
    """davg/dstd rows of new element types from the fine-tuning data (the other rows keep the
    pretrained values, as in the reference)."""
    st = model.descriptor.env_stat(_extended(model, batches))
    probe = copy.deepcopy(model.descriptor)
    probe.set_stat(st, protection)
    fresh = probe.state_dict()
    state = model.descriptor.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith(("davg", "dstd")):
                for j in new_types:
                    value[j] = fresh[key][j]
    log.info(
        "descriptor statistics of the new types %s from the fine-tuning data",
        [model.type_map[j] for j in new_types],
    )


@torch.no_grad()
def apply(task, rule: FinetuneRule, pre: Pretrained, batches: list[dict]) -> None:
    """Load the pretrained weights of ``rule`` into ``task.model`` (type map changed if
    needed), then refit the output bias on ``batches`` unless the task resumes a branch."""
    target = task.model
    src = pre.model(rule.branch)
    protection = task.model_config.get("data_stat_protect", 1e-2)
    if list(src.type_map) != list(target.type_map):
        old = list(src.type_map)
        src = change_type_map(src, target.type_map)
        new_types = [j for j, t in enumerate(target.type_map) if t not in old]
        log.info("type map %s -> %s for fine-tuning", old, list(target.type_map))
        if new_types:
            _fill_new_type_stats(src, new_types, batches, protection)
    src_state = src.state_dict()
    state = target.state_dict()
    for key, value in state.items():
        if rule.random_fitting and not key.startswith("descriptor."):
            continue  # keeps its random initialisation
        if key not in src_state:
            raise ConfigError(
                f"--finetune {pre.path}: branch '{rule.branch}' has no '{key}'; the input's "
                "model section must match the pretrained architecture (or use "
                "--use-pretrain-script)"
            )
        if src_state[key].shape != value.shape:
            raise ConfigError(
                f"--finetune {pre.path}: '{key}' is {tuple(src_state[key].shape)} in branch "
                f"'{rule.branch}' but {tuple(value.shape)} in the input's model; the model "
                "sections differ (use --use-pretrain-script to take the pretrained one)"
            )
        state[key] = src_state[key]
    target.load_state_dict(state)
    what = "a random fitting" if rule.random_fitting else "its fitting"
    log.info("task %s: weights of branch '%s' of %s (%s)", task.name, rule.branch, pre.path, what)
    if not rule.resuming:
        refit_bias(task, batches, "set" if rule.random_fitting else "change")


@torch.no_grad()
def refit_bias(task, batches: list[dict], mode: str) -> None:
    """``change``: add the least-squares shift of ``label - prediction``; ``set``: fit the
    labels (energy models; other outputs get their statistics from the data)."""
    from .stats import set_output_stats

    model = task.model
    if model.output_def.kind != "energy":
        set_output_stats(model, batches, task.model_config)
        log.info("task %s: output statistics set from the fine-tuning data", task.name)
        return
    rcond = getattr(model.fitting, "rcond", None)
    old = model.out_bias.detach().cpu().numpy().reshape(-1).copy()
    was_training = model.training
    model.eval()
    if mode == "set":
        bias = energy_bias(batches, model.ntypes, rcond)
        new = bias.reshape(-1) if bias is not None else old
    else:
        delta = energy_bias(batches, model.ntypes, rcond, residual_model=model)
        new = old + (delta.reshape(-1) if delta is not None else 0.0)
    model.train(was_training)
    model.out_bias.copy_(torch.as_tensor(new.reshape(model.out_bias.shape)))
    log.info(
        "task %s: energy bias (%s-by-statistic) per type %s: %s -> %s",
        task.name,
        mode,
        model.type_map,
        np.array2string(old, precision=6),
        np.array2string(new, precision=6),
    )


def init_from_model(model, path: str, multi: bool) -> None:
    """``--init-model``: the weights and statistics of a model of the same architecture (a
    multi-task run needs a multi-task lamkit checkpoint)."""
    obj = read_file(latest_checkpoint(path))
    if multi:
        if not (isinstance(obj, dict) and "model_dict" in obj.get("model_config", {})):
            raise ConfigError(
                f"--init-model {path}: a multi-task run needs a multi-task "
                "lamkit checkpoint (use --finetune for other models)"
            )
        try:
            model.load_state_dict(obj["model_state"])
        except RuntimeError as exc:
            raise ConfigError(f"--init-model {path}: the architecture differs ({exc})") from exc
        return
    src = model_from_payload(obj, str(path))
    if src.type_map != model.type_map:
        raise ConfigError(
            f"--init-model {path}: its type_map {src.type_map} differs from "
            f"the input's {model.type_map}"
        )
    try:
        model.load_state_dict(src.state_dict())
    except RuntimeError as exc:
        raise ConfigError(
            f"--init-model {path}: the architecture differs from the input's model section ({exc})"
        ) from exc
    log.info("weights and statistics initialised from %s", path)
