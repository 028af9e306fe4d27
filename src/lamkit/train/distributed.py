"""Data-parallel training under ``torchrun`` (gloo on CPU, nccl on GPU).

lamkit's rule is *one global batch per step*: every rank runs the same sampler with the same
seed, draws the same global batch of ``world_size x batch_size`` frames and keeps its own slice,
so the ranks never exchange data, a restarted run needs only rank 0's sampler state, and a run on
``N`` processes follows the same trajectory as one process with an ``N`` times larger batch
(to rounding). Gradients are averaged with one all-reduce per step; parameters without a
gradient on every rank stay without one (as in a single process), so Adam skips them alike.
Statistics are computed on rank 0 and broadcast with the weights; rank 0 alone writes
checkpoints, ``lcurve.out`` and the log.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def training_device(name: str | None) -> torch.device:
    """The device ``name`` (``--device``), else the GPU when there is one."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> DistContext:
        """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), dist.get_world_size())

    def broadcast_object(self, obj):
        """``obj`` of rank 0 on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Every parameter and buffer of rank 0's ``module`` copied to the other ranks."""
        if not self.enabled:
            return
        seen = set()
        for t in [*module.parameters(), *module.buffers()]:
            if id(t) in seen or t.numel() == 0:
                continue
            seen.add(id(t))
            dist.broadcast(t.data, src=0)

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Gradients averaged over the ranks, in one all-reduce (with a has-gradient flag per
        parameter so that a parameter no rank touched keeps ``grad = None``)."""
        if not self.enabled or not params:
            return
        ref = params[0]
        parts, flags = [], []
        for p in params:
            g = p.grad
            flags.append(0.0 if g is None else 1.0)
            parts.append(torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1))
        flat = torch.cat([*parts, torch.tensor(flags, dtype=parts[0].dtype, device=ref.device)])
        dist.all_reduce(flat)
        flat[: -len(params)] /= self.world
        offset = 0
        for p, used in zip(params, flat[-len(params) :].tolist()):
            n = p.numel()
            if used > 0:
                p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Training metrics of the global batch: root mean square over ranks of ``rmse*``
        values (each rank's is the rms over its slice), the mean of the others."""
        if not self.enabled or not metrics:
            return metrics
        names = sorted(metrics)
        vals = torch.tensor(
            [metrics[n] ** 2 if n.startswith("rmse") else metrics[n] for n in names],
            dtype=torch.float64,
        )
        dist.all_reduce(vals)
        vals /= self.world
        return {
            n: (math.sqrt(max(v, 0.0)) if n.startswith("rmse") else v)
            for n, v in zip(names, vals.tolist())
        }

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
