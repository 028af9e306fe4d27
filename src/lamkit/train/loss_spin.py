"""The spin energy loss ``type: "ener_spin"`` (DeePMD-kit 3.2 semantics), for spin models
(:mod:`lamkit.model.spin`).

With per-frame real-atom counts ``N_f``, the prefactor schedule of :mod:`.loss` and a term
active only when both its start and limit prefactors are non-zero:

    L = p_e mean_f(dE_f^2 / N_f)            (1/N_f^2 with intensive_ener_virial)
      + p_fr mean_{real atoms, xyz}(dF^2)
      + p_fm mean_{magnetic atoms, xyz}(dF_mag^2)   (0 for a batch without magnetic atoms)
      + p_v mean_f(mean_9(dW^2) / N_f)
      + p_ae mean_{real atoms}(de_i^2)

``loss_func: "mae"`` uses absolute instead of squared errors (energy and virial divided by
``N_f``). Displayed: rmse_e (per atom), rmse_fr, rmse_fm (eV/μB), rmse_v (per atom), rmse_ae
(with ``mae``: mae_e, mae_fr, ... the terms themselves) and rmse = sqrt(L); a metric whose
label is missing in the batch is NaN.
"""

from __future__ import annotations

import math

import torch

from .. import keys
from ..config.schema import Arg, normalize
from ..data import DataRequirement
from ..errors import ConfigError
from ..model.spin import is_spin_model
from .loss_energy import prefactor
from .loss_registry import LOSSES

_NUM = (float, int)
ENER_SPIN_ARGS = (
    Arg("type", (str,), "ener_spin"),
    Arg("start_pref_e", _NUM, 0.02),
    Arg("limit_pref_e", _NUM, 1.0),
    Arg("start_pref_fr", _NUM, 1000.0),
    Arg("limit_pref_fr", _NUM, 1.0),
    Arg("start_pref_fm", _NUM, 10000.0),
    Arg("limit_pref_fm", _NUM, 10.0),
    Arg("start_pref_v", _NUM, 0.0),
    Arg("limit_pref_v", _NUM, 0.0),
    Arg("start_pref_ae", _NUM, 0.0),
    Arg("limit_pref_ae", _NUM, 0.0),
    Arg("start_pref_pf", _NUM, 0.0),
    Arg("limit_pref_pf", _NUM, 0.0),
    Arg("relative_f", (float, type(None)), None),
    Arg("enable_atom_ener_coeff", (bool,), False),
    Arg("loss_func", (str,), "mse", choices=("mse", "mae")),
    Arg("intensive_ener_virial", (bool,), False),
)


