"""The training loop: ``lam train input.json``.

A plain loop: draw a batch, build (cached) neighbour data, forward with forces, loss,
backward, clip, Adam step. Every ``disp_freq`` steps the training and validation metrics go to
``lcurve.out`` and the log (with rate and ETA); every ``save_freq`` steps a checkpoint that
holds the model, optimizer, sampler and RNG states, so ``--restart`` continues exactly.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from .. import keys
from ..config.input import normalize_input
from ..data import MultiSystemSampler, load_systems, resolve_batch_sizes, system_probabilities
from ..data.system import DataRequirement
from ..descriptor import DESCRIPTORS
from ..errors import ConfigError
from ..model import AtomicModel, build_model, normalize_model_config
from ..model.io import FORMAT, VERSION, model_from_payload, read_file
from ..runtime import tune_allocator
from .checkpoint import latest_checkpoint, save_checkpoint
from .loss import build_loss
from .lr import LearningRate
from .plot import plot_lcurve
from .stats import auto_selections, resolve_auto_sel, set_model_statistics, stat_batches

log = logging.getLogger("lamkit.train")


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class Trainer:
    """Builds data, model, loss and optimizer from an input config and runs the loop."""

    def __init__(
        self,
        config: dict,
        output: str | Path = ".",
        restart: str | None = None,
        init_model: str | None = None,
        skip_neighbor_stat: bool = False,
        device: str | None = None,
    ):
        tune_allocator()
        self.out = Path(output)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = _device(device)
        self.config = normalize_input(copy.deepcopy(config))
        tr = self.config["training"]
        self.tr = tr
        self.num_steps = tr["numb_steps"]
        seed = tr["seed"]
        if seed is not None:
            torch.manual_seed(seed)

        resume = read_file(latest_checkpoint(restart)) if restart else None
        if resume is not None and resume.get("format") != FORMAT:
            raise ConfigError(
                f"--restart {restart}: not a lamkit training checkpoint "
                "(use --init-model to start from other weights)"
            )
        mconf = resume["model_config"] if resume else normalize_model_config(self.config["model"])
        self.type_map = mconf["type_map"]

        lr_conf = self.config.get("learning_rate") or {}
        if tr["warmup_steps"] and "warmup_steps" not in lr_conf:
            lr_conf = {**lr_conf, "warmup_steps": tr["warmup_steps"]}
        self.lr = LearningRate(lr_conf, self.num_steps)
        self.loss = build_loss(self.config.get("loss"), self.lr.start_lr, mconf)

        reqs = list(self.loss.requirements())
        fit = mconf["fitting_net"]
        if fit.get("numb_fparam"):
            reqs.append(
                DataRequirement(
                    "fparam", fit["numb_fparam"], must=fit.get("default_fparam") is None
                )
            )
        if fit.get("numb_aparam"):
            reqs.append(DataRequirement("aparam", fit["numb_aparam"], atomic=True, must=True))
        self.train_systems = load_systems(tr["training_data"]["systems"], self.type_map, reqs)
        val = tr["validation_data"]
        self.valid_systems = load_systems(val["systems"], self.type_map, reqs) if val else []
        self._check_types(mconf)

        if resume is None:
            self._resolve_auto_sel(mconf["descriptor"], skip_neighbor_stat)

        self.model: AtomicModel = build_model(mconf).to(self.device)
        self.model_config = self.model.config
        self.loss.attach(self.model)  # the property loss reads the model's out_bias/out_std

        sizes = resolve_batch_sizes(
            tr["training_data"]["batch_size"], [s.natoms for s in self.train_systems]
        )
        self.sampler = self._sampler(self.train_systems, sizes, tr["training_data"], seed)
        log.info("%s", self.sampler.describe("training"))
        self.valid_sampler = None
        if self.valid_systems:
            vsizes = resolve_batch_sizes(val["batch_size"], [s.natoms for s in self.valid_systems])
            vseed = None if seed is None else seed + 7919
            self.valid_sampler = self._sampler(self.valid_systems, vsizes, val, vseed)
            log.info("%s", self.valid_sampler.describe("validation"))
        self.builder = self.model.neighbor_builder(cache=True)
        self.vbuilder = self.model.neighbor_builder(cache=True)

        opt = self.config["optimizer"]
        cls = torch.optim.AdamW if opt["type"] == "AdamW" else torch.optim.Adam
        wd = (
            opt["weight_decay"]
            if opt["weight_decay"] is not None
            else (1e-3 if opt["type"] == "AdamW" else 0.0)
        )
        self.optimizer = cls(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.lr(0),
            betas=(opt["adam_beta1"], opt["adam_beta2"]),
            weight_decay=wd,
        )
        self.start_step = 0
        if resume is not None:
            self._restore(resume)
            log.info("restarted from %s at step %d", restart, self.start_step)
        else:
            if init_model:
                self._init_from(init_model)
            else:
                nb = self.model_config.get("data_stat_nbatch", 10)
                batches = stat_batches(self.train_systems, sizes, nb, seed)
                set_model_statistics(
                    self.model.cpu(), batches, self.model_config, self._stat_file()
                )
                self.model.to(self.device)
        (self.out / "out.json").write_text(
            json.dumps({**self.config, "model": self.model_config}, indent=2, default=str)
        )

    # --- setup helpers ----------------------------------------------------------------------
    def _stat_file(self):
        sf = self.tr["stat_file"]
        return None if sf is None else str(sf)

    def _resolve_auto_sel(self, dconf: dict, skip_neighbor_stat: bool) -> None:
        """Neighbour counts given as "auto"/"auto:factor" (``sel``; DPA-2's repinit ``nsel``,
        ``three_body_sel`` and repformer ``nsel``) from the training data, in place."""
        auto = ["/".join(path) for _, path, _ in auto_selections(dconf)]
        if auto and skip_neighbor_stat:
            raise ConfigError(
                f"model/descriptor: {', '.join(auto)} is 'auto': it needs the neighbour "
                "statistics, so --skip-neighbor-stat cannot be used"
            )
        for line in resolve_auto_sel(dconf, self.train_systems, len(self.type_map)):
            log.info("%s", line)

    def _check_types(self, mconf):
        typed = not DESCRIPTORS.get(mconf["descriptor"]["type"]).mixed_types
        for s in self.train_systems + self.valid_systems:
            if s.mixed_type and typed:
                raise ConfigError(
                    f"{s.path}: mixed-type data needs a mixed-type descriptor (dpa1, dpa2, "
                    f"se_e3_tebd); '{mconf['descriptor']['type']}' distinguishes neighbour types"
                )

    @staticmethod
    def _sampler(systems, sizes, data_conf, seed):
        nb = [math.ceil(s.nframes / b) for s, b in zip(systems, sizes)]
        probs = system_probabilities(nb, data_conf.get("sys_probs"), data_conf["auto_prob"])
        return MultiSystemSampler(systems, sizes, probs, seed)

    def _init_from(self, path: str):
        src = model_from_payload(read_file(latest_checkpoint(path)), str(path))
        if src.type_map != self.model.type_map:
            raise ConfigError(
                f"--init-model {path}: its type_map {src.type_map} differs from "
                f"the input's {self.model.type_map}"
            )
        try:
            self.model.load_state_dict(src.state_dict())
        except RuntimeError as exc:
            raise ConfigError(
                f"--init-model {path}: the architecture differs from the input's "
                f"model section ({exc})"
            ) from exc
        log.info("weights and statistics initialised from %s", path)

    def _restore(self, ck: dict):
        self.model.load_state_dict(ck["model_state"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.start_step = int(ck["step"])
        self.sampler.load_state_dict(ck["sampler"])
        if self.valid_sampler is not None and ck.get("valid_sampler"):
            self.valid_sampler.load_state_dict(ck["valid_sampler"])
        if ck.get("torch_rng") is not None:
            torch.set_rng_state(ck["torch_rng"])

    def _payload(self, step: int) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": "checkpoint",
            "model_config": self.model_config,
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": step,
            "lr": self.lr(step),
            "train_config": self.config,
            "sampler": self.sampler.state_dict(),
            "valid_sampler": self.valid_sampler.state_dict() if self.valid_sampler else None,
            "torch_rng": torch.get_rng_state(),
        }

    # --- one step -----------------------------------------------------------------------------
    def _predict(self, batch, builder, create_graph):
        sid = batch[keys.SID]
        nbr = builder(
            batch[keys.COORD],
            batch[keys.ATYPE],
            batch.get(keys.BOX),
            cache_keys=[(sid, f) for f in batch[keys.FID]],
        )
        batch = _to(batch, self.device)
        nbr = _to(nbr, self.device)
        need = self.loss.need
        pred = self.model(
            batch[keys.COORD],
            batch[keys.ATYPE],
            batch.get(keys.BOX),
            nbr,
            batch.get("fparam"),
            batch.get("aparam"),
            do_force=need["force"],
            do_virial=need["virial"],
            create_graph=create_graph,
        )
        return pred, batch

    def train_step(self, step: int) -> dict:
        lr = self.lr(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        pred, batch = self._predict(self.sampler.next(), self.builder, create_graph=True)
        loss, more = self.loss(pred, batch, lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gmax = self.tr["gradient_max_norm"]
        if gmax:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), gmax)
            if not torch.isfinite(norm):
                raise FloatingPointError(f"step {step + 1}: the gradient norm is {norm}")
        self.optimizer.step()
        return more

    def validate(self, lr: float) -> dict:
        if self.valid_sampler is None:
            return {}
        total, acc = 0, {}
        for _ in range(self.tr["validation_data"]["numb_btch"]):
            pred, batch = self._predict(self.valid_sampler.next(), self.vbuilder, False)
            _, more = self.loss(pred, batch, lr)
            n = batch[keys.COORD].shape[1]
            total += n
            for k, v in more.items():
                acc[k] = acc.get(k, 0.0) + n * v
        return {k: v / total for k, v in acc.items()}

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> Path:
        tr = self.tr
        lcurve = self.out / tr["disp_file"]
        mode = "a" if self.start_step > 0 and lcurve.exists() else "w"
        fh = open(lcurve, mode, buffering=1)
        header_written = mode == "a"
        t_start = time.perf_counter()
        t_disp = t_start
        step_times = []
        last_ckpt = None
        self.model.train()
        for step in range(self.start_step, self.num_steps):
            t0 = time.perf_counter()
            more = self.train_step(step)
            step_times.append(time.perf_counter() - t0)
            disp = (step + 1) % tr["disp_freq"] == 0 or step == self.start_step
            if disp:
                lr = self.lr(step)
                val = self.validate(lr)
                names = sorted(more)
                if not header_written:
                    cols = "".join(
                        f" {n + '_val':>11s} {n + '_trn':>11s}" if val else f" {n + '_trn':>11s}"
                        for n in names
                    )
                    fh.write(f"# {'step':>5s}{cols}   lr\n")
                    fh.write(
                        "# If there is no available reference data, "
                        "rmse_*_{val,trn} will print nan\n"
                    )
                    header_written = True
                vals = "".join(
                    (
                        f" {val.get(n, math.nan):11.2e} {more[n]:11.2e}"
                        if val
                        else f" {more[n]:11.2e}"
                    )
                    for n in names
                )
                fh.write(f"{step + 1:7d}{vals} {lr:10.1e}\n")
                now = time.perf_counter()
                done = step + 1 - self.start_step
                rate = done / (now - t_start)
                eta = (self.num_steps - step - 1) / max(rate, 1e-12)
                msg = ", ".join(f"{k} = {v:.2e}" for k, v in more.items())
                vmsg = ", ".join(f"{k} = {v:.2e}" for k, v in val.items())
                log.info(
                    "step %d/%d: trn %s%s | lr %.2e | %.2f steps/s, %.1f s since last, ETA %s",
                    step + 1,
                    self.num_steps,
                    msg,
                    f" | val {vmsg}" if vmsg else "",
                    lr,
                    rate,
                    now - t_disp,
                    _hms(eta),
                )
                t_disp = now
            if (step + 1) % tr["save_freq"] == 0 or step + 1 == self.num_steps:
                last_ckpt = save_checkpoint(
                    self._payload(step + 1),
                    self.out,
                    tr["save_ckpt"],
                    step + 1,
                    tr["max_ckpt_keep"],
                )
                log.info("saved checkpoint %s", last_ckpt)
        fh.close()
        if len(step_times) > 2:
            avg = (
                float(np.mean(step_times[2:]))
                if len(step_times) > 4
                else float(np.mean(step_times))
            )
            log.info("average training time: %.4f s/step (first 2 steps excluded)", avg)
            self.avg_step_time = avg
        if lcurve.exists():
            try:
                png = plot_lcurve(lcurve)
                log.info("learning curve plotted to %s", png)
            except Exception as exc:  # noqa: BLE001 - a plot must not fail a finished run
                log.warning("could not plot the learning curve: %s", exc)
        return last_ckpt


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def train(config: dict, output=".", **kw) -> Path:
    """Train from a config dict; returns the last checkpoint path."""
    return Trainer(config, output, **kw).run()
