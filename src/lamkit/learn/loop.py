"""The ``lam learn`` loop: targets and initial labels once, then per iteration
train -> props -> explore -> select -> label, the state saved after every stage.

    from lamkit.learn import load_config, run_learn
    state = run_learn(load_config("learn.json"), "learn-out")
    state.finished, state.records[-1]["properties"]

The run stops when every property is within tolerance and the accurate ratio of the explored
frames reaches ``converge.accurate_ratio`` (``finished = "converged"``), or after
``converge.max_iterations`` iterations (the last one labels nothing: no training follows).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from ..errors import ConfigError
from .config import LearnConfig
from .label import build_labeller, label_frames, write_labelled
from .properties import (
    build_structure,
    compute_property,
    deformation_pool,
    exploration_cells,
    property_error,
)
from .report import histogram, write_report
from .select import select
from .state import LearnState, load_state, save_state
from .train import check_pretrained, train_ensemble

log = logging.getLogger("lamkit")


class _Stop(Exception):
    """Internal: the stage budget of this call is spent (a simulated kill in tests)."""


class LearnRun:
    """One run folder: the config, its structures and the saved state."""

    def __init__(self, cfg: LearnConfig, run_dir: str | Path, max_stages: int | None = None):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.structures = {
            name: build_structure(name, spec, cfg.base_dir) for name, spec in cfg.structures.items()
        }
        pre_map = check_pretrained(cfg)
        elements = [s for a in self.structures.values() for s in a.get_chemical_symbols()]
        self.type_map = pre_map + [e for e in dict.fromkeys(elements) if e not in pre_map]
        self.state = load_state(self.dir)
        self.budget = max_stages

    # -- bookkeeping ------------------------------------------------------------------------
    def _done(self, stage: str | None) -> None:
        if stage is not None:
            self.state.done.append(stage)
        save_state(self.dir, self.state)
        write_report(self.dir, self.state)
        if self.budget is not None:
            self.budget -= 1
            if self.budget <= 0:
                raise _Stop

    def _iter_dir(self) -> Path:
        d = self.dir / f"iter.{self.state.iteration:03d}"
        d.mkdir(exist_ok=True)
        return d

    def _cells(self) -> list[tuple[str, Atoms, bool]]:
        out = []
        for spec in self.cfg.properties:
            for k, (atoms, is_bulk) in enumerate(
                exploration_cells(spec.name, self.structures[spec.structure])
            ):
                out.append((f"{spec.key}:{k}", atoms, is_bulk))
        return out

    def _pool(self) -> list[tuple[str, Atoms]]:
        out = []
        for spec in self.cfg.properties:
            for k, atoms in enumerate(deformation_pool(spec.name, self.structures[spec.structure])):
                out.append((f"{spec.key}:pool{k}", atoms))
        return out

    def _label(self, frames: list[Atoms], folder: Path) -> tuple[int, list[dict]]:
        labels = label_frames(frames, self.cfg.labeller, self.cfg.workers, self.cfg.cluster)
        good = [k for k, lab in enumerate(labels) if isinstance(lab, dict)]
        failures = [
            {"frame": k, "error": lab} for k, lab in enumerate(labels) if isinstance(lab, str)
        ]
        for f in failures:
            log.warning("learn: labelling frame %d failed, skipped: %s", f["frame"], f["error"])
        if good:
            paths = write_labelled(
                folder, [frames[k] for k in good], [labels[k] for k in good], self.type_map
            )
            self.state.data += [str(p.relative_to(self.dir)) for p in paths]
        self.state.labels += len(good)
        self.state.failed_labels += len(failures)
        return len(good), failures

    # -- stages -----------------------------------------------------------------------------
    def initialize(self) -> None:
        cfg, st = self.cfg, self.state
        calc = build_labeller(cfg.labeller)
        for spec in cfg.properties:
            if spec.targets is not None:
                st.targets[spec.key] = dict(spec.targets)
            else:
                log.info("learn: target %s with the labeller", spec.key)
                st.targets[spec.key] = compute_property(spec, calc, self.structures[spec.structure])
        frames = []
        rng = np.random.default_rng([cfg.train.seed, 12345])
        d = cfg.train.init_perturb
        for _, atoms, _ in self._cells():
            for _ in range(cfg.train.init_frames):
                a = atoms.copy()
                strain = rng.uniform(-d, d, (3, 3))
                a.set_cell(a.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
                a.positions += rng.normal(0.0, d, a.positions.shape)
                frames.append(a)
        if cfg.train.init_pool:
            frames += [a for _, a in self._pool()]
        self._label(frames, self.dir / "data" / "init")
        if not st.data:
            raise ConfigError("labeller: every initial frame failed; see the log")
        st.initialized = True
        self._done(None)

    def train(self) -> None:
        st = self.state
        systems = [self.dir / s for s in st.data]
        models = train_ensemble(self.cfg, systems, self._iter_dir() / "train", st.iteration,
                                self.type_map)
        st.models = [str(m.relative_to(self.dir)) for m in models]
        st.record()["labels_before_train"] = st.labels

    def _calculator(self):
        from ..infer.ensemble import EnsembleCalculator

        return EnsembleCalculator([str(self.dir / m) for m in self.state.models], device="cpu")

    def props(self) -> None:
        calc = self._calculator()
        rec = self.state.record()
        rec["properties"] = {}
        for spec in self.cfg.properties:
            values = compute_property(spec, calc, self.structures[spec.structure])
            rec["properties"][spec.key] = property_error(spec, values, self.state.targets[spec.key])
        rec["props_ok"] = all(q["ok"] for p in rec["properties"].values() for q in p.values())

    def explore(self) -> None:
        from .explore import explore, score_pool

        calc = self._calculator()
        spec, it = self.cfg.explore, self.state.iteration
        frames, devi = explore(self._cells(), calc, spec, it, self.cfg.select.hi)
        if spec.pool:
            pool_frames, pool_devi = score_pool(self._pool(), calc, spec, it)
            frames, devi = frames + pool_frames, devi + pool_devi
        d = self._iter_dir()
        write(d / "explored.extxyz", frames, format="extxyz")
        np.save(d / "max_devi_f.npy", np.asarray(devi, dtype=np.float64))
        np.save(d / "max_devi_v.npy", np.array([f.info["max_devi_v"] for f in frames]))
        rec = self.state.record()
        rec["explored"] = len(frames)
        rec["devi_hist"] = histogram(devi)

    def select(self) -> None:
        d = self._iter_dir()
        devi_v = np.load(d / "max_devi_v.npy") if (d / "max_devi_v.npy").exists() else None
        sel = select(np.load(d / "max_devi_f.npy"), self.cfg.select, self.state.iteration,
                     devi_v)
        rec = self.state.record()
        rec.update(ratios=sel.ratios(), lo=sel.lo, hi=sel.hi, selected=len(sel.chosen))
        (d / "selected.json").write_text(json.dumps(sel.to_dict()))
        ok = bool(rec.get("props_ok")) and sel.ratios()["accurate"] >= self.cfg.accurate_ratio
        rec["converged"] = ok
        if ok:
            self.state.finished = "converged"
        elif self.state.iteration + 1 >= self.cfg.max_iterations:
            self.state.finished = "max_iterations"

    def label(self) -> None:
        d = self._iter_dir()
        chosen = json.loads((d / "selected.json").read_text())["chosen"]
        frames = read(d / "explored.extxyz", index=":") if chosen else []
        picked = [frames[i] for i in chosen]
        for a in picked:
            a.calc = None
        n, failures = self._label(picked, self.dir / "data" / f"iter.{self.state.iteration:03d}")
        rec = self.state.record()
        rec["labelled"] = n
        rec["label_failures"] = failures

    # -- driver -----------------------------------------------------------------------------
    def run(self) -> LearnState:
        st = self.state
        try:
            if not st.initialized:
                self.initialize()
            while st.finished is None:
                stage = st.next_stage()
                if stage is None:
                    st.iteration += 1
                    st.done = []
                    self._done(None)
                    continue
                log.info("learn: iteration %d, stage %s", st.iteration, stage)
                getattr(self, stage)()
                self._done(stage)
        except _Stop:
            pass
        return st


def run_learn(cfg: LearnConfig, run_dir: str | Path, max_stages: int | None = None) -> LearnState:
    """Run (or resume) ``lam learn`` in ``run_dir``; ``max_stages``: stop after that many
    stages (a time-boxed or interrupted run; starting again resumes)."""
    return LearnRun(cfg, run_dir, max_stages).run()
