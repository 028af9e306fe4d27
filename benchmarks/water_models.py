"""The water models the benchmarks compare, as DeePMD-kit input dicts (both tools read them).

``se_e2_a`` is DeePMD-kit's classic water example; the others are lamkit's presets of the
reference water examples (``lamkit.presets``): ``dpa2-small``/``dpa2-medium``/``dpa2-large``,
``se_e3_tebd`` and ``dpa1``. Training uses data_0-2, validation data_3 (one batch), seed 10.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lamkit.examples import water_se_e2_a_config
from lamkit.presets import make_input

MODELS = (
    "se_e2_a",
    "se_e3_tebd",
    "dpa1",
    "dpa2-small",
    "dpa2-medium",
    "dpa2-large",
    "dpa3",  # the reference's examples/water/dpa3 input (float32)
    "dpa3-float64",  # the same in float64
)


def water_config(model: str, data: Path, steps: int) -> dict:
    """Input for ``model`` on water ``data`` (folders data_0..data_3) with ``steps`` steps."""
    train = [str(data / f"data_{i}") for i in range(3)]
    valid = [str(data / "data_3")]
    if model == "se_e2_a":
        return water_se_e2_a_config(train, valid, steps=steps)
    if model not in MODELS:
        raise SystemExit(f"--model: one of {', '.join(MODELS)}, not {model!r}")
    name, _, size = model.partition("-")
    precision = None
    if size.startswith("float"):
        precision, size = size, ""
    conf = make_input(name, size or None, train, valid, ["O", "H"], steps)
    if precision:
        for section in ("descriptor", "fitting_net"):
            conf["model"][section]["precision"] = precision
    tr = conf["training"]
    tr.pop("stat_file", None)  # statistics computed afresh by both tools
    tr["seed"] = 10
    tr["validation_data"]["numb_btch"] = 1
    tr["disp_freq"] = max(1, steps // 10)
    tr["save_freq"] = steps
    return conf


def reference_checkpoint(conf: dict, workdir: Path, env: dict) -> Path:
    """Train the reference on ``conf`` (one step, as the config says) in ``workdir``; the
    checkpoint ``model.ckpt-1.pt`` that both tools then load."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.json").write_text(json.dumps(conf, indent=1))
    log = workdir / "train.log"
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.call(
            [sys.executable, "-m", "deepmd", "--pt", "train", "input.json", "--skip-neighbor-stat"],
            cwd=workdir,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    ckpt = workdir / "model.ckpt-1.pt"
    if rc != 0 or not ckpt.exists():
        raise SystemExit(
            f"reference training failed (rc {rc}); see {log}:\n"
            f"{log.read_text(errors='replace')[-3000:]}"
        )
    return ckpt
