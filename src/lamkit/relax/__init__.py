"""Batched structure relaxation: many structures of any sizes advance together, one potential
evaluation per optimizer step for the whole batch.

    from lamkit.relax import relax
    results = relax(structures, "model.pt", optimizer="fire", cell_filter="frechet", fmax=0.05)

* :func:`relax` / :class:`Relaxer`: FIRE or L-BFGS exactly as ASE runs them, per structure,
  with ASE's FrechetCellFilter (log-strain cell degrees of freedom), a hydrostatic-only or a
  fixed cell, an optional external pressure, and in-flight batching under an atom budget.
* :class:`LamkitPotential`: lamkit / DeePMD-kit v3 energy models, all structures of a step in
  one model call (:mod:`lamkit.infer.batch`); :class:`AsePotential`: any ASE calculator.
"""

from .potential import AsePotential, LamkitPotential, Potential, as_potential
from .relaxer import Relaxer, RelaxResult, relax

__all__ = [
    "AsePotential",
    "LamkitPotential",
    "Potential",
    "RelaxResult",
    "Relaxer",
    "as_potential",
    "relax",
]
