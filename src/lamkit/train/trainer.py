"""The training loop: ``lam train input.json``.

A plain loop: pick the task of the step (multi-task runs draw it with ``model_prob``), draw a
batch, build (cached) neighbour data, forward with forces, loss, backward, (all-reduce under
``torchrun``), clip, Adam step. Every ``disp_freq`` steps the training and validation metrics
of every task go to ``lcurve.out`` and the log (with rate and ETA); every ``save_freq`` steps a
checkpoint that holds the model, optimizer, sampler and RNG states, so ``--restart`` continues
exactly.

Where the weights come from: a fresh model gets its statistics from the data (descriptor
davg/dstd, merged over the tasks that share a descriptor; output bias per task);
``--init-model`` copies a model of the same architecture; ``--finetune`` follows
:mod:`lamkit.train.finetune`; ``--restart`` continues a lamkit checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import keys
from ..config.input import ignored_training_keys, keep_counts, normalize_input
from ..config.multitask import SharedLink, case_embd_index, expand_model_dict, is_multitask
from ..config.schema import normalize
from ..errors import ConfigError
from ..model import build_model, normalize_model_config
from ..model.io import FORMAT, VERSION, read_file
from ..model.multitask import MultiTaskModel, merge_descriptor_stats
from ..runtime import tune_allocator
from . import finetune as ft
from .checkpoint import latest_checkpoint, save_checkpoint
from .compiled import compiled_forwards
from .distributed import DistContext, training_device
from .ema import WeightAverage, ema_prefix
from .lcurve import LcurveWriter
from .lr import LR_ARGS, LearningRate
from .monitor import ProgressClock, RunMonitor
from .schedule import resolve_schedule
from .stats import (
    auto_selections,
    resolve_auto_sel,
    set_model_statistics,
    stat_batches,
)
from .tasks import DEFAULT, Task, attach_samplers, make_task, task_probabilities

log = logging.getLogger("lamkit.train")


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class Trainer:
    """Builds data, model(s), losses and optimizer from an input config and runs the loop.

    Args:
        config: the input (DeePMD-kit v3 schema), single- or multi-task.
        output: folder for checkpoints, ``lcurve.out`` and ``out.json``.
        restart: a lamkit checkpoint (or its folder) to continue exactly.
        init_model: a model of the same architecture to start from (lamkit or DeePMD-kit).
        finetune: a pretrained model to fine-tune (:mod:`lamkit.train.finetune`).
        model_branch: the pretrained branch for a single-task fine-tune (or ``RANDOM``).
        use_pretrain_script: take descriptor and fitting configs from the pretrained model.
    """

    def __init__(
        self,
        config: dict,
        output: str | Path = ".",
        restart: str | None = None,
        init_model: str | None = None,
        skip_neighbor_stat: bool = False,
        device: str | None = None,
        finetune: str | None = None,
        model_branch: str | None = None,
        use_pretrain_script: bool = False,
    ):
        tune_allocator()
        if sum(x is not None for x in (restart, init_model, finetune)) > 1:
            raise ConfigError("--restart, --init-model and --finetune exclude each other")
        self.out = Path(output)
        self._setup_processes(device)
        self.config = normalize_input(copy.deepcopy(config))
        tr = self.config["training"]
        self.tr = tr
        for message in ignored_training_keys(tr) if self.dist.is_main else ():
            log.warning("%s", message)
        self.seed = tr["seed"]
        if self.seed is not None:
            torch.manual_seed(self.seed)

        resume = read_file(latest_checkpoint(restart)) if restart else None
        if resume is not None and resume.get("format") != FORMAT:
            raise ConfigError(
                f"--restart {restart}: not a lamkit training checkpoint "
                "(use --init-model to start from other weights)"
            )
        pre = ft.Pretrained(finetune) if finetune else None
        confs, links, rules = self._model_configs(resume, pre, model_branch, use_pretrain_script)
        self.multi = len(confs) > 1 or is_multitask(self.config["model"])

        lr_conf = self.config.get("learning_rate") or {}
        if tr["warmup_steps"] and "warmup_steps" not in lr_conf:
            lr_conf = {**lr_conf, "warmup_steps": tr["warmup_steps"]}
        self.tasks = self._make_tasks(confs, normalize(lr_conf, LR_ARGS, "learning_rate"))
        self.num_steps, epoch_prob = resolve_schedule(tr, self.tasks, self.dist.world)
        if tr["numb_steps"] is None:
            log.info("%d training steps from the epochs asked for", self.num_steps)
        self.lr = LearningRate(lr_conf, self.num_steps)
        self.replay = None
        if tr.get("replay"):
            from .replay import add_replay_task

            self.replay = add_replay_task(self, tr["replay"], pre, rules, links, resume)
            self.multi = True
        if resume is None:
            self._resolve_auto_sel(links, skip_neighbor_stat)

        self._build_models(confs, links, fresh=resume is None and pre is None and not init_model)
        self._attach_samplers()
        self._task_choice(epoch_prob)

        self.start_step = 0
        if resume is None:
            self._initial_weights(init_model, pre, rules)
        if self.multi:
            self.model.share()
        self.dist.broadcast_module(self.model)
        self.params = self._unique_params()
        self.optimizer = self._optimizer(self.params)
        self.ema = WeightAverage(self.model, tr["ema_decay"]) if tr["enable_ema"] else None
        self.keep, self.ema_keep = keep_counts(tr, self.num_steps)
        if tr["enable_tf32"] and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        # training.enable_compile: energy + force (+ virial) through compiled graphs
        self.compiled = compiled_forwards(self.tasks, tr["enable_compile"])
        if resume is not None:
            self._restore(resume)
            log.info("restarted from %s at step %d", restart, self.start_step)
        if self.dist.is_main:
            (self.out / "out.json").write_text(
                json.dumps({**self.config, "model": self.model_config}, indent=2, default=str)
            )

    # --- setup helpers ----------------------------------------------------------------------
    def _setup_processes(self, device: str | None) -> None:
        """Device, torchrun data parallelism (rank 0 alone logs) and the output folder."""
        self.device = training_device(device)
        self.dist = DistContext.from_env(self.device)
        if self.dist.enabled and self.dist.is_main:
            log.info(
                "data parallel: %d processes, each with its slice of every global batch",
                self.dist.world,
            )
        if not self.dist.is_main:  # warnings and errors still show
            logging.getLogger("lamkit").setLevel(logging.WARNING)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    def _build_models(self, confs: dict, links: list[SharedLink], fresh: bool) -> None:
        """Every task's model (one multi-task model over them when there are several)."""
        for t in self.tasks.values():
            t.model = build_model(t.model_config).to(self.device)
            t.model_config = t.model.config
            t.loss.attach(t.model)  # the property loss reads the model's out_bias/out_std
        self.links = links
        if self.multi:
            self.model = MultiTaskModel({n: t.model for n, t in self.tasks.items()}, links, False)
            for task, k in case_embd_index(confs if fresh else {}).items():  # else: loaded
                self.tasks[task].model.fitting.set_case_embd(k)
        else:
            self.model = self.tasks[DEFAULT].model
        self.model_config = self._model_config()

    def _task_choice(self, epoch_prob) -> None:
        """Task probabilities (``model_prob``, or from ``num_epoch_dict``) and their RNG."""
        self.task_names = list(self.tasks)
        self.task_prob = task_probabilities(list(self.tasks.values()), self.tr.get("model_prob"))
        if epoch_prob is not None:  # num_epoch_dict (multi-task inputs have no replay)
            self.task_prob = epoch_prob
        if self.multi:
            probs = dict(zip(self.task_names, np.round(self.task_prob, 4).tolist()))
            log.info("task probabilities: %s", probs)
        seed = self.seed
        self.task_rng = np.random.default_rng(None if seed is None else [seed, 4231])

    def _attach_samplers(self) -> None:
        for t in self.tasks.values():
            attach_samplers(t, self.seed, self.dist.rank, self.dist.world)
            log.info(
                "%s", t.sampler.describe(f"training of {t.name}" if self.multi else "training")
            )
            if t.valid_sampler is not None:
                log.info("%s", t.valid_sampler.describe("validation"))

    def _model_configs(self, resume, pre, model_branch, use_pretrain_script):
        """Per-task model configs, sharing links and fine-tuning rules."""
        if resume is not None:
            mc = resume["model_config"]
            if "model_dict" in mc:
                links = [SharedLink.from_dict(d) for d in mc.get("shared_links", [])]
                confs = dict(mc["model_dict"])
                if resume.get("replay"):  # rebuilt with its own data by add_replay_task
                    confs.pop("replay", None)
                return confs, links, {}
            return {DEFAULT: mc}, [], {}
        section = self.config["model"]
        if is_multitask(section):
            confs, links = expand_model_dict(section)
        else:
            confs, links = {DEFAULT: section}, []
        rules = {}
        if pre is not None:
            confs, rules = ft.plan(
                pre,
                confs,
                len(links) > 0 or is_multitask(section),
                model_branch,
                use_pretrain_script,
            )
        elif model_branch is not None or use_pretrain_script:
            raise ConfigError("--model-branch and --use-pretrain-script go with --finetune")
        where = "model/model_dict/{}" if is_multitask(section) else "model"
        confs = {t: normalize_model_config(c, where.format(t)) for t, c in confs.items()}
        return confs, links, rules

    def _make_tasks(self, confs: dict[str, dict], lr_conf: dict) -> dict[str, Task]:
        tr, start_lr = self.tr, lr_conf["start_lr"]
        tasks = {}
        for name, conf in confs.items():
            if "data_dict" in tr:
                data_conf = tr["data_dict"][name]
                loss_conf = (self.config.get("loss_dict") or {}).get(name)
            else:
                names = ("training_data", "validation_data", "stat_file", "stat_file_mode")
                data_conf = {k: tr[k] for k in names}
                loss_conf = self.config.get("loss")
            tasks[name] = make_task(name, conf, data_conf, loss_conf, start_lr)
        return tasks

    def _resolve_auto_sel(self, links: list[SharedLink], skip_neighbor_stat: bool) -> None:
        """Neighbour counts given as "auto"/"auto:factor" (``sel``; DPA-2's repinit ``nsel``,
        ``three_body_sel`` and repformer ``nsel``) from the training data of every task that
        uses the descriptor; computed on rank 0."""
        groups = [[t for t, _ in link.links] for link in links if link.kind == "descriptor"]
        linked = {t for g in groups for t in g}
        groups += [[t] for t in self.tasks if t not in linked]
        for group in groups:
            dconf = self.tasks[group[0]].model_config["descriptor"]
            auto = ["/".join(path) for _, path, _ in auto_selections(dconf)]
            if not auto:
                continue
            if skip_neighbor_stat:
                raise ConfigError(
                    f"model/descriptor: {', '.join(auto)} is 'auto': it needs the neighbour "
                    "statistics, so --skip-neighbor-stat cannot be used"
                )
            systems = [s for t in group for s in self.tasks[t].train_systems]
            ntypes = len(self.tasks[group[0]].model_config["type_map"])
            if self.dist.is_main:
                for line in resolve_auto_sel(dconf, systems, ntypes):
                    log.info("%s", line)
            dconf = self.dist.broadcast_object(dconf)
            for t in group:  # a shared descriptor gets one resolved config
                self.tasks[t].model_config["descriptor"] = copy.deepcopy(dconf)

    def _model_config(self) -> dict:
        if not self.multi:
            return self.model.config
        conf = self.model.config
        if self.replay is not None:
            conf["default_head"] = DEFAULT
        return conf

    def _unique_params(self) -> list[torch.nn.Parameter]:
        seen, out = set(), []
        for p in self.model.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def _optimizer(self, params):
        opt = self.config["optimizer"]
        cls = torch.optim.AdamW if opt["type"] == "AdamW" else torch.optim.Adam
        wd = opt["weight_decay"]
        if wd is None:
            wd = 1e-3 if opt["type"] == "AdamW" else 0.0
        return cls(
            params,
            lr=self.lr(0),
            betas=(opt["adam_beta1"], opt["adam_beta2"]),
            weight_decay=wd,
        )

    def _stat_batches(self, task: Task) -> list[dict]:
        """Statistics batches of a task: ``data_stat_nbatch`` global batches per system."""
        nb = task.model_config.get("data_stat_nbatch", 10)
        sizes = [b * self.dist.world for b in task.batch_sizes]
        return stat_batches(task.train_systems, sizes, nb, self.seed)

    @torch.no_grad()
    def _initial_weights(self, init_model, pre, rules) -> None:
        """Weights and statistics of a new run (computed on rank 0, broadcast later)."""
        if init_model:
            ft.init_from_model(self.model, init_model, self.multi)
            return
        if not self.dist.is_main:
            return
        for t in self.tasks.values():
            if t.name in rules:
                ft.apply(t, rules[t.name], pre, self._stat_batches(t))
        stats = {}
        for t in self.tasks.values():
            if t.name in rules:
                continue
            t.model.cpu()
            stats[t.name] = set_model_statistics(
                t.model, self._stat_batches(t), t.model_config, t.stat_file, t.stat_file_mode
            )
            t.model.to(self.device)
        if self.multi:
            self._merge_shared_stats(stats)

    def _merge_shared_stats(self, stats: dict) -> None:
        """davg/dstd of a descriptor shared (level 0) by several fresh tasks from the sum of
        their statistics, as DeePMD-kit's ``share_params`` does."""
        for group in self.model.shared_descriptor_groups():
            group = [t for t in group if t in stats]
            if len(group) < 2:
                continue
            base = self.tasks[group[0]]
            merged = merge_descriptor_stats([stats[t] for t in group])
            protect = base.model_config.get("data_stat_protect", 1e-2)
            base.model.descriptor.set_stat(merged, protect)
            log.info("descriptor statistics merged over the tasks %s", group)

    def _restore(self, ck: dict):
        if ck.get("optimizer") is None:
            raise ConfigError(
                "--restart: this checkpoint holds averaged (EMA) weights only, no optimizer "
                "state; restart from the regular checkpoint, or start from it with --init-model"
            )
        self.model.load_state_dict(ck["model_state"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.start_step = int(ck["step"])
        if self.ema is not None:
            if ck.get("ema") is not None:
                self.ema.load_state_dict(ck["ema"], "--restart")
            else:
                log.warning("--restart: the checkpoint has no EMA weights; the average starts now")
        samplers = ck["sampler"] if self.multi else {DEFAULT: ck["sampler"]}
        vsamplers = ck.get("valid_sampler") if self.multi else {DEFAULT: ck.get("valid_sampler")}
        for name, t in self.tasks.items():
            t.sampler.load_state_dict(samplers[name])
            if t.valid_sampler is not None and (vsamplers or {}).get(name):
                t.valid_sampler.load_state_dict(vsamplers[name])
        if ck.get("task_rng") is not None:
            self.task_rng.bit_generator.state = ck["task_rng"]
        if ck.get("torch_rng") is not None:
            torch.set_rng_state(ck["torch_rng"])

    def _payload(self, step: int) -> dict:
        def per_task(get):
            states = {n: get(t) for n, t in self.tasks.items()}
            return states if self.multi else states[DEFAULT]

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
            "sampler": per_task(lambda t: t.sampler.state_dict()),
            "valid_sampler": per_task(
                lambda t: t.valid_sampler.state_dict() if t.valid_sampler else None
            ),
            "task_rng": self.task_rng.bit_generator.state,
            "replay": None if self.replay is None else self.replay.to_dict(),
            "torch_rng": torch.get_rng_state(),
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    # --- one step -----------------------------------------------------------------------------
    def _predict(self, task: Task, batch, builder, create_graph):
        sid = batch[keys.SID]
        extra = getattr(task.model, "extra_inputs", ())  # e.g. spin models: the atomic spins
        nbr = builder(
            batch[keys.COORD],
            batch[keys.ATYPE],
            batch.get(keys.BOX),
            cache_keys=[(sid, f) for f in batch[keys.FID]],
            **{k: batch[k] for k in extra},
        )
        batch = _to(batch, self.device)
        nbr = _to(nbr, self.device)
        need = task.loss.need
        fast = self.compiled.get(task.name) if create_graph and need["force"] else None
        fast = None if extra else fast
        if fast is not None:
            pred = fast(
                batch[keys.COORD],
                batch[keys.ATYPE],
                batch.get(keys.BOX),
                nbr,
                batch.get("fparam"),
                batch.get("aparam"),
                do_virial=need["virial"],
            )
            if pred is not None:
                return pred, batch
        pred = task.model(
            batch[keys.COORD],
            batch[keys.ATYPE],
            batch.get(keys.BOX),
            nbr,
            batch.get("fparam"),
            batch.get("aparam"),
            do_force=need["force"],
            do_virial=need["virial"],
            create_graph=create_graph,
            **{k: batch[k] for k in extra},
        )
        return pred, batch

    def choose_task(self) -> str:
        if len(self.task_names) == 1:
            return self.task_names[0]
        return self.task_names[int(self.task_rng.choice(len(self.task_names), p=self.task_prob))]

    def train_step(self, step: int, task: str = DEFAULT) -> dict:
        t = self.tasks[task]
        lr = self.lr(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        pred, batch = self._predict(t, t.sampler.next(), t.builder, create_graph=True)
        loss, more = t.loss(pred, batch, lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(self.params)
        gmax = self.tr["gradient_max_norm"]
        self.last_loss, self.last_norm = loss.detach(), None
        if gmax:
            norm = torch.nn.utils.clip_grad_norm_(self.params, gmax)
            if not torch.isfinite(norm):
                raise FloatingPointError(f"step {step + 1}: the gradient norm is {norm}")
            self.last_norm = norm
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return more

    def train_metrics(self, task: str, lr: float) -> dict:
        """Metrics of one training batch of a task that did not run this step (display).

        The batch is peeked, not consumed: the sampler is put back as it was, so that how often
        the run displays (and a restart, which displays at its first step) does not change the
        batches the tasks train on."""
        t = self.tasks[task]
        state = t.sampler.state_dict()
        batch = t.sampler.next()
        t.sampler.load_state_dict(state)
        pred, batch = self._predict(t, batch, t.builder, False)
        return t.loss(pred, batch, lr)[1]

    def validate(self, task: str, lr: float) -> dict:
        t = self.tasks[task]
        if t.valid_sampler is None:
            return {}
        total, acc = 0, {}
        for _ in range(t.data_config["validation_data"]["numb_btch"]):
            pred, batch = self._predict(t, t.valid_sampler.next(), t.vbuilder, False)
            _, more = t.loss(pred, batch, lr)
            n = batch[keys.COORD].shape[1]
            total += n
            for k, v in more.items():
                acc[k] = acc.get(k, 0.0) + n * v
        return {k: v / total for k, v in acc.items()}

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> Path | None:
        tr = self.tr
        main = self.dist.is_main
        monitor = RunMonitor(tr, self.out, self.task_names, self.num_steps, main)
        writer = None
        if main and monitor.display:
            names = self.task_names if self.multi else None
            writer = LcurveWriter(self.out / tr["disp_file"], names, append=self.start_step > 0)
        clock = ProgressClock(self.start_step, self.num_steps)
        step_times = []
        last_ckpt = None
        self.model.train()
        for step in range(self.start_step, self.num_steps):
            t0 = time.perf_counter()
            task = self.choose_task()
            more = self.train_step(step, task)
            step_times.append(time.perf_counter() - t0)
            monitor.after_step(step, task, self.lr(step), self.last_loss, more, self.last_norm)
            if monitor.display and ((step + 1) % tr["disp_freq"] == 0 or step == self.start_step):
                self._display(step, task, more, monitor, writer, clock)
            if (step + 1) % tr["save_freq"] == 0 or step + 1 == self.num_steps:
                if main:
                    last_ckpt = self._save(step + 1)
        monitor.close()
        if tr["change_bias_after_training"] and self.num_steps > self.start_step and main:
            self._change_bias_after_training()
            last_ckpt = self._save(self.num_steps)
        if self.num_steps == 0 and main:
            # as the reference: the model as built (e.g. fine-tuned: pretrained weights, refitted
            # bias) is saved as the step-0 checkpoint
            last_ckpt = self._save(0)
        if writer is not None:
            writer.close()
        if len(step_times) > 2:
            avg = (
                float(np.mean(step_times[2:]))
                if len(step_times) > 4
                else float(np.mean(step_times))
            )
            if monitor.timing:
                log.info("average training time: %.4f s/step (first 2 steps excluded)", avg)
            self.avg_step_time = avg
        if main and writer is not None and writer.header_written:
            writer.plot()
        self.dist.barrier()
        return last_ckpt

    def _display(self, step, task, more, monitor, writer, clock) -> None:
        """Metrics of every task at a display step: lcurve.out and one log line."""
        lr = self.lr(step)
        trn, val = {}, {}
        for name in self.task_names:
            val[name] = self.validate(name, lr) if self.dist.is_main else {}
            if monitor.average is not None:
                m = monitor.average.mean(name, like=val[name])
            else:
                m = more if name == task else self.train_metrics(name, lr)
            trn[name] = self.dist.reduce_metrics(m)
        if monitor.average is not None:
            monitor.average.reset()
        if self.dist.is_main:
            writer.write(step + 1, trn, val, lr)
            log.info("%s", clock.line(step, self.task_names, trn, val, lr, monitor.timing))

    @torch.no_grad()
    def _change_bias_after_training(self) -> None:
        """``change_bias_after_training``: every task's energy bias shifted by the least-squares
        fit of its statistics frames' residuals (the reference's change-by-statistic)."""
        for t in self.tasks.values():
            ft.refit_bias(t, self._stat_batches(t), "change")

    def _save(self, step: int) -> Path:
        """The regular checkpoint of ``step`` and, with ``enable_ema``, the EMA one (the averaged
        weights, no optimizer state) next to it."""
        store = self.tr["save_dir"]
        path = save_checkpoint(
            self._payload(step), self.out, self.tr["save_ckpt"], step, self.keep, store=store
        )
        log.info("saved checkpoint %s", path)
        if self.ema is not None:
            with self.ema.applied(self.model):
                payload = self._payload(step)
                # .cpu() of a CPU tensor is the tensor itself: copy before the live weights return
                payload["model_state"] = {k: v.clone() for k, v in payload["model_state"].items()}
            payload.update(optimizer=None, ema=None)
            prefix = ema_prefix(self.tr["save_ckpt"])
            ema_path = save_checkpoint(
                payload, self.out, prefix, step, self.ema_keep, False, store=store
            )
            log.info("saved EMA checkpoint %s", ema_path)
        return path


def train(config: dict, output=".", **kw) -> Path:
    """Train from a config dict; returns the last checkpoint path."""
    return Trainer(config, output, **kw).run()
