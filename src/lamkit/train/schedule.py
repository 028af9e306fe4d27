"""The run length: ``training.numb_steps``, or epochs converted into steps as the reference does.

One epoch of a task is ``ceil(max_i(n_i / p_i))`` steps, where ``n_i`` is the number of batches of
training system ``i`` (``ceil(frames_i / batch_size_i)``; in a data-parallel run each rank holds
``ceil(frames_i / world)`` frames of it) and ``p_i`` its sampling probability: the steps after
which every system is expected to have been drawn once per batch.

- single task: ``numb_epoch`` (may be fractional) -> ``ceil(numb_epoch * epoch)`` steps;
- multi-task: ``num_epoch_dict`` {task: epochs} -> ``ceil(sum_t epochs_t * epoch_t)`` steps, and
  task t is drawn with probability ``epochs_t * epoch_t / sum``.
"""

from __future__ import annotations

import math

import numpy as np

from ..data.batching import resolve_batch_sizes, system_probabilities
from ..errors import ConfigError


def epoch_steps(train_systems, data_conf: dict, world: int = 1) -> int:
    """Steps of one epoch over ``train_systems`` with the batch and probability rules of
    ``data_conf`` (a normalised ``training_data`` section)."""
    sizes = resolve_batch_sizes(data_conf["batch_size"], [s.natoms for s in train_systems])
    nbatch = np.array(
        [math.ceil(s.nframes / b) for s, b in zip(train_systems, sizes)], dtype=np.float64
    )
    probs = np.asarray(
        system_probabilities(
            nbatch.astype(int).tolist(), data_conf.get("sys_probs"), data_conf["auto_prob"]
        ),
        dtype=np.float64,
    )
    if world > 1:
        frames = [math.ceil(s.nframes / world) for s in train_systems]
        nbatch = np.array([math.ceil(f / b) for f, b in zip(frames, sizes)], dtype=np.float64)
    live = probs > 0
    return int(math.ceil(np.max(nbatch[live] / probs[live])))


def resolve_schedule(tr: dict, tasks: dict, world: int = 1) -> tuple[int, np.ndarray | None]:
    """``(numb_steps, task probabilities or None)`` from a normalised ``training`` section;
    ``tasks`` maps task names to objects with ``train_systems`` and ``data_config``."""
    if tr.get("numb_steps") is not None:
        return int(tr["numb_steps"]), None
    if tr.get("numb_epoch") is not None:
        (task,) = tasks.values()
        epoch = epoch_steps(task.train_systems, task.data_config["training_data"], world)
        return int(math.ceil(tr["numb_epoch"] * epoch)), None
    wanted = tr["num_epoch_dict"]
    names = list(tasks)
    steps = np.array(
        [
            float(wanted[n])
            * epoch_steps(tasks[n].train_systems, tasks[n].data_config["training_data"], world)
            for n in names
        ]
    )
    total = float(steps.sum())
    if total <= 0:
        raise ConfigError("training/num_epoch_dict: the epochs give no steps")
    return int(math.ceil(total)), steps / total
