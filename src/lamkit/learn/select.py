"""Candidate selection from explored frames by the maximum force deviation (DPGen2's rules).

* ``fixed``: trust levels ``lo`` and ``hi`` (eV/Å): a frame with ``max_devi_f < lo`` is
  accurate, ``lo <= max_devi_f < hi`` a candidate, ``max_devi_f >= hi`` failed;
* ``adaptive-lower``: ``hi`` as above, and the lower level is moved so that the fraction
  ``rate_candi`` of the frames below ``hi`` with the largest deviations are candidates (the
  others accurate); the level actually used is reported;
* ``random``: the baseline; ``max_select`` frames drawn uniformly from all explored frames
  whatever their deviation (the ratios are still those of the fixed levels).

With virial trust levels ``lo_v``/``hi_v`` (eV per atom, the ``max_devi_v`` of
``lam model-devi``) a frame is classified by both deviations, the worse class winning (as
DPGen2's ``model_devi_v_trust_lo/hi``): strained perfect crystals have zero forces for every
member, so only the virial deviation can flag their stress.

At most ``max_select`` candidates are labelled per iteration, drawn at random (seeded) when
there are more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .config import SelectSpec


@dataclass
class Selection:
    accurate: int
    candidate: int
    failed: int
    lo: float  # the lower trust level used, eV/Å
    hi: float
    chosen: list[int]  # frame indices to label

    @property
    def total(self) -> int:
        return self.accurate + self.candidate + self.failed

    def ratios(self) -> dict[str, float]:
        n = max(self.total, 1)
        return {
            "accurate": self.accurate / n,
            "candidate": self.candidate / n,
            "failed": self.failed / n,
        }

    def to_dict(self) -> dict:
        return {**asdict(self), "ratios": self.ratios()}


def classify(devi: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 accurate, 1 candidate, 2 failed for each max_devi_f (eV/Å)."""
    devi = np.asarray(devi, dtype=np.float64)
    return np.where(devi < lo, 0, np.where(devi < hi, 1, 2))


def adaptive_lower(devi: np.ndarray, hi: float, rate: float) -> float:
    """The lower level that makes the top ``rate`` of the frames below ``hi`` candidates."""
    below = np.sort(np.asarray(devi)[np.asarray(devi) < hi])[::-1]
    n = int(np.floor(rate * len(below)))
    if n <= 0:
        return hi
    return float(below[n - 1])


def select(devi, spec: SelectSpec, iteration: int, devi_v=None) -> Selection:
    """Classify the frames' ``devi`` (max_devi_f, eV/Å) and, with virial levels, ``devi_v``
    (max_devi_v, eV/atom), and choose the frames to label."""
    devi = np.asarray(devi, dtype=np.float64)
    rng = np.random.default_rng([spec.seed, iteration])
    lo = spec.lo
    if spec.method == "adaptive-lower":
        lo = adaptive_lower(devi, spec.hi, spec.rate_candi)
    kind = classify(devi, lo, spec.hi)
    if spec.hi_v is not None and devi_v is not None:
        lo_v = spec.lo_v if spec.lo_v is not None else 0.0
        kind = np.maximum(kind, classify(np.asarray(devi_v, dtype=np.float64), lo_v, spec.hi_v))
    if spec.method == "random":
        pool = np.arange(len(devi))
    else:
        pool = np.flatnonzero(kind == 1)
    if len(pool) > spec.max_select:
        pool = np.sort(rng.choice(pool, size=spec.max_select, replace=False))
    return Selection(
        accurate=int((kind == 0).sum()),
        candidate=int((kind == 1).sum()),
        failed=int((kind == 2).sum()),
        lo=float(lo),
        hi=float(spec.hi),
        chosen=[int(i) for i in pool],
    )
