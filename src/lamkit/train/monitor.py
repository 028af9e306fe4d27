"""What a training run reports besides its checkpoints, as the reference's ``training`` keys ask.

- ``disp_training`` (default true): the metrics of every ``disp_freq``-th step go to
  ``lcurve.out`` and the log; false writes neither (the run still saves its checkpoints).
- ``disp_avg``: the training columns are the mean of the metrics of every step of the display
  interval (per task: of the steps that drew it; NaN for a task that did not run) instead of one
  batch's.
- ``time_training`` (default true): the log lines carry rate and ETA, and the run ends with the
  average time per step; false leaves the timing out.
- ``tensorboard`` (``tensorboard_log_dir``, ``tensorboard_freq``): per task the learning rate,
  the loss and every metric of the step, and the gradient norm when ``gradient_max_norm`` clips,
  as TensorBoard scalars (needs the ``tensorboard`` package: ``pip install lamkit[train]``).
- ``profiling`` / ``enable_profiler``: a :mod:`torch.profiler` trace of a few steps (one step
  skipped, up to 15 warm-up steps, 3 recorded), written as a Chrome trace to ``profiling_file``
  (``profiling``) or as TensorBoard trace files under ``tensorboard_log_dir``
  (``enable_profiler``).

Relative paths are taken from the run's output folder, where ``lcurve.out`` goes.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from ..errors import ConfigError
from .lcurve import hms

log = logging.getLogger("lamkit.train")


class IntervalAverage:
    """Sums of each task's step metrics since the last display (``disp_avg``)."""

    def __init__(self, tasks: list[str]):
        self.tasks = list(tasks)
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, dict[str, float]] = {t: {} for t in self.tasks}
        self.counts = dict.fromkeys(self.tasks, 0)

    def add(self, task: str, metrics: dict) -> None:
        acc = self.sums[task]
        for k, v in metrics.items():
            acc[k] = acc.get(k, 0.0) + float(v)
        self.counts[task] += 1

    def mean(self, task: str, like: dict | None = None) -> dict:
        """The task's mean metrics; a task that did not run in the interval gets NaN for the
        keys of ``like`` (its validation metrics), as the reference's lcurve shows it."""
        n = self.counts[task]
        if n:
            return {k: v / n for k, v in self.sums[task].items()}
        return dict.fromkeys(like or {}, math.nan)


def _resolve(out: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else out / path


class TensorBoardLog:
    """Scalars of the steps ``1, f, 2f, ...`` (``tensorboard_freq`` f) per task."""

    def __init__(self, log_dir: Path, freq: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "training/tensorboard: writing TensorBoard logs needs the 'tensorboard' package "
                "(pip install 'lamkit[train]' or pip install tensorboard)"
            ) from exc
        if freq < 1:
            raise ConfigError(f"training/tensorboard_freq: expected a positive integer, got {freq}")
        self.freq = freq
        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def step(self, step: int, task: str, lr: float, loss, metrics: dict, grad_norm=None) -> None:
        """``step`` counts from 1 (the reference's display step)."""
        if step % self.freq and step != 1:
            return
        self.writer.add_scalar(f"{task}/lr", lr, step)
        self.writer.add_scalar(f"{task}/loss", float(loss), step)
        for k, v in metrics.items():
            self.writer.add_scalar(f"{task}/{k}", float(v), step)
        if grad_norm is not None:
            self.writer.add_scalar(f"{task}/grad/total_norm", float(grad_norm), step)

    def close(self) -> None:
        self.writer.close()
        log.info("TensorBoard logs written to %s", self.log_dir)


class StepProfiler:
    """A :mod:`torch.profiler` run over the first steps: ``step()`` once per training step."""

    def __init__(self, tr: dict, out: Path, num_steps: int):
        self.chrome = None if tr["enable_profiler"] else _resolve(out, tr["profiling_file"])
        self.trace_dir = _resolve(out, tr["tensorboard_log_dir"])
        wait = 1 if num_steps > 4 else 0
        warmup = max(0, min(15, num_steps - wait - 3))
        active = max(1, min(3, num_steps - wait - warmup))
        handler = None
        if self.chrome is None:
            handler = torch.profiler.tensorboard_trace_handler(str(self.trace_dir))
        self.prof = torch.profiler.profile(
            schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=handler,
            record_shapes=True,
            with_stack=True,
        )
        self.prof.start()

    def step(self) -> None:
        self.prof.step()

    def close(self) -> None:
        self.prof.stop()
        if self.chrome is None:
            log.info("profiler trace written under %s", self.trace_dir)
            return
        try:
            self.prof.export_chrome_trace(str(self.chrome))
        except RuntimeError as exc:  # the schedule never reached its recorded steps
            log.warning("profiling: no trace written to %s (%s)", self.chrome, exc)
            return
        log.info("profiler trace written to %s", self.chrome)


class RunMonitor:
    """The reporting side of one training run, built from the ``training`` section."""

    def __init__(self, tr: dict, out: Path, tasks: list[str], num_steps: int, main: bool):
        self.display = bool(tr["disp_training"])
        self.timing = bool(tr["time_training"])
        self.average = IntervalAverage(tasks) if tr["disp_avg"] else None
        self.tb = None
        self.profiler = None
        if main and tr["tensorboard"]:
            self.tb = TensorBoardLog(
                _resolve(out, tr["tensorboard_log_dir"]), tr["tensorboard_freq"]
            )
        if main and (tr["profiling"] or tr["enable_profiler"]):
            self.profiler = StepProfiler(tr, out, num_steps)
        if main and not self.display:
            log.info("training/disp_training is false: no lcurve.out and no metric lines")

    def after_step(self, step: int, task: str, lr: float, loss, metrics: dict, grad_norm) -> None:
        """``step`` counts from 0."""
        if self.profiler is not None:
            self.profiler.step()
        if self.average is not None:
            self.average.add(task, metrics)
        if self.tb is not None:
            self.tb.step(step + 1, task, lr, loss, metrics, grad_norm)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.profiler is not None:
            self.profiler.close()


class ProgressClock:
    """The display line: every task's metrics, and with ``time_training`` the rate and ETA."""

    def __init__(self, start_step: int, num_steps: int):
        self.start_step, self.num_steps = start_step, num_steps
        self.t_start = self.t_last = time.perf_counter()

    def line(self, step: int, tasks: list[str], trn: dict, val: dict, lr: float, timing: bool):
        now = time.perf_counter()
        multi = len(tasks) > 1
        parts = []
        for name in tasks:
            head = f"[{name}] " if multi else ""
            msg = ", ".join(f"{k} = {v:.2e}" for k, v in trn[name].items())
            vmsg = ", ".join(f"{k} = {v:.2e}" for k, v in val[name].items())
            parts.append(f"{head}trn {msg}" + (f" | val {vmsg}" if vmsg else ""))
        text = f"step {step + 1}/{self.num_steps}: {' || '.join(parts)} | lr {lr:.2e}"
        if timing:
            rate = (step + 1 - self.start_step) / max(now - self.t_start, 1e-12)
            eta = (self.num_steps - step - 1) / max(rate, 1e-12)
            text += f" | {rate:.2f} steps/s, {now - self.t_last:.1f} s since last, ETA {hms(eta)}"
        self.t_last = now
        return text