@LOSSES.register("ener_spin")
class EnergySpinLoss:
    """The ``ener_spin`` loss; call it with predictions, a labelled batch and the current lr."""

    fitting_types = ("ener", "energy")

    def __init__(self, config: dict, start_lr: float, model_config: dict | None = None):
        c = normalize(config, ENER_SPIN_ARGS, "loss")
        for key in ("start_pref_pf", "relative_f", "enable_atom_ener_coeff"):
            if c[key]:  # the reference's ener_spin accepts them but does not use them
                raise ConfigError(f"loss/{key}: not used by the reference's ener_spin loss")
        if model_config is not None and not model_config.get("spin"):
            raise ConfigError("loss/type: 'ener_spin' needs a spin model (a model/spin section)")
        self.config = c
        self.start_lr = start_lr
        self.pref = {}
        for name in ("e", "fr", "fm", "v", "ae"):
            s, lim = float(c[f"start_pref_{name}"]), float(c[f"limit_pref_{name}"])
            self.pref[name] = (s, lim) if (s != 0.0 and lim != 0.0) else None
        self.norm_exp = 2 if c["intensive_ener_virial"] else 1
        self.mae = c["loss_func"] == "mae"

    def attach(self, model) -> None:
        if not is_spin_model(model):
            raise ConfigError("loss/type: 'ener_spin' needs a spin model (a model/spin section)")

    @property
    def need(self) -> dict[str, bool]:
        """Which predictions the model must produce for this loss."""
        return {"force": bool(self.pref["fr"] or self.pref["fm"]), "virial": bool(self.pref["v"])}

    def requirements(self):
        """Label files this loss reads (the spins themselves are the model's input)."""
        reqs = [
            DataRequirement(keys.ENERGY, 1, atomic=False, must=False),
            DataRequirement(keys.FORCE, 3, atomic=True, must=False),
            DataRequirement(keys.FORCE_MAG, 3, atomic=True, must=False),
            DataRequirement(keys.VIRIAL, 9, atomic=False, must=False),
        ]
        if self.pref["ae"]:
            reqs.append(DataRequirement("atom_ener", 1, atomic=True, must=False))
        return reqs

    def _p(self, name: str, lr: float) -> float:
        return prefactor(self.pref[name], lr, self.start_lr)

    def _per_frame(self, ae: torch.Tensor, se: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        """Energy/virial term from per-frame mean absolute ``ae`` or squared ``se`` errors."""
        return (ae * inv).mean() if self.mae else (se * inv**self.norm_exp).mean()

    def __call__(self, pred: dict, batch: dict, lr: float) -> tuple[torch.Tensor, dict]:
        mask = pred[keys.MASK].to(torch.float64)  # [nf, nloc]
        inv = 1.0 / mask.sum(-1)
        loss = torch.zeros((), dtype=torch.float64, device=mask.device)
        more: dict[str, float] = {}

        def found(key):
            return float(batch.get(keys.find_key(key), 0.0))

        def show_err(name, term, rmse, key):  # as the reference: mae_* with loss_func mae
            value = term if self.mae else rmse
            more[f"{'mae' if self.mae else 'rmse'}_{name}"] = (
                float(value.detach()) if found(key) else math.nan
            )

        if self.pref["e"] and keys.ENERGY in batch:
            de = (pred[keys.ENERGY] - batch[keys.ENERGY]).reshape(len(inv), -1)
            se = (de * de).mean(-1)
            term = self._per_frame(de.abs().mean(-1), se, inv)
            loss = loss + self._p("e", lr) * found(keys.ENERGY) * term
            show_err("e", term, torch.sqrt((se * inv * inv).mean()), keys.ENERGY)
        if self.pref["fr"] and keys.FORCE in pred and keys.FORCE in batch:
            df = batch[keys.FORCE] - pred[keys.FORCE]
            m3 = mask.unsqueeze(-1)
            denom = 3.0 * mask.sum()
            l2 = ((df * df) * m3).sum() / denom
            term = (df.abs() * m3).sum() / denom if self.mae else l2
            loss = loss + self._p("fr", lr) * found(keys.FORCE) * term
            show_err("fr", term, torch.sqrt(l2), keys.FORCE)
        if self.pref["fm"] and keys.FORCE_MAG in pred and keys.FORCE_MAG in batch:
            sel = pred[keys.MASK_MAG].expand(-1, -1, 3)
            dfm = batch[keys.FORCE_MAG].reshape(sel.shape)[sel] - pred[keys.FORCE_MAG][sel]
            # no magnetic atom in the batch: an empty mean (NaN) counts as zero, as the reference
            l2 = torch.nan_to_num((dfm * dfm).mean())
            term = torch.nan_to_num(dfm.abs().mean()) if self.mae else l2
            loss = loss + self._p("fm", lr) * found(keys.FORCE_MAG) * term
            show_err("fm", term, torch.sqrt(l2), keys.FORCE_MAG)
        if self.pref["v"] and keys.VIRIAL in pred and keys.VIRIAL in batch:
            dv = (batch[keys.VIRIAL] - pred[keys.VIRIAL]).reshape(len(inv), 9)
            sv = (dv * dv).mean(-1)
            term = self._per_frame(dv.abs().mean(-1), sv, inv)
            loss = loss + self._p("v", lr) * found(keys.VIRIAL) * term
            show_err("v", term, torch.sqrt((sv * inv * inv).mean()), keys.VIRIAL)
        if self.pref["ae"] and "atom_ener" in batch:
            dae = batch["atom_ener"].reshape(mask.shape) - pred[keys.ATOM_ENERGY].reshape(
                mask.shape
            )
            l2 = ((dae * dae) * mask).sum() / mask.sum()
            term = (dae.abs() * mask).sum() / mask.sum() if self.mae else l2
            loss = loss + self._p("ae", lr) * found("atom_ener") * term
            show_err("ae", term, torch.sqrt(l2), "atom_ener")
        more = {"rmse": float(torch.sqrt(loss.detach())), **more}
        return loss, more
