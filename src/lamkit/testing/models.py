"""Helpers to prepare small models for physics tests."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def randomize_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the normalisation statistics and the output bias of an untrained model
    non-trivial values, so that tests exercise every term (returns ``model``).

    Buffers named ``davg`` / ``dstd`` (shape ``[ntypes, ..., 4]`` or ``[ntypes, ..., 1]``) get
    per-type values that are constant along the middle axes.  For 4-component environment
    matrices the mean of the ``x, y, z`` components stays 0 and their spread is one value per
    type, as computed from data: anything else breaks rotation invariance by construction.
    Buffers named ``out_bias`` get per-type values of a few eV.
    """
    rng = np.random.default_rng(seed)
    for name, buf in model.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in ("davg", "dstd", "out_bias") or buf.ndim == 0:
            continue
        per_type = (buf.shape[0],) + (1,) * (buf.ndim - 1)  # constant along middle axes
        if leaf == "out_bias":
            vals = rng.uniform(-3.0, 1.0, size=buf.shape)
        elif buf.ndim == 1 or buf.shape[-1] == 1:  # radial-only statistics
            lo, hi = (0.03, 0.08) if leaf == "davg" else (0.1, 0.2)
            vals = np.broadcast_to(rng.uniform(lo, hi, size=per_type), buf.shape).copy()
        elif leaf == "davg":
            vals = np.zeros(buf.shape)
            vals[..., :1] = rng.uniform(0.03, 0.08, size=per_type)
        else:
            vals = np.empty(buf.shape)
            vals[..., :1] = rng.uniform(0.1, 0.2, size=per_type)
            vals[..., 1:] = rng.uniform(0.1, 0.2, size=per_type)
        buf.copy_(torch.as_tensor(vals, dtype=buf.dtype))
    return model


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> torch.nn.Module:
    """Load ``src``'s parameters and buffers into ``dst`` (casting to ``dst``'s dtypes), e.g. to
    get a float32 twin of a float64 model; returns ``dst``."""
    dst.load_state_dict(src.state_dict())
    return dst
