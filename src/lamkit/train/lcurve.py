"""``lcurve.out``: one line of training (and validation) metrics per display step.

Columns as in DeePMD-kit: ``step``, then per metric ``<name>_val <name>_trn`` (only
``<name>_trn`` without validation data), then ``lr``; multi-task runs suffix every column with
its task (``rmse_e_val_water``) and list the tasks in the order of ``model_dict``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from .plot import plot_lcurve

log = logging.getLogger("lamkit.train")


class LcurveWriter:
    def __init__(self, path: str | Path, tasks: list[str] | None = None, append: bool = False):
        self.path = Path(path)
        self.tasks = tasks
        append = append and self.path.exists()
        self.fh = open(self.path, "a" if append else "w", buffering=1)
        self.header_written = append

    def _columns(self, trn: dict, val: dict) -> list[tuple[str, str, str, str]]:
        """(column name, "val"|"trn", task, metric) in file order; ``val`` first per metric."""
        cols = []
        for task in self.tasks or [None]:
            key = task if self.tasks else next(iter(trn))
            suffix = f"_{task}" if self.tasks else ""
            for m in sorted(trn[key]):
                if val.get(key):
                    cols.append((f"{m}_val{suffix}", "val", key, m))
                cols.append((f"{m}_trn{suffix}", "trn", key, m))
        return cols

    def write(self, step: int, trn: dict[str, dict], val: dict[str, dict], lr: float) -> None:
        """``trn``/``val``: {task: {metric: value}} (single task: one entry)."""
        cols = self._columns(trn, val)
        if not self.header_written:
            names = "".join(f" {c[0]:>11s}" for c in cols)
            self.fh.write(f"# {'step':>5s}{names}   lr\n")
            self.fh.write(
                "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"
            )
            self.header_written = True
        vals = "".join(
            f" {(trn if kind == 'trn' else val)[task].get(m, math.nan):11.2e}"
            for _, kind, task, m in cols
        )
        self.fh.write(f"{step:7d}{vals} {lr:10.1e}\n")

    def close(self) -> None:
        self.fh.close()

    def plot(self) -> Path | None:
        try:
            png = plot_lcurve(self.path)
            log.info("learning curve plotted to %s", png)
            return png
        except Exception as exc:  # noqa: BLE001 - a plot must not fail a finished run
            log.warning("could not plot the learning curve: %s", exc)
            return None


def hms(seconds: float) -> str:
    """``H:MM:SS`` of a duration (the training log's ETA)."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
