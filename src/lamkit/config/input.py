"""The whole input file (``input.json`` / ``input.yaml``) in the DeePMD-kit v3 schema."""

from __future__ import annotations

import json
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
)
VALID_ARGS = (*DATA_ARGS, Arg("numb_btch", (int,), 1, aliases=("numb_batch",)))

TRAINING_ARGS = (
    Arg("training_data", (dict,), REQUIRED, sub=DATA_ARGS),
    Arg("validation_data", (dict, type(None)), None, sub=VALID_ARGS),
    Arg(
        "numb_steps", (int,), REQUIRED, aliases=("stop_batch", "num_step", "num_steps", "numb_step")
    ),
    Arg("seed", (int, type(None)), None),
    Arg("disp_file", (str,), "lcurve.out"),
    Arg("disp_freq", (int,), 1000),
    Arg("save_freq", (int,), 1000),
    Arg("save_ckpt", (str,), "model.ckpt"),
    Arg("max_ckpt_keep", (int,), 5),
    Arg("disp_training", (bool,), True),
    Arg("time_training", (bool,), True),
    Arg("stat_file", (str, type(None)), None),
    Arg("stat_file_mode", (str,), "update"),
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
    Arg("acc_freq", (int,), 1),
)

OPTIMIZER_ARGS = (
    Arg("type", (str,), "Adam", choices=("Adam", "AdamW")),
    Arg("adam_beta1", (float,), 0.9),
    Arg("adam_beta2", (float,), 0.999),
    Arg("weight_decay", (float, type(None)), None),
)

TOP_KEYS = ("model", "learning_rate", "loss", "optimizer", "training", "validating", "nvnmd")


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
    if "model_dict" in config["model"]:
        raise ConfigError("model/model_dict: multi-task training is not supported yet")
    if config.get("nvnmd"):
        raise ConfigError("nvnmd: NVNMD training is not supported")
    out = dict(config)
    out["training"] = normalize(config["training"], TRAINING_ARGS, "training")
    opt = dict(config.get("optimizer") or {})
    if "opt_type" in config["training"] and "type" not in opt:
        opt["type"] = out["training"]["opt_type"]
    out["optimizer"] = normalize(opt, OPTIMIZER_ARGS, "optimizer")
    for sec in ("training_data", "validation_data"):
        data = out["training"][sec]
        if data and data.get("rglob_patterns"):
            raise ConfigError(f"training/{sec}/rglob_patterns is not supported yet")
    return out
