"""Batch sizes per system and the probability of drawing each system.

Batch size rules (``training_data.batch_size``):

- ``int``: the same for every system; ``list[int]``: one per system;
- ``"auto"`` = ``"auto:32"``; ``"auto:N"``: ``ceil(N / natoms)``, the smallest batch holding
  at least N atoms (192-atom water -> 1, a 7-atom molecule -> 5);
- ``"max:N"``: ``max(1, floor(N / natoms))``, the largest batch holding at most N atoms;
- ``"filter:N"``: as ``"max:N"``, after the systems of more than N atoms are left out
  (:func:`filter_systems`, applied where the systems are loaded).

System probabilities: ``sys_probs`` if given, else ``auto_prob`` (``"prob_uniform"``,
``"prob_sys_size"`` or ``"prob_sys_size;a:b:w;c:d:w2;..."``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

BATCH_SIZE_FORMS = (
    'an int > 0, a list of ints (one per system), "auto", "auto:N", "max:N" or "filter:N"'
)
AUTO_PROB_FORMS = '"prob_uniform", "prob_sys_size" or "prob_sys_size;a:b:w;c:d:w2;..."'


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def resolve_batch_sizes(batch_size, natoms: Sequence[int]) -> list[int]:
    """One batch size per system from ``batch_size`` and each system's atom count."""
    nsys = len(natoms)
    if isinstance(batch_size, (list, tuple)):
        if len(batch_size) != nsys:
            raise ConfigError(
                f"batch_size lists {len(batch_size)} values but there are {nsys} systems"
            )
        return [_positive_int(b, f"batch_size[{i}]") for i, b in enumerate(batch_size)]
    if isinstance(batch_size, str):
        rule, _, number = batch_size.partition(":")
        if batch_size == "auto":
            number = "32"
        if (
            rule not in ("auto", "max", "filter")
            or not re.fullmatch(r"[0-9]+", number)
            or int(number) <= 0
        ):
            raise ConfigError(
                f"batch_size '{batch_size}' is not understood; use {BATCH_SIZE_FORMS}"
            )
        n = int(number)
        if rule == "auto":
            return [max(1, math.ceil(n / na)) for na in natoms]
        return [max(1, n // na) for na in natoms]
    try:
        size = _positive_int(batch_size, "batch_size")
    except ConfigError as err:
        raise ConfigError(f"{err}; use {BATCH_SIZE_FORMS}") from None
    return [size] * nsys


def filter_systems(batch_size, systems: list, where: str) -> list:
    """``"filter:N"``: the systems of at most N atoms (the others are dropped with a warning,
    as the reference does); any other rule keeps every system."""
    if not (isinstance(batch_size, str) and batch_size.startswith("filter:")):
        return systems
    limit = int(resolve_batch_sizes(batch_size, [1])[0])  # validates the rule; N // 1 = N
    kept = [s for s in systems if s.natoms <= limit]
    if not kept:
        raise ConfigError(
            f"{where}/batch_size '{batch_size}': every system has more than {limit} atoms"
        )
    if len(kept) < len(systems):
        import logging

        logging.getLogger("lamkit.data").warning(
            "%s/batch_size '%s': left out %d system(s) of more than %d atoms",
            where,
            batch_size,
            len(systems) - len(kept),
            limit,
        )
    return kept


def _sys_size_blocks(keyword: str, nbatches: np.ndarray) -> np.ndarray:
    """``"prob_sys_size;a:b:w;..."``: systems [a, b) share weight w/Σw in proportion to nbatch."""
    nsys = len(nbatches)
    probs = np.zeros(nsys)
    covered = np.zeros(nsys, dtype=bool)
    blocks = []
    for text in keyword.split(";")[1:]:
        parts = text.split(":")
        try:
            if len(parts) != 3:
                raise ValueError(text)
            start, end, weight = int(parts[0]), int(parts[1]), float(parts[2])
        except ValueError:
            raise ConfigError(
                f"auto_prob block '{text}' in '{keyword}' is not 'start:end:weight'"
            ) from None
        if not 0 <= start < end <= nsys:
            raise ConfigError(
                f"auto_prob block '{text}': need 0 <= start < end <= {nsys} (number of systems)"
            )
        if weight < 0 or not math.isfinite(weight):
            raise ConfigError(f"auto_prob block '{text}': the weight must be >= 0")
        if covered[start:end].any():
            raise ConfigError(f"auto_prob block '{text}' overlaps an earlier block")
        covered[start:end] = True
        blocks.append((start, end, weight))
    if not blocks:
        raise ConfigError(f"auto_prob '{keyword}' has no blocks; use {AUTO_PROB_FORMS}")
    total = sum(w for _, _, w in blocks)
    if total <= 0:
        raise ConfigError(f"auto_prob '{keyword}': the block weights sum to 0")
    for start, end, weight in blocks:
        nb = nbatches[start:end]
        probs[start:end] = weight / total * nb / nb.sum()
    return probs


def _from_sys_probs(sys_probs: Sequence[float], nbatches: np.ndarray) -> np.ndarray:
    """Entries >= 0 are kept; negative ones share the remaining mass in proportion to nbatch."""
    probs = np.asarray(sys_probs, dtype=np.float64)
    if probs.shape != nbatches.shape:
        raise ConfigError(
            f"sys_probs has {probs.size} entries but there are {nbatches.size} systems"
        )
    if not np.isfinite(probs).all():
        raise ConfigError(f"sys_probs must be finite numbers, got {list(sys_probs)}")
    assigned = probs >= 0
    total = probs[assigned].sum()
    if total > 1.0 + 1e-8:
        raise ConfigError(f"sys_probs: the non-negative entries sum to {total:g} > 1")
    rest = 1.0 - total
    out = np.where(assigned, probs, 0.0)
    if np.isclose(rest, 0.0):
        return out / out.sum()
    if assigned.all():
        raise ConfigError(
            f"sys_probs sum to {total:g}, not 1, and no negative entry is there to take the rest"
        )
    share = np.where(assigned, 0.0, nbatches)
    return out + rest * share / share.sum()


def system_probabilities(
    nbatches: Sequence[int],
    sys_probs: Sequence[float] | None = None,
    auto_prob: str = "prob_sys_size",
) -> np.ndarray:
    """Probability ``[nsys]`` float64 (summing to 1) of drawing each system at a training step.

    ``nbatches[i]`` = ceil(nframes_i / batch_size_i).  ``sys_probs`` takes precedence over
    ``auto_prob``.
    """
    nb = np.asarray(nbatches, dtype=np.float64)
    if nb.ndim != 1 or nb.size == 0 or (nb <= 0).any():
        raise ConfigError(f"nbatches must be a non-empty list of positive counts, got {nbatches}")
    if sys_probs is not None:
        return _from_sys_probs(sys_probs, nb)
    if auto_prob == "prob_uniform":
        return np.full(nb.size, 1.0 / nb.size)
    if auto_prob == "prob_sys_size":
        return nb / nb.sum()
    if isinstance(auto_prob, str) and auto_prob.startswith("prob_sys_size;"):
        return _sys_size_blocks(auto_prob, nb)
    raise ConfigError(f"auto_prob '{auto_prob}' is not understood; use {AUTO_PROB_FORMS}")
