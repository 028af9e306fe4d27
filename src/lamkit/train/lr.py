"""Learning-rate schedules (``learning_rate`` section): exp (staircase or smooth) and cosine,
with optional linear warmup, following DeePMD-kit 3.2."""

from __future__ import annotations

import math

from ..config.schema import Arg, normalize
from ..errors import ConfigError

LR_ARGS = (
    Arg("type", (str,), "exp", choices=("exp", "cosine")),
    Arg("start_lr", (float,), 1e-3),
    Arg("stop_lr", (float, type(None)), None),
    Arg("stop_lr_ratio", (float, type(None)), None),
    Arg("decay_steps", (int,), 5000),
    Arg("decay_rate", (float, type(None)), None),
    Arg("smooth", (bool,), False),
    Arg("warmup_steps", (int,), 0),
    Arg("warmup_ratio", (float, type(None)), None),
    Arg("warmup_start_factor", (float,), 0.0),
    Arg("scale_by_worker", (str,), "linear", choices=("linear", "sqrt", "none")),
)


class LearningRate:
    """``lr(step)`` for a whole run of ``num_steps`` steps."""

    def __init__(self, config: dict, num_steps: int):
        c = normalize(config, LR_ARGS, "learning_rate")
        self.config = c
        self.kind = c["type"]
        self.start_lr = c["start_lr"]
        if c["stop_lr"] is not None and c["stop_lr_ratio"] is not None:
            raise ConfigError("learning_rate: give stop_lr or stop_lr_ratio, not both")
        if c["stop_lr_ratio"] is not None:
            self.stop_lr = self.start_lr * c["stop_lr_ratio"]
        else:
            self.stop_lr = 1e-8 if c["stop_lr"] is None else c["stop_lr"]
        if c["warmup_steps"] and c["warmup_ratio"] is not None:
            raise ConfigError("learning_rate: give warmup_steps or warmup_ratio, not both")
        self.warmup = (
            int(c["warmup_ratio"] * num_steps)
            if c["warmup_ratio"] is not None
            else c["warmup_steps"]
        )
        if num_steps > 0 and self.warmup >= num_steps:
            raise ConfigError(f"learning_rate: warmup ({self.warmup}) must be < numb_steps")
        self.warmup_start = c["warmup_start_factor"] * self.start_lr
        self.decay_total = num_steps - self.warmup
        self.decay_steps = c["decay_steps"]
        if self.decay_steps <= 0:
            raise ConfigError("learning_rate/decay_steps must be positive")
        if c["decay_rate"] is None and self.decay_steps >= self.decay_total:
            self.decay_steps = 100 if self.decay_total // 10 > 100 else self.decay_total // 100 + 1
        if c["decay_rate"] is not None:
            self.decay_rate = c["decay_rate"]
        elif self.decay_total == 0:
            self.decay_rate = 1.0
        else:
            self.decay_rate = math.exp(
                math.log(max(self.stop_lr, 1e-10) / self.start_lr)
                / (self.decay_total / self.decay_steps)
            )
        self.smooth = c["smooth"]

    def _decay(self, t: float) -> float:
        if self.kind == "cosine":
            frac = min(t / max(self.decay_total, 1), 1.0)
            return self.stop_lr + (self.start_lr - self.stop_lr) * 0.5 * (
                1 + math.cos(math.pi * frac)
            )
        power = t / self.decay_steps if self.smooth else t // self.decay_steps
        return max(self.start_lr * self.decay_rate**power, self.stop_lr)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_start + (self.start_lr - self.warmup_start) * step / self.warmup
        return self._decay(step - self.warmup)
