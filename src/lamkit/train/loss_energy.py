"""The energy loss ``type: "ener"`` (also ``energy``, ``ener_hess``; DeePMD-kit 3.2 semantics).

With per-frame real-atom counts ``N_f`` (virtual atoms excluded), prefactors
``p_X(t) = limit_X + (start_X - limit_X) * lr(t) / start_lr`` and a term active only when
both its start and limit prefactors are non-zero:

    L = p_e mean_f(dE_f^2 / N_f)          (1/N_f^2 with intensive_ener_virial)
      + p_f mean_{real atoms, xyz}(dF^2)
      + p_v mean_f(mean_9(dW^2) / N_f)
      + p_ae mean(de_i^2) + p_pf mean(atom_pref * dF^2)
      + p_h mean_f(sum_{real pairs} dH^2 / (3 N_f)^2)

The Hessian term (``start_pref_h``/``limit_pref_h``; active when either is non-zero, as in
the reference) compares ``hessian`` [nf, 3N, 3N] (:mod:`lamkit.model.hessian`) with the
labels of ``hessian.npy``; elements whose row or column atom is virtual are left out.

Displayed metrics: rmse_e = sqrt(mean dE^2/N^2) (per atom), rmse_f, rmse_v (per atom), rmse_h
(eV/Å^2), and rmse = sqrt(L). A metric whose label is missing in the batch is NaN.
"""

from __future__ import annotations

import math

import torch

from .. import keys
from ..config.schema import Arg, normalize
from ..data import DataRequirement
from ..errors import ConfigError
from ..model.hessian import enable_hessian
from .loss_registry import LOSSES

_NUM = (float, int)
ENER_ARGS = (
    Arg("type", (str,), "ener"),
    Arg("start_pref_e", _NUM, 0.02),
    Arg("limit_pref_e", _NUM, 1.0),
    Arg("start_pref_f", _NUM, 1000.0),
    Arg("limit_pref_f", _NUM, 1.0),
    Arg("start_pref_v", _NUM, 0.0),
    Arg("limit_pref_v", _NUM, 0.0),
    Arg("start_pref_ae", _NUM, 0.0),
    Arg("limit_pref_ae", _NUM, 0.0),
    Arg("start_pref_pf", _NUM, 0.0),
    Arg("limit_pref_pf", _NUM, 0.0),
    Arg("start_pref_h", _NUM, 0.0),
    Arg("limit_pref_h", _NUM, 0.0),
    Arg("start_pref_gf", _NUM, 0.0),
    Arg("limit_pref_gf", _NUM, 0.0),
    Arg("numb_generalized_coord", (int,), 0),
    Arg("use_default_pf", (bool,), False),
    Arg("relative_f", (float, type(None)), None),
    Arg("enable_atom_ener_coeff", (bool,), False),
    Arg("use_huber", (bool,), False),
    Arg("huber_delta", (float, list), 0.01),
    Arg("loss_func", (str,), "mse", choices=("mse", "mae")),
    Arg("f_use_norm", (bool,), False),
    Arg("intensive_ener_virial", (bool,), False),
    Arg("use_l1_all", (bool,), False),
)


