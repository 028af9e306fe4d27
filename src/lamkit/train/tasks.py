"""What the trainer keeps per task: model branch, loss, data, samplers, neighbour builders.

A single-task run has one task named ``"Default"`` (DeePMD-kit's name); a multi-task run has one
per ``model_dict`` entry, each with its ``loss_dict`` entry and ``data_dict`` entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..data import (
    MultiSystemSampler,
    filter_systems,
    load_systems,
    resolve_batch_sizes,
    system_probabilities,
)
from ..data.system import DataRequirement, System
from ..descriptor import DESCRIPTORS
from ..errors import ConfigError
from .loss import build_loss

DEFAULT = "Default"


@dataclass
class Task:
    name: str
    model_config: dict
    data_config: dict  # training_data, validation_data, stat_file
    loss: object
    train_systems: list[System]
    valid_systems: list[System]
    model: object = None
    sampler: MultiSystemSampler | None = None
    valid_sampler: MultiSystemSampler | None = None
    batch_sizes: list[int] = field(default_factory=list)
    builder: object = None
    vbuilder: object = None

    @property
    def nframes(self) -> int:
        return sum(s.nframes for s in self.train_systems)

    @property
    def stat_file(self) -> str | None:
        sf = self.data_config.get("stat_file")
        return None if sf is None else str(sf)

    @property
    def stat_file_mode(self) -> str:
        return self.data_config.get("stat_file_mode", "update")


def data_requirements(loss, model_config: dict) -> list[DataRequirement]:
    reqs = list(loss.requirements())
    fit = model_config["fitting_net"]
    if fit.get("numb_fparam"):
        reqs.append(
            DataRequirement("fparam", fit["numb_fparam"], must=fit.get("default_fparam") is None)
        )
    if fit.get("numb_aparam"):
        reqs.append(DataRequirement("aparam", fit["numb_aparam"], atomic=True, must=True))
    if model_config.get("spin"):  # the atomic spins are an input of spin models
        reqs.append(DataRequirement("spin", 3, atomic=True, must=True, origin="model/spin"))
    return reqs


def _load(data: dict, type_map, reqs, where: str) -> list:
    """The systems of a ``training_data``/``validation_data`` section (``rglob_patterns``,
    ``batch_size: "filter:N"``)."""
    systems = load_systems(data["systems"], type_map, reqs, patterns=data.get("rglob_patterns"))
    return filter_systems(data["batch_size"], systems, where)


def make_task(name: str, model_config: dict, data_config: dict, loss_config, start_lr) -> Task:
    """Loss and data of one task (the model is built later, once ``sel`` is resolved)."""
    where = "training" if name == DEFAULT else f"training/data_dict/{name}"
    loss = build_loss(loss_config, start_lr, model_config)
    reqs = data_requirements(loss, model_config)
    type_map = model_config["type_map"]
    train = _load(data_config["training_data"], type_map, reqs, f"{where}/training_data")
    val = data_config.get("validation_data")
    valid = _load(val, type_map, reqs, f"{where}/validation_data") if val else []
    task = Task(name, model_config, data_config, loss, train, valid)
    check_types(task)
    return task


def check_types(task: Task) -> None:
    dtype = task.model_config["descriptor"]["type"]
    if DESCRIPTORS.get(dtype).mixed_types:
        return
    for s in task.train_systems + task.valid_systems:
        if s.mixed_type:
            raise ConfigError(
                f"{s.path}: mixed-type data needs a mixed-type descriptor (dpa1, dpa2, "
                f"se_e3_tebd); '{dtype}' distinguishes neighbour types"
            )


def make_sampler(systems, sizes, data_conf, seed, rank=0, world=1) -> MultiSystemSampler:
    nb = [math.ceil(s.nframes / b) for s, b in zip(systems, sizes)]
    probs = system_probabilities(nb, data_conf.get("sys_probs"), data_conf["auto_prob"])
    return MultiSystemSampler(systems, sizes, probs, seed, rank=rank, world=world)


def attach_samplers(task: Task, seed, rank: int = 0, world: int = 1) -> None:
    """Training (and validation) samplers; in data-parallel runs every rank uses the same seed
    and keeps its slice of the global batch (:mod:`lamkit.train.distributed`)."""
    dc = task.data_config
    task.batch_sizes = resolve_batch_sizes(
        dc["training_data"]["batch_size"], [s.natoms for s in task.train_systems]
    )
    task.sampler = make_sampler(
        task.train_systems, task.batch_sizes, dc["training_data"], seed, rank, world
    )
    val = dc.get("validation_data")
    if task.valid_systems:
        vsizes = resolve_batch_sizes(val["batch_size"], [s.natoms for s in task.valid_systems])
        vseed = None if seed is None else seed + 7919
        task.valid_sampler = make_sampler(task.valid_systems, vsizes, val, vseed)
    task.builder = task.model.neighbor_builder(cache=True)
    task.vbuilder = task.model.neighbor_builder(cache=True)


def task_probabilities(tasks: list[Task], model_prob: dict | None) -> np.ndarray:
    """``training.model_prob`` normalised; by default proportional to each task's number of
    training frames. Every task must be listed when it is given."""
    names = [t.name for t in tasks]
    if not model_prob:
        p = np.array([t.nframes for t in tasks], dtype=np.float64)
    else:
        from ..registry import did_you_mean

        for key in model_prob:
            if key not in names:
                raise ConfigError(
                    f"training/model_prob: unknown task '{key}' (tasks: {names})."
                    + did_you_mean(key, names)
                )
        missing = [n for n in names if n not in model_prob]
        if missing:
            raise ConfigError(f"training/model_prob: no probability for the tasks {missing}")
        p = np.array([float(model_prob[n]) for n in names], dtype=np.float64)
    if not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
        raise ConfigError(
            f"training/model_prob: expected non-negative numbers with a positive sum, got "
            f"{dict(zip(names, p.tolist()))}"
        )
    return p / p.sum()
