"""The ``lam learn`` run state: one JSON file, written atomically after every stage.

``state.json`` holds the iteration, the stages completed in it, the targets, the labelled
data folders, the ensemble of the current iteration and one record per iteration (ratios,
property errors, labels spent). A killed run is started again with the same command and
resumes after the last completed stage: every stage is deterministic given the state (its
random numbers are seeded by the iteration), so the result is the one an uninterrupted run
gives.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: the stages of one iteration, in order
STAGES = ("train", "props", "explore", "select", "label")
FILE = "state.json"


@dataclass
class LearnState:
    iteration: int = 0
    done: list[str] = field(default_factory=list)  # stages completed in this iteration
    initialized: bool = False  # targets computed and the initial frames labelled
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    data: list[str] = field(default_factory=list)  # deepmd/npy systems, relative to the run dir
    labels: int = 0  # frames labelled so far
    failed_labels: int = 0
    models: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    finished: str | None = None  # "converged" | "max_iterations"

    def record(self) -> dict[str, Any]:
        """The record of the current iteration (created on first use)."""
        while len(self.records) <= self.iteration:
            self.records.append({"iteration": len(self.records)})
        return self.records[self.iteration]

    def next_stage(self) -> str | None:
        for s in STAGES:
            if s not in self.done:
                return s
        return None


def write_atomic(path: Path, data: dict) -> None:
    """JSON at ``path`` via a temporary file and rename: never a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_state(run_dir: Path, state: LearnState) -> None:
    write_atomic(Path(run_dir) / FILE, asdict(state))


def load_state(run_dir: Path) -> LearnState:
    """The saved state of ``run_dir``, or a fresh one."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return LearnState()
    try:
        raw = json.loads(path.read_text())
        return LearnState(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path}: not a lam learn state file ({exc})") from None
