"""DOS loss ``type: "dos"`` (DeePMD-kit 3.2 ``deepmd/pt/loss/dos.py``).

With prefactors ``p_X(t) = limit_X + (start_X - limit_X) * lr(t) / start_lr``, a term active
only when both its start and limit prefactors are non-zero, and ``C`` the cumulative sum over
the ``numb_dos`` energy grid points (the CDF):

    L = p_dos  * find_dos      * mean_{frames, grid} (dos - dos_label)^2
      + p_cdf  * find_dos      * mean_{frames, grid} (C dos - C dos_label)^2
      + p_ados * find_atom_dos * mean_{real atoms, grid} (ados - ados_label)^2
      + p_acdf * find_atom_dos * mean_{real atoms, grid} (C ados - C ados_label)^2

Labels ``dos.npy`` [nf, numb_dos] and ``atom_dos.npy`` [nf, natoms*numb_dos], both optional
(a system without one has ``find_<label>`` 0). Displayed: ``rmse_local_dos``,
``rmse_local_cdf`` (sqrt of the atomic terms) and ``rmse_global_dos``, ``rmse_global_cdf``
(sqrt of the global terms divided by the mean real-atom count); NaN without the label.
Defaults as the reference's schema: only the atomic DOS term (``ados``, 1.0).
"""

from __future__ import annotations

import math

import torch

from .. import keys
from ..config.schema import Arg, normalize
from ..data import DataRequirement
from ..errors import ConfigError
from .loss_registry import LOSSES

_NUM = (float, int)
TERMS = ("dos", "cdf", "ados", "acdf")
_DEFAULT = {"dos": 0.0, "cdf": 0.0, "ados": 1.0, "acdf": 0.0}
DOS_ARGS = (
    Arg("type", (str,), "dos"),
    *(Arg(f"{w}_pref_{t}", _NUM, _DEFAULT[t]) for t in TERMS for w in ("start", "limit")),
)


@LOSSES.register("dos")
class DOSLoss:
    """The ``dos`` loss of a model whose fitting is ``type: "dos"``."""

    fitting_types = ("dos",)
    need = {"force": False, "virial": False}

    def __init__(self, config: dict, start_lr: float, model_config: dict | None = None):
        c = normalize(config, DOS_ARGS, "loss")
        fit = (model_config or {}).get("fitting_net") or {}
        if fit.get("type", "ener") != "dos":
            raise ConfigError(
                f"loss/type: 'dos' needs model/fitting_net/type 'dos', got "
                f"'{fit.get('type', 'ener')}'"
            )
        for key in (a.name for a in DOS_ARGS[1:]):
            if c[key] < 0:
                raise ConfigError(f"loss/{key}: a prefactor cannot be negative, got {c[key]}")
        self.active = tuple(
            t for t in TERMS if c[f"start_pref_{t}"] != 0 and c[f"limit_pref_{t}"] != 0
        )
        if not self.active:
            raise ConfigError(
                "loss/start_pref_*, loss/limit_pref_*: at least one of dos, cdf, ados, acdf "
                "needs non-zero start and limit prefactors"
            )
        self.config = c
        self.start_lr = float(start_lr)
        self.numb_dos = int(fit.get("numb_dos", 300))

    def attach(self, model) -> None:  # nothing to read from the model
        pass

    def requirements(self):
        where = f"model/fitting_net/numb_dos {self.numb_dos}"
        reqs = []
        if {"ados", "acdf"} & set(self.active):
            reqs.append(DataRequirement("atom_dos", self.numb_dos, atomic=True, origin=where))
        if {"dos", "cdf"} & set(self.active):
            reqs.append(DataRequirement("dos", self.numb_dos, origin=where))
        return reqs

    def _pref(self, term: str, lr: float) -> float:
        start, limit = self.config[f"start_pref_{term}"], self.config[f"limit_pref_{term}"]
        coef = lr / self.start_lr if self.start_lr else 0.0
        return float(limit + (start - limit) * coef)

    def __call__(self, pred: dict, batch: dict, lr: float = 0.0) -> tuple[torch.Tensor, dict]:
        mask = pred[keys.MASK]
        maskf = mask.to(torch.float64)  # [nf, nloc]
        nf, nloc = mask.shape
        n = self.numb_dos
        loss = torch.zeros((), dtype=torch.float64, device=mask.device)
        more: dict[str, float] = {}
        if {"ados", "acdf"} & set(self.active) and "atom_dos" in batch:
            found = float(batch.get(keys.find_key("atom_dos"), 0.0))
            p = pred["atom_dos"].reshape(nf, nloc, n)
            y = batch["atom_dos"].reshape(nf, nloc, n).to(p.dtype)
            count = (maskf.sum() * n).clamp(min=1)
            for term, cum in (("ados", False), ("acdf", True)):
                if term not in self.active:
                    continue
                d = (p.cumsum(-1) - y.cumsum(-1)) if cum else (p - y)
                l2 = (d * d * maskf.unsqueeze(-1)).sum() / count
                loss = loss + self._pref(term, lr) * found * l2
                name = "rmse_local_cdf" if cum else "rmse_local_dos"
                more[name] = float(torch.sqrt(l2.detach())) if found else math.nan
        if {"dos", "cdf"} & set(self.active) and "dos" in batch:
            found = float(batch.get(keys.find_key("dos"), 0.0))
            p = pred["dos"].reshape(nf, n)
            y = batch["dos"].reshape(nf, n).to(p.dtype)
            natoms = maskf.sum(-1).mean()
            for term, cum in (("dos", False), ("cdf", True)):
                if term not in self.active:
                    continue
                d = (p.cumsum(-1) - y.cumsum(-1)) if cum else (p - y)
                l2 = (d * d).mean()
                loss = loss + self._pref(term, lr) * found * l2
                name = f"rmse_global_{term}"
                more[name] = float(torch.sqrt(l2.detach()) / natoms) if found else math.nan
        return loss, more