def hessian_pair_mean(elem: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over frames of ``sum(elem over pairs of real atoms) / (3 N_f)^2``; ``elem``
    [nf, 3 nloc, 3 nloc], ``mask`` [nf, nloc]; a frame without real atoms counts as 0."""
    comp = mask.to(elem.dtype).repeat_interleave(3, dim=1)  # [nf, 3 nloc]
    total = (elem * comp[:, :, None] * comp[:, None, :]).sum((1, 2))
    dof = comp.sum(1) ** 2
    return torch.where(dof > 0, total / dof.clamp(min=1), torch.zeros_like(total)).mean()


def prefactor(pref: tuple[float, float] | None, lr: float, start_lr: float) -> float:
    """The prefactor ``limit + (start - limit) * lr / start_lr`` of a ``(start, limit)`` pair;
    0 for an inactive term (``None``)."""
    if pref is None:
        return 0.0
    start, limit = pref
    return limit + (start - limit) * lr / start_lr


def _huber(pred, label, delta):
    d = torch.abs(pred - label)
    return torch.mean(torch.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)))


@LOSSES.register("ener", "energy", "ener_hess")
class EnergyLoss:
    """The ``ener`` loss; call it with predictions, a labelled batch and the current lr."""

    labels = (keys.ENERGY, keys.FORCE, keys.VIRIAL, "atom_ener", keys.ATOM_PREF)
    fitting_types = ("ener", "energy")

    def __init__(self, config: dict, start_lr: float, model_config: dict | None = None):
        c = normalize(config, ENER_ARGS, "loss")
        if c["start_pref_gf"]:
            raise ConfigError("loss/start_pref_gf: this loss term is not supported yet")
        if c["enable_atom_ener_coeff"]:
            raise ConfigError("loss/enable_atom_ener_coeff is not supported yet")
        self.config = c
        self.start_lr = start_lr
        self.pref = {}
        for name in ("e", "f", "v", "ae", "pf"):
            s, lim = float(c[f"start_pref_{name}"]), float(c[f"limit_pref_{name}"])
            self.pref[name] = (s, lim) if (s != 0.0 and lim != 0.0) else None
        s, lim = float(c["start_pref_h"]), float(c["limit_pref_h"])
        self.pref["h"] = (s, lim) if (s != 0.0 or lim != 0.0) else None
        if self.pref["h"] and c["use_huber"]:
            raise ConfigError("loss/use_huber: the Huber loss is not implemented for the Hessian")
        self.relative_f = c["relative_f"]
        self.norm_exp = 2 if c["intensive_ener_virial"] else 1
        self.mae = c["loss_func"] == "mae"
        self.huber = c["use_huber"]
        hd = c["huber_delta"]
        self.huber_delta = (list(hd) + [hd[-1]] * 3)[:3] if isinstance(hd, list) else [hd] * 3

    def attach(self, model) -> None:
        """With a Hessian term, switch the model to Hessian output (kept in its config)."""
        if self.pref["h"]:
            enable_hessian(model)

    @property
    def need(self) -> dict[str, bool]:
        """Which predictions the model must produce for this loss."""
        return {"force": bool(self.pref["f"] or self.pref["pf"]), "virial": bool(self.pref["v"])}

    def requirements(self):
        """Label files this loss reads (for the data loader)."""
        reqs = [
            DataRequirement(keys.ENERGY, 1, atomic=False, must=False),
            DataRequirement(keys.FORCE, 3, atomic=True, must=False),
            DataRequirement(keys.VIRIAL, 9, atomic=False, must=False),
        ]
        if self.pref["ae"]:
            reqs.append(DataRequirement("atom_ener", 1, atomic=True, must=False))
        if self.pref["pf"]:
            reqs.append(DataRequirement(keys.ATOM_PREF, 1, atomic=True, must=False, repeat=3))
        if self.pref["h"]:  # [nf, (3 natoms)^2], see lamkit.data.system.label_width
            reqs.append(DataRequirement(keys.HESSIAN, 1, atomic=False, must=False))
        return reqs

    def _p(self, name: str, lr: float) -> float:
        return prefactor(self.pref[name], lr, self.start_lr)

    def __call__(self, pred: dict, batch: dict, lr: float) -> tuple[torch.Tensor, dict]:
        mask = pred[keys.MASK].to(torch.float64)  # [nf, nloc]
        nreal = mask.sum(-1)  # [nf]
        inv = 1.0 / nreal
        loss = torch.zeros((), dtype=torch.float64, device=mask.device)
        more: dict[str, float] = {}

        def found(key):
            return float(batch.get(keys.find_key(key), 0.0))

        def show(name, value, key):
            more[name] = float(value) if found(key) else math.nan

        if keys.ENERGY in pred and keys.ENERGY in batch:
            de = (pred[keys.ENERGY] - batch[keys.ENERGY]).reshape(len(nreal), -1)
            se = (de * de).mean(-1)
            pe = self._p("e", lr) * found(keys.ENERGY)
            if self.mae:
                loss = loss + pe * (de.abs().mean(-1) * inv).mean()
            elif self.huber:
                e_ = inv[:, None]
                loss = loss + pe * _huber(
                    pred[keys.ENERGY].reshape(de.shape) * e_,
                    batch[keys.ENERGY].reshape(de.shape) * e_,
                    self.huber_delta[0],
                )
            else:
                loss = loss + pe * (se * inv**self.norm_exp).mean()
            show("rmse_e", torch.sqrt((se * inv * inv).mean()).detach(), keys.ENERGY)
        if keys.FORCE in pred and keys.FORCE in batch:
            df = batch[keys.FORCE] - pred[keys.FORCE]  # [nf, nloc, 3]
            if self.relative_f is not None:
                df = df / (batch[keys.FORCE].norm(dim=-1, keepdim=True) + self.relative_f)
            m3 = mask.unsqueeze(-1)
            denom = 3.0 * mask.sum()
            l2f = ((df * df) * m3).sum() / denom
            pf = self._p("f", lr) * found(keys.FORCE)
            if pf:
                if self.mae:
                    loss = loss + pf * (df.abs() * m3).sum() / denom
                elif self.huber:
                    loss = loss + pf * _huber(df * m3, torch.zeros_like(df), self.huber_delta[1])
                else:
                    loss = loss + pf * l2f
            show("rmse_f", torch.sqrt(l2f).detach(), keys.FORCE)
            if self.pref["pf"] and keys.ATOM_PREF in batch:
                fpf = found(keys.FORCE) * (
                    1.0 if self.config["use_default_pf"] else found(keys.ATOM_PREF)
                )
                wpf = batch[keys.ATOM_PREF].reshape(df.shape)
                l2pf = ((df * df) * wpf * m3).sum() / denom
                loss = loss + self._p("pf", lr) * fpf * l2pf
                more["rmse_pf"] = float(torch.sqrt(l2pf)) if fpf else math.nan
        if self.pref["v"] and keys.VIRIAL in pred and keys.VIRIAL in batch:
            dv = (batch[keys.VIRIAL] - pred[keys.VIRIAL]).reshape(len(nreal), 9)
            sv = (dv * dv).mean(-1)
            pv = self._p("v", lr) * found(keys.VIRIAL)
            if self.mae:
                loss = loss + pv * (dv.abs().mean(-1) * inv).mean()
            else:
                loss = loss + pv * (sv * inv**self.norm_exp).mean()
            show("rmse_v", torch.sqrt((sv * inv * inv).mean()).detach(), keys.VIRIAL)
        if self.pref["ae"] and "atom_ener" in batch:
            dae = batch["atom_ener"].reshape(mask.shape) - pred[keys.ATOM_ENERGY].reshape(
                mask.shape
            )
            l2ae = ((dae * dae) * mask).sum() / mask.sum()
            loss = loss + self._p("ae", lr) * found("atom_ener") * l2ae
            show("rmse_ae", torch.sqrt(l2ae).detach(), "atom_ener")
        if self.pref["h"] and keys.HESSIAN in batch:
            if keys.HESSIAN not in pred:  # e.g. a path that evaluates the model another way
                raise ConfigError(
                    "loss/start_pref_h: the model's predictions have no Hessian; Hessian "
                    "training needs the eager model (no training/compile)"
                )
            loss = loss + self._hessian_term(pred, batch, mask, lr, more, found(keys.HESSIAN))
        more = {"rmse": float(torch.sqrt(loss.detach())), **more}
        return loss, more

    def _hessian_term(self, pred, batch, mask, lr, more, find) -> torch.Tensor:
        """``p_h * find_hessian * (MSE or MAE over real atom pairs)``; adds ``rmse_h``."""
        if not find:  # no labels in this system: no term (zero gradient, as the reference)
            more["rmse_h"] = math.nan
            return torch.zeros((), dtype=torch.float64, device=mask.device)
        nf, nloc = mask.shape
        shape = (nf, 3 * nloc, 3 * nloc)
        dh = batch[keys.HESSIAN].reshape(shape) - pred[keys.HESSIAN].reshape(shape)
        l2h = hessian_pair_mean(dh * dh, mask)
        more["rmse_h"] = float(torch.sqrt(l2h.detach()))
        term = hessian_pair_mean(dh.abs(), mask) if self.mae else l2h
        return self._p("h", lr) * find * term
