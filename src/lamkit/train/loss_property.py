"""Property loss ``type: "property"`` (DeePMD-kit 3.2 ``deepmd/pt/loss/property.py``).

For a batch of frames with predictions ``p`` and labels ``y`` [nf, task_dim] (both divided by
the frame's real-atom count first when the property is extensive) and the model's output
statistics of type 0, ``b = out_bias[0]`` and ``s = out_std[0]``, the loss compares the
normalised values ``(y - b)/s`` and ``(p - b)/s``:

    smooth_mae: sum smooth_l1_beta      mae: sum |d|      mse: sum d^2
    rmse: sqrt(mean d^2)                mape: mean |(y - p)/(y + 1e-3)|  (not normalised)

Note the **sum** over frames and columns of the first three. The displayed ``metric``s use
the raw (not normalised) values and the mean: ``mae = mean |y - p|`` and so on; they are the
lcurve columns (``mae_val mae_trn``). The learning rate does not enter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import keys
from ..config.schema import Arg, normalize
from ..data import DataRequirement
from ..errors import ConfigError
from .loss_registry import LOSSES

FUNCS = ("smooth_mae", "mae", "mse", "rmse", "mape")
PROPERTY_ARGS = (
    Arg("type", (str,), "property"),
    Arg("loss_func", (str,), "smooth_mae", choices=FUNCS),
    Arg("metric", (list,), ["mae"]),
    Arg("beta", (float, int), 1.0),
)


def _mape(label: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs((label - pred) / (label + 1e-3)))


def _metrics(label: torch.Tensor, pred: torch.Tensor, names, beta: float) -> dict[str, float]:
    out = {}
    for name in names:
        if name == "smooth_mae":
            value = F.smooth_l1_loss(label, pred, reduction="mean", beta=beta)
        elif name == "mae":
            value = F.l1_loss(label, pred, reduction="mean")
        elif name == "mse":
            value = F.mse_loss(label, pred, reduction="mean")
        elif name == "rmse":
            value = torch.sqrt(F.mse_loss(label, pred, reduction="mean"))
        else:
            value = _mape(label, pred)
        out[name] = float(value.detach())
    return out


@LOSSES.register("property")
class PropertyLoss:
    """The ``property`` loss of a model whose fitting is ``type: "property"``."""

    fitting_types = ("property",)

    def __init__(self, config: dict, start_lr: float, model_config: dict | None = None):
        c = normalize(config, PROPERTY_ARGS, "loss")
        bad = [m for m in c["metric"] if m not in FUNCS]
        if bad:
            raise ConfigError(f"loss/metric: {bad} not among {', '.join(FUNCS)}")
        fit = (model_config or {}).get("fitting_net") or {}
        if fit.get("type") != "property":
            raise ConfigError(
                "loss/type: 'property' needs model/fitting_net/type 'property', "
                f"got '{fit.get('type', 'ener')}'"
            )
        self.config = c
        self.name = fit.get("property_name", "property")
        self.task_dim = int(fit.get("task_dim", 1))
        self.intensive = bool(fit.get("intensive", False))
        self.loss_func, self.metric, self.beta = c["loss_func"], list(c["metric"]), c["beta"]
        self.model = None

    need = {"force": False, "virial": False}

    def attach(self, model) -> None:
        """The model whose ``out_bias``/``out_std`` normalise the loss (read at each call)."""
        self.model = model

    def requirements(self):
        where = f"model/fitting_net/property_name '{self.name}', task_dim {self.task_dim}"
        return [DataRequirement(self.name, self.task_dim, must=True, origin=where)]

    def _stat(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.model is None:
            return torch.zeros_like(ref[0]), torch.ones_like(ref[0])
        return (
            self.model.out_bias[0].to(ref.dtype),
            self.model.out_std[0].to(ref.dtype),
        )

    def __call__(self, pred: dict, batch: dict, lr: float = 0.0) -> tuple[torch.Tensor, dict]:
        p = pred[self.name].reshape(-1, self.task_dim)
        y = batch[self.name].reshape(-1, self.task_dim).to(p.dtype)
        if not self.intensive:  # per-atom values for extensive properties
            natoms = pred[keys.MASK].sum(-1, keepdim=True).to(p.dtype)
            p, y = p / natoms, y / natoms
        b, s = self._stat(p)
        yn, pn = (y - b) / s, (p - b) / s
        f = self.loss_func
        if f == "smooth_mae":
            loss = F.smooth_l1_loss(yn, pn, reduction="sum", beta=self.beta)
        elif f == "mae":
            loss = F.l1_loss(yn, pn, reduction="sum")
        elif f == "mse":
            loss = F.mse_loss(yn, pn, reduction="sum")
        elif f == "rmse":
            loss = torch.sqrt(F.mse_loss(yn, pn, reduction="mean"))
        else:
            loss = _mape(y, p)
        return loss, _metrics(y, p, self.metric, self.beta)
