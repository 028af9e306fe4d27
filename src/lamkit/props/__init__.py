"""Alloy property calculators (APEX's properties) for any ASE calculator, lamkit models
included (:class:`~lamkit.infer.LamCalculator`; its structures are relaxed in batches).

    from lamkit.props import relax_crystal, compute_eos, compute_elastic
    relaxed = relax_crystal(calc, atoms).atoms
    eos = compute_eos(calc, relaxed)          # eos.fit.v0, .b0 (GPa), .b0_prime
    eos.to_result_json(); eos.plot("eos.png")

Each ``compute_*`` returns a dataclass with ``to_result_json()`` (APEX's ``result.json``
layout); EOS, gamma line and phonons also draw a picture. ``lam props`` runs them from the
command line (:mod:`lamkit.props.cli`).
"""

from .common import PropsError
from .elastic import ElasticResult, compute_elastic, moduli
from .eos import BirchMurnaghan, EosResult, compute_eos, fit_birch_murnaghan
from .gamma import GammaResult, compute_gamma
from .phonon import PhononResult, compute_phonon
from .point_defects import DefectResult, compute_interstitial, compute_vacancy
from .relaxation import RelaxationResult, relax_crystal
from .surface import SurfaceResult, compute_surface

__all__ = [
    "BirchMurnaghan",
    "DefectResult",
    "ElasticResult",
    "EosResult",
    "GammaResult",
    "PhononResult",
    "PropsError",
    "RelaxationResult",
    "SurfaceResult",
    "compute_elastic",
    "compute_eos",
    "compute_gamma",
    "compute_interstitial",
    "compute_phonon",
    "compute_surface",
    "compute_vacancy",
    "fit_birch_murnaghan",
    "moduli",
    "relax_crystal",
]
