"""An exponential moving average (EMA) of a model's floating-point parameters.

After every optimizer step each shadow weight moves towards the live one:
``shadow = decay * shadow + (1 - decay) * param`` (the reference's ``training.enable_ema``).
The shadow weights travel in every regular checkpoint (key ``"ema"``) so a restart continues the
average exactly, and are written as a checkpoint family of their own
(``model_ema.ckpt-<step>.pt`` for ``save_ckpt: model.ckpt``)
whose files evaluate, test and freeze like any other checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)


def ema_prefix(save_ckpt: str) -> str:
    """The EMA family's prefix, named as the reference names it: ``_ema`` before the last
    suffix (``model.ckpt`` -> ``model_ema.ckpt``; ``run/ckpt`` -> ``run/ckpt_ema``)."""
    path = Path(save_ckpt)
    if path.suffix:
        return str(path.with_name(f"{path.stem}_ema{path.suffix}"))
    return str(path.with_name(f"{path.name}_ema"))


class WeightAverage:
    """Shadow copies of ``model``'s floating-point parameters, keyed by their names."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"training/ema_decay: expected 0 <= decay < 1; found {decay}")
        self.decay = float(decay)
        with torch.no_grad():
            self.shadow = {n: p.detach().clone() for n, p in self._params(model)}

    @staticmethod
    def _params(model: torch.nn.Module):
        return [(n, p) for n, p in model.named_parameters() if torch.is_floating_point(p)]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, p in self._params(model):
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "model": {n: t.cpu().clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        saved = state.get("model", {})
        if set(saved) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(saved))[:3]
            extra = sorted(set(saved) - set(self.shadow))[:3]
            raise ConfigError(
                f"{where}: its EMA weights do not match the model (missing {missing}, "
                f"unexpected {extra})"
            )
        if float(state.get("decay", self.decay)) != self.decay:
            log.warning(
                "%s: EMA decay %s in the checkpoint, %s in the input; the input's is used",
                where,
                state.get("decay"),
                self.decay,
            )
        with torch.no_grad():
            for name, t in self.shadow.items():
                t.copy_(saved[name].to(t))

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``model`` carrying the averaged weights inside the block, its own ones after."""
        live = {n: p.detach().clone() for n, p in self._params(model)}
        with torch.no_grad():
            for name, p in self._params(model):
                p.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._params(model):
                    p.copy_(live[name])
