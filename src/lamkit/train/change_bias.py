"""``lam change-bias``: refit (or set) the per-type energy bias of a trained model on new data.

Semantics of DeePMD-kit's ``dp --pt change-bias``:

* ``mode="change"`` (change-by-statistic): the model predicts the energies of the given
  frames; the least-squares per-type shift of ``E_label - E_model`` on the type counts is added
  to the bias. Types absent from the data keep their bias.
* ``mode="set"`` (set-by-statistic): the bias is the least-squares fit of ``E_label`` on the
  type counts, as at the start of a training. Types absent from the data get 0, as in the
  reference.
* ``bias_value``: one number per type of the model's type map, used as they are.

Frames: ``numb_batch`` frames of each system (batch size 1, shuffled with ``seed``); 0 takes
every frame. The result keeps the input's kind: a lamkit checkpoint or frozen model is copied
with the new bias (so training can resume from it); a DeePMD-kit checkpoint becomes a lamkit
frozen model.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch

from ..config.multitask import choose_head
from ..data import load_systems
from ..data.system import DataRequirement
from ..errors import ConfigError
from ..model.io import FORMAT, atomic_save, model_from_payload, read_file, save_model
from .stats import energy_bias, stat_batches

log = logging.getLogger(__name__)
MODES = ("change", "set")


def default_output(path: str | Path) -> Path:
    """``model.pt`` -> ``model_updated.pt`` (the reference's naming)."""
    path = Path(path)
    if path.is_dir():
        return path / "model_updated.pt"
    return path.with_name(f"{path.stem}_updated{path.suffix or '.pt'}")


def change_bias(
    model_file: str | Path,
    systems=None,
    output: str | Path | None = None,
    mode: str = "change",
    numb_batch: int = 0,
    bias_value: list[float] | None = None,
    head: str | None = None,
    seed: int = 1,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write ``model_file`` with a new energy bias to ``output``; returns (output, old bias,
    new bias), the biases as [ntypes] arrays in the order of the model's type map."""
    if mode not in MODES:
        raise ConfigError(f"change-bias: mode must be one of {MODES}, got {mode!r}")
    if numb_batch < 0:
        raise ConfigError(f"change-bias: numb_batch must be >= 0 (0 = all), got {numb_batch}")
    obj = read_file(model_file)
    model = model_from_payload(obj, str(model_file), head=head)
    if model.output_def.kind != "energy":
        raise ConfigError(
            f"{model_file}: change-bias applies to energy models; this one predicts "
            f"'{model.output_def.name}'"
        )
    old = model.out_bias.detach().cpu().numpy().reshape(model.ntypes).astype(np.float64)
    if bias_value is not None:
        if len(bias_value) != model.ntypes:
            raise ConfigError(
                f"change-bias: {len(bias_value)} bias values for the {model.ntypes} types "
                f"{model.type_map} of {model_file}"
            )
        new = np.asarray(bias_value, dtype=np.float64)
    else:
        if not systems:
            raise ConfigError("change-bias: give data systems (-s/-f) or bias values (-b)")
        new = _fit(model, systems, mode, numb_batch, seed, old)
    with torch.no_grad():
        model.out_bias.copy_(torch.as_tensor(new.reshape(model.out_bias.shape)))
    out = Path(output) if output is not None else default_output(model_file)
    _write(obj, model, model_file, out, head)
    log.info(
        "energy bias per type %s: %s -> %s",
        model.type_map,
        np.array2string(old, precision=6),
        np.array2string(new, precision=6),
    )
    return out, old, new


def _fit(model, systems, mode, numb_batch, seed, old) -> np.ndarray:
    data = load_systems(systems, model.type_map, [DataRequirement("energy", 1, must=True)])
    if not data:
        raise ConfigError(f"change-bias: no data systems found in {systems}")
    nbatch = numb_batch or max(s.nframes for s in data)
    batches = stat_batches(data, [1] * len(data), nbatch, seed)
    rcond = getattr(model.fitting, "rcond", None)
    model.eval()
    if mode == "set":
        bias = energy_bias(batches, model.ntypes, rcond)
        return bias.reshape(-1)
    delta = energy_bias(batches, model.ntypes, rcond, residual_model=model)
    return old + delta.reshape(-1)


def _write(obj, model, source, out: Path, head: str | None) -> None:
    if isinstance(obj, dict) and obj.get("format") == FORMAT and "model_state" in obj:
        payload = copy.copy(obj)
        state = dict(obj["model_state"])
        conf = obj["model_config"]
        # a multi-task checkpoint keeps one state per branch, keys "<branch>.<name>"
        prefix = f"{choose_head(conf, head, str(source))}." if "model_dict" in conf else ""
        for k, v in model.state_dict().items():
            if k.endswith("out_bias"):
                if prefix + k not in state:
                    raise ConfigError(f"{source}: no '{prefix + k}' in the model state")
                state[prefix + k] = v.detach().cpu()
        payload["model_state"] = state
        atomic_save(payload, out)
    else:  # a DeePMD-kit checkpoint: written as a lamkit frozen model
        save_model(model.eval(), out, source=str(source), changed="energy bias")
