"""Population loss ``type: "population"`` (DeePMD-kit 3.2 ``deepmd/pt/loss/population.py``).

With the per-atom prediction ``p`` and label ``y`` [nf, natoms, 2] (alpha, beta electrons; the
label file ``set.*/atomic_population.npy``), the spin ``s = alpha - beta``, frame totals
``S = sum_i s_i``, ``A = sum_i alpha_i``, ``B = sum_i beta_i`` over the real atoms, ``n`` the
mean real-atom count of the batch, ``f`` the ``loss_func`` summed over its elements (``mae``:
sum |d|, ``smooth_mae``: sum of smooth-L1 with ``beta``, ``rmse``: sqrt(mean d^2) times the
count) and prefactors ``p_X(t) = limit_X + (start_X - limit_X) * lr(t) / start_lr``:

    L = p_spin * f(s) / n + p_spin_total * f(S) + p_pop * f(p) / n
      + p_pop_alpha_total * f(A) + p_pop_beta_total * f(B)

Displayed (the lcurve columns, sorted): each term's value (``spin_loss``, ``spin_total_loss``,
``pop_loss``, ``pop_alpha_total_loss``, ``pop_beta_total_loss``), the mean predicted total
spin ``spin_total``, and the ``metric``s (``mae``, ``rmse``) of the per-atom populations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import keys
from ..config.schema import Arg, normalize
from ..data import DataRequirement
from ..errors import ConfigError
from .loss_registry import LOSSES

LABEL = "atomic_population"
TERMS = ("spin", "spin_total", "pop", "pop_alpha_total", "pop_beta_total")
_NUM = (float, int)
POPULATION_ARGS = (
    Arg("type", (str,), "population"),
    Arg("loss_func", (str,), "smooth_mae", choices=("smooth_mae", "mae", "rmse")),
    Arg("metric", (list,), ["mae"]),
    Arg("beta", _NUM, 1.0),
    *(Arg(f"{w}_pref_{t}", _NUM, 1.0) for t in TERMS for w in ("start", "limit")),
)


@LOSSES.register("population")
class PopulationLoss:
    """The ``population`` loss of a model whose fitting is ``type: "population"``."""

    fitting_types = ("population",)
    need = {"force": False, "virial": False}

    def __init__(self, config: dict, start_lr: float, model_config: dict | None = None):
        c = normalize(config, POPULATION_ARGS, "loss")
        fit = (model_config or {}).get("fitting_net") or {}
        if fit.get("type", "ener") != "population":
            raise ConfigError(
                "loss/type: 'population' needs model/fitting_net/type 'population', got "
                f"'{fit.get('type', 'ener')}'"
            )
        bad = [m for m in c["metric"] if m not in ("mae", "rmse")]
        if bad:
            raise ConfigError(f"loss/metric: {bad}; the population loss shows mae and rmse")
        for key in (a.name for a in POPULATION_ARGS[4:]):
            if c[key] < 0:
                raise ConfigError(f"loss/{key}: a prefactor cannot be negative, got {c[key]}")
        if start_lr <= 0:
            raise ConfigError(f"learning_rate/start_lr: must be positive, got {start_lr}")
        self.config, self.start_lr = c, float(start_lr)

    def attach(self, model) -> None:  # nothing to read from the model
        pass

    def requirements(self):
        where = "loss/type 'population'"
        return [DataRequirement(LABEL, 2, atomic=True, must=True, origin=where)]

    def _f(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        func = self.config["loss_func"]
        if func == "smooth_mae":
            return F.smooth_l1_loss(pred, label, reduction="sum", beta=float(self.config["beta"]))
        if func == "mae":
            return F.l1_loss(pred, label, reduction="sum")
        return torch.sqrt(F.mse_loss(pred, label, reduction="mean")) * pred.numel()

    def __call__(self, pred: dict, batch: dict, lr: float = 0.0) -> tuple[torch.Tensor, dict]:
        mask = pred[keys.MASK]
        nf, nloc = mask.shape
        maskf = mask.to(torch.float64)
        p = pred["population"].reshape(nf, nloc, 2)
        y = batch[LABEL].reshape(nf, nloc, 2).to(p.dtype)
        keep = mask.reshape(-1)
        s_p, s_y = p[..., 0] - p[..., 1], y[..., 0] - y[..., 1]
        n = maskf.sum(1).mean().clamp(min=1.0)
        values = {
            "spin": self._f(s_p.reshape(-1)[keep], s_y.reshape(-1)[keep]) / n,
            "spin_total": self._f((s_p * maskf).sum(1), (s_y * maskf).sum(1)),
            "pop": self._f(p.reshape(-1, 2)[keep], y.reshape(-1, 2)[keep]) / n,
            "pop_alpha_total": self._f((p[..., 0] * maskf).sum(1), (y[..., 0] * maskf).sum(1)),
            "pop_beta_total": self._f((p[..., 1] * maskf).sum(1), (y[..., 1] * maskf).sum(1)),
        }
        coef = lr / self.start_lr
        loss = torch.zeros((), dtype=p.dtype, device=p.device)
        for term, value in values.items():
            start, limit = self.config[f"start_pref_{term}"], self.config[f"limit_pref_{term}"]
            loss = loss + (limit + (start - limit) * coef) * value
        more = {f"{t}_loss": float(v.detach()) for t, v in values.items()}
        more["spin_total"] = float((s_p * maskf).sum(1).mean().detach())
        flat_p, flat_y = p.reshape(-1, 2)[keep], y.reshape(-1, 2)[keep]
        if "mae" in self.config["metric"]:
            more["mae"] = float(F.l1_loss(flat_p, flat_y).detach())
        if "rmse" in self.config["metric"]:
            more["rmse"] = float(torch.sqrt(F.mse_loss(flat_p, flat_y)).detach())
        return loss, more
