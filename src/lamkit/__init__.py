"""lamkit: large atomic models in PyTorch, compatible with DeePMD-kit v3 inputs, data and
checkpoints.

Quick use::

    from lamkit import DeepPot
    dp = DeepPot("frozen_model.pth")          # or a DeePMD-kit v3 model.ckpt.pt
    e, f, v = dp.eval(coords, cells, atom_types)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "DeepDipole",
    "DeepPolar",
    "DeepPot",
    "DeepProperty",
    "LamCalculator",
    "__version__",
    "build_model",
    "load_model",
    "train",
]


def __getattr__(name):  # lazy: importing lamkit stays cheap, the CLI starts fast
    if name in ("DeepPot", "DeepProperty", "DeepDipole", "DeepPolar", "LamCalculator", "DP"):
        from . import infer

        return getattr(infer, name)
    if name in ("build_model", "load_model"):
        from . import model

        return getattr(model, name)
    if name == "train":
        from .train import train

        return train
    raise AttributeError(f"module 'lamkit' has no attribute {name!r}")
