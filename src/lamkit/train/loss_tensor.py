"""Tensor loss ``type: "tensor"`` for dipole and polarizability models (DeePMD-kit 3.2
``deepmd/pt/loss/tensor.py``).

Labels: global ``dipole.npy`` [nf, 3] / ``polarizability.npy`` [nf, 9] and atomic
``atomic_dipole.npy`` [nf, natoms*3] / ``atomic_polarizability.npy`` [nf, natoms*9]:

    L = pref_atomic * find_atomic * sum_{real atoms, components} (w_i d_i)^2 / (size * n_real)
      + pref * find_global * mean_{frames, components} d^2

with ``w_i`` the ``atomic_weight.npy`` labels when ``enable_atomic_weight`` (default 1).
Displayed: ``rmse_local_<name>`` = sqrt of the atomic term, ``rmse_global_<name>`` = sqrt of
the global term divided by the mean real-atom count of the batch (NaN without labels).
"""

from __future__ import annotations

import math

import torch

from .. import keys
from ..config.schema import REQUIRED, Arg, normalize
from ..data import DataRequirement
from ..errors import ConfigError
from .loss_registry import LOSSES

TENSOR_ARGS = (
    Arg("type", (str,), "tensor"),
    Arg("pref", (float, int), REQUIRED, doc="weight of the global (per-frame) labels"),
    Arg("pref_atomic", (float, int), REQUIRED, doc="weight of the atomic labels"),
    Arg("enable_atomic_weight", (bool,), False),
)
# fitting type -> (model output name, label name, components)
TENSORS = {"dipole": ("dipole", "dipole", 3), "polar": ("polar", "polarizability", 9)}
_ALIASES = {"polarizability": "polar"}


@LOSSES.register("tensor")
class TensorLoss:
    """The ``tensor`` loss of a dipole or polar model."""

    fitting_types = ("dipole", "polar", "polarizability")
    need = {"force": False, "virial": False}

    def __init__(self, config: dict, start_lr: float, model_config: dict | None = None):
        c = normalize(config, TENSOR_ARGS, "loss")
        ftype = ((model_config or {}).get("fitting_net") or {}).get("type", "ener")
        ftype = _ALIASES.get(ftype, ftype)
        if ftype not in TENSORS:
            raise ConfigError(f"loss/type: 'tensor' needs a dipole or polar fitting, got '{ftype}'")
        if c["pref"] < 0 or c["pref_atomic"] < 0:
            raise ConfigError("loss/pref, loss/pref_atomic: weights cannot be negative")
        if c["pref"] == 0 and c["pref_atomic"] == 0:
            raise ConfigError("loss/pref, loss/pref_atomic: at least one must be positive")
        self.config = c
        self.name, self.label, self.size = TENSORS[ftype]
        self.atom_label = f"atomic_{self.label}"
        self.pref, self.pref_atomic = float(c["pref"]), float(c["pref_atomic"])
        self.atomic_weight = c["enable_atomic_weight"]

    def attach(self, model) -> None:  # nothing to read from the model
        pass

    def requirements(self):
        reqs = []
        if self.pref_atomic > 0:
            reqs.append(DataRequirement(self.atom_label, self.size, atomic=True))
        if self.pref > 0:
            reqs.append(DataRequirement(self.label, self.size))
        if self.atomic_weight:
            reqs.append(DataRequirement("atomic_weight", 1, atomic=True, default=1.0))
        return reqs

    def __call__(self, pred: dict, batch: dict, lr: float = 0.0) -> tuple[torch.Tensor, dict]:
        mask = pred[keys.MASK].to(torch.float64)  # [nf, nloc]
        nf, nloc = mask.shape
        loss = torch.zeros((), dtype=torch.float64, device=mask.device)
        more: dict[str, float] = {}
        if self.pref_atomic > 0 and self.atom_label in batch:
            found = float(batch.get(keys.find_key(self.atom_label), 0.0))
            d = pred[self.name].reshape(nf, nloc, self.size) - batch[self.atom_label].reshape(
                nf, nloc, self.size
            )
            if self.atomic_weight:
                d = d * batch["atomic_weight"].reshape(nf, nloc, 1)
            l2 = (d * d * mask.unsqueeze(-1)).sum() / (self.size * mask.sum()).clamp(min=1)
            loss = loss + self.pref_atomic * found * l2
            more[f"rmse_local_{self.name}"] = float(torch.sqrt(l2.detach())) if found else math.nan
        if self.pref > 0 and self.label in batch:
            found = float(batch.get(keys.find_key(self.label), 0.0))
            d = pred[f"global_{self.name}"].reshape(nf, self.size) - batch[self.label].reshape(
                nf, self.size
            )
            l2 = (d * d).mean()
            loss = loss + self.pref * found * l2
            natoms = mask.sum(-1).mean()
            rmse = float(torch.sqrt(l2.detach()) / natoms)
            more[f"rmse_global_{self.name}"] = rmse if found else math.nan
        return loss, more
