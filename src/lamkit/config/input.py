"""The whole input file (``input.json`` / ``input.yaml``) in the DeePMD-kit v3 schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ConfigError
from .schema import REQUIRED, Arg, normalize

DATA_ARGS = (
    Arg("systems", (list, str), REQUIRED, doc="system folders, ASE files, or a parent folder"),
    Arg("batch_size", (list, str, int), "auto"),
    Arg("auto_prob", (str,), "prob_sys_size", aliases=("auto_prob_style",)),
    Arg("sys_probs", (list, type(None)), None, aliases=("sys_weights",)),
    Arg("rglob_patterns", (list, type(None)), None),
    Arg("min_pair_dist", (float,), 0.0),
    Arg("set_prefix", (str,), "set", doc="deprecated in the reference; only 'set' is read"),
)
VALID_ARGS = (*DATA_ARGS, Arg("numb_btch", (int,), 1, aliases=("numb_batch",)))

# the TensorFlow backend's mixed precision (the reference's PyTorch backend ignores the section)
MIXED_PRECISION_ARGS = (
    Arg("output_prec", (str,), "float32"),
    Arg("compute_prec", (str,), "float16"),
)

TRAINING_ARGS = (
    Arg("training_data", (dict,), REQUIRED, sub=DATA_ARGS),
    Arg("validation_data", (dict, type(None)), None, sub=VALID_ARGS),
    Arg(
        "numb_steps",
        (int, type(None)),
        None,
        aliases=("stop_batch", "num_step", "num_steps", "numb_step"),
        doc="steps of the run (or numb_epoch / num_epoch_dict)",
    ),
    Arg(
        "numb_epoch",
        (float, type(None)),
        None,
        aliases=("num_epoch", "num_epochs", "numb_epochs"),
        doc="epochs of a single-task run (may be fractional)",
    ),
    Arg("seed", (int, type(None)), None),
    Arg("disp_file", (str,), "lcurve.out"),
    Arg("disp_freq", (int,), 1000),
    Arg("save_freq", (int,), 1000),
    Arg("save_ckpt", (str,), "model.ckpt"),
    Arg("max_ckpt_keep", (int,), 5),
    Arg("ckpt_keep_ratio", (float, type(None)), None, doc="keep the last fraction of the run"),
    Arg("enable_ema", (bool,), False, doc="exponential moving average of the weights"),
    Arg("ema_decay", (float,), 0.999),
    Arg("ema_ckpt_keep", (int, type(None)), None, doc="EMA checkpoints kept (max_ckpt_keep)"),
    Arg("zero_stage", (int,), 0, doc="only 0 (plain data parallel) is supported"),
    Arg("neighbor_graph_method", (str,), "auto", choices=("auto", "dense", "nv")),
    Arg(
        "enable_compile",
        (bool,),
        False,
        aliases=("compile",),
        doc="energy, forces and virial through compiled graphs (lamkit.train.compiled)",
    ),
    Arg("enable_tf32", (bool,), False, doc="TF32 matmuls on CUDA (no effect on CPU)"),
    Arg("disp_training", (bool,), True),
    Arg("time_training", (bool,), True),
    Arg("stat_file", (str, type(None)), None),
    Arg("gradient_max_norm", (float, type(None)), None),
    Arg("warmup_steps", (int, type(None)), None),
    Arg("opt_type", (str,), "Adam", choices=("Adam", "AdamW")),
    Arg("change_bias_after_training", (bool,), False),
    Arg("tensorboard", (bool,), False),
    Arg("tensorboard_log_dir", (str,), "log"),
    Arg("tensorboard_freq", (int,), 1),
    Arg("profiling", (bool,), False),
    Arg("profiling_file", (str,), "timeline.json"),
    Arg("enable_profiler", (bool,), False),
    Arg("save_dir", (str, type(None)), None),
    Arg("disp_avg", (bool,), False),
    Arg("acc_freq", (int,), 1, doc="Paddle backend only; ignored (as by the reference's PyTorch)"),
    Arg(
        "mixed_precision",
        (dict, type(None)),
        None,
        sub=MIXED_PRECISION_ARGS,
        doc="TensorFlow backend only; ignored (as by the reference's PyTorch)",
    ),
    Arg("stat_file_mode", (str,), "update", choices=("read", "update")),
)

TASK_DATA_ARGS = (
    Arg("training_data", (dict,), REQUIRED, sub=DATA_ARGS),
    Arg("validation_data", (dict, type(None)), None, sub=VALID_ARGS),
    Arg("stat_file", (str, type(None)), None),
    Arg("stat_file_mode", (str,), "update", choices=("read", "update")),
)
_PER_TASK = ("training_data", "validation_data", "stat_file", "stat_file_mode")
MULTI_TRAINING_ARGS = (
    *(a for a in TRAINING_ARGS if a.name not in _PER_TASK),
    Arg("data_dict", (dict,), REQUIRED, doc="per task: training_data, validation_data"),
    Arg("model_prob", (dict, type(None)), None, doc="task probabilities (default: data size)"),
    Arg("num_epoch_dict", (dict, type(None)), None, doc="epochs per task (sets model_prob)"),
)
# the replay option of fine-tuning (lamkit's own): rehearse frames of the pretraining data
REPLAY_ARGS = (
    Arg("systems", (list, str), REQUIRED, doc="pretraining data to draw the replay frames from"),
    Arg("nframes", (int,), 100, doc="frames to keep"),
    Arg("selection", (str,), "fps", choices=("fps", "random")),
    Arg("prob", (float,), 0.2, doc="probability of a replay step"),
    Arg("batch_size", (list, str, int), "auto"),
    Arg("head", (str, type(None)), None, doc="pretrained branch the replay data belongs to"),
)

OPTIMIZER_ARGS = (
    Arg("type", (str,), "Adam", choices=("Adam", "AdamW")),
    Arg("adam_beta1", (float,), 0.9),
    Arg("adam_beta2", (float,), 0.999),
    Arg("weight_decay", (float, type(None)), None),
)

TOP_KEYS = (
    "model",
    "learning_rate",
    "loss",
    "loss_dict",
    "learning_rate_dict",
    "optimizer",
    "training",
    "validating",
    "nvnmd",
)


def load_input(path: str | Path) -> dict:
    """Read a JSON or YAML input file; errors name the file and the position."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: input file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - report any parse error with the file name
        raise ConfigError(f"{path}: cannot parse ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _check_training(tr: dict) -> None:
    """Values the schema's types cannot reject."""
    ratio = tr["ckpt_keep_ratio"]
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise ConfigError(f"training/ckpt_keep_ratio: expected a fraction in (0, 1); found {ratio}")
    if not 0.0 <= tr["ema_decay"] < 1.0:
        raise ConfigError(f"training/ema_decay: expected 0 <= decay < 1; found {tr['ema_decay']}")
    if tr["ema_ckpt_keep"] is not None and tr["ema_ckpt_keep"] < 0:
        raise ConfigError(f"training/ema_ckpt_keep: expected >= 0; found {tr['ema_ckpt_keep']}")
    for where, data in (tr.get("data_dict") or {"": tr}).items():
        if data.get("stat_file_mode") == "read" and not data.get("stat_file"):
            at = f"training/data_dict/{where}" if where else "training"
            raise ConfigError(f"{at}/stat_file_mode: 'read' needs {at}/stat_file")
    if tr["zero_stage"] != 0:
        raise ConfigError(
            f"training/zero_stage: {tr['zero_stage']} (ZeRO/FSDP sharding) is not supported; "
            "use 0: torchrun data parallelism with full replicas"
        )


def ignored_training_keys(tr: dict) -> list[str]:
    """Messages for keys of other backends that the reference's PyTorch backend (and so lamkit)
    accepts and does not apply."""
    out = []
    if tr.get("mixed_precision"):
        out.append(
            "training/mixed_precision is a TensorFlow-backend setting; DeePMD-kit's PyTorch "
            "backend ignores it and so does lamkit: the model trains in the precision of its "
            "descriptor and fitting (set their 'precision' to float32 for faster training)"
        )
    if tr.get("acc_freq", 1) != 1:
        out.append(
            f"training/acc_freq {tr['acc_freq']}: gradient accumulation is a Paddle-backend "
            "setting; DeePMD-kit's PyTorch backend ignores it and so does lamkit (one batch "
            "per optimizer step)"
        )
    return out


def check_schedule_keys(tr: dict, multi: bool, tasks: list[str] | None = None) -> None:
    """The run length is given exactly once, in the form the mode accepts."""
    steps, epoch, per_task = tr.get("numb_steps"), tr.get("numb_epoch"), tr.get("num_epoch_dict")
    if not multi:
        if per_task:
            raise ConfigError("training/num_epoch_dict: only multi-task inputs have it")
        if (steps is None) == (epoch is None):
            raise ConfigError("training: give exactly one of numb_steps and numb_epoch")
        if epoch is not None and not (math.isfinite(epoch) and epoch > 0):
            raise ConfigError(f"training/numb_epoch: expected a positive number; found {epoch}")
        return
    if epoch is not None:
        raise ConfigError("training/numb_epoch: multi-task inputs give num_epoch_dict instead")
    if (steps is None) == (not per_task):
        raise ConfigError("training: give exactly one of numb_steps and num_epoch_dict")
    if per_task:
        if tr.get("model_prob"):
            raise ConfigError(
                "training: model_prob and num_epoch_dict exclude each other (the epochs set the "
                "task probabilities)"
            )
        missing = [t for t in tasks or [] if t not in per_task]
        unknown = [t for t in per_task if tasks is not None and t not in tasks]
        if missing or unknown:
            raise ConfigError(
                f"training/num_epoch_dict: every task needs an entry (missing {missing}, "
                f"unknown {unknown}; tasks {tasks})"
            )
        for t, v in per_task.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(
                    f"training/num_epoch_dict/{t}: expected a positive number; found {v!r}"
                )


def keep_counts(tr: dict, num_steps: int) -> tuple[int, int]:
    """Checkpoints kept of the regular and the EMA family: ``max_ckpt_keep`` and
    ``ema_ckpt_keep`` (default: the same), both replaced by
    ``ceil(ckpt_keep_ratio * ceil(numb_steps / save_freq))`` when the ratio is given."""
    ratio = tr.get("ckpt_keep_ratio")
    if ratio is not None:
        total = max(1, math.ceil(num_steps / tr["save_freq"])) if tr["save_freq"] > 0 else 1
        n = max(1, math.ceil(ratio * total))
        return n, n
    keep = tr["max_ckpt_keep"]
    ema = tr.get("ema_ckpt_keep")
    return keep, keep if ema is None else ema


def normalize_input(config: dict) -> dict:
    """Check the top-level sections and normalise ``training`` and ``optimizer``.

    The ``model``, ``loss`` and ``learning_rate`` sections are normalised by the components
    that own them (model.build, train.loss, train.lr).
    """
    from ..registry import did_you_mean

    for key in config:
        if key not in TOP_KEYS and not key.startswith("_comment"):
            raise ConfigError(f"unknown top-level section '{key}'." + did_you_mean(key, TOP_KEYS))
    for key in ("model", "training"):
        if key not in config:
            raise ConfigError(f"the input has no '{key}' section")
    if config.get("nvnmd"):
        raise ConfigError("nvnmd: NVNMD training is not supported")
    out = dict(config)
    train = dict(config["training"])
    replay = train.pop("replay", None)
    if "model_dict" in config["model"]:
        if "loss" in config and "loss_dict" not in config:
            raise ConfigError("loss: a multi-task input gives one loss per task in 'loss_dict'")
        if config.get("learning_rate_dict"):
            raise ConfigError("learning_rate_dict: per-task learning rates are not supported")
        tr = normalize(train, MULTI_TRAINING_ARGS, "training")
        tr["data_dict"] = {
            task: normalize(d, TASK_DATA_ARGS, f"training/data_dict/{task}")
            for task, d in tr["data_dict"].items()
        }
        tasks = list(config["model"]["model_dict"])
        for where, have, need_all in (
            ("training/data_dict", tr["data_dict"], True),
            ("loss_dict", config.get("loss_dict") or {}, False),
            ("training/model_prob", tr["model_prob"] or {}, False),
        ):
            missing = [t for t in tasks if t not in have] if need_all else []
            if missing:
                raise ConfigError(f"{where}: no entry for the tasks {missing} (tasks: {tasks})")
            for t in have:
                if t not in tasks:
                    raise ConfigError(
                        f"{where}: '{t}' is not a task of model/model_dict (tasks: {tasks})."
                        + did_you_mean(t, tasks)
                    )
        if replay is not None:
            raise ConfigError("training/replay: replay fine-tuning is for single-task inputs")
        check_schedule_keys(tr, True, tasks)
        out["training"] = tr
    else:
        for key in ("loss_dict", "learning_rate_dict"):
            if key in config:
                raise ConfigError(f"{key}: only multi-task inputs (model/model_dict) have it")
        out["training"] = normalize(train, TRAINING_ARGS, "training")
        check_schedule_keys(out["training"], False)
        out["training"]["replay"] = (
            None if replay is None else normalize(replay, REPLAY_ARGS, "training/replay")
        )
    _check_training(out["training"])
    opt = dict(config.get("optimizer") or {})
    if "opt_type" in config["training"] and "type" not in opt:
        opt["type"] = out["training"]["opt_type"]
    out["optimizer"] = normalize(opt, OPTIMIZER_ARGS, "optimizer")
    per_task = out["training"].get("data_dict") or {"": out["training"]}
    for task, dconf in per_task.items():
        for sec in ("training_data", "validation_data"):
            data = dconf[sec]
            where = f"training/data_dict/{task}/{sec}" if task else f"training/{sec}"
            patterns = (data or {}).get("rglob_patterns")
            if patterns is not None and not all(isinstance(x, str) and x for x in patterns):
                raise ConfigError(f"{where}/rglob_patterns: expected a list of glob patterns")
            if data and data.get("set_prefix", "set") != "set":
                raise ConfigError(f"{where}/set_prefix: only 'set' (set.*/ folders) is read")
    return out
