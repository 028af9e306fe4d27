"""Deterministic synthetic crystals for tests and benchmarks.

Prototype lattices (rocksalt, CsCl, zincblende, wurtzite, fluorite, rutile, cubic perovskite
ABX3, L1_2 A3B, full Heusler A2BC, elemental fcc/bcc/hcp/diamond) decorated with elements drawn
from :data:`ELEMENT_POOL`, lattice constants from covalent radii (optionally a random strain)
and a made-up energy: per-element base energies plus a formation term, so hulls have
stable and unstable members.  Every structure passes :func:`records.validate`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from ase.data import atomic_numbers, covalent_radii

#: 60 elements the generator decorates prototypes with.
ELEMENT_POOL = (
    "H Li Be B C N O F Na Mg Al Si P S Cl K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br "
    "Rb Sr Y Zr Nb Mo Ru Rh Pd Ag Cd In Sn Sb Te I Cs Ba La Ce Nd Hf Ta W Pt Au Pb Bi"
).split()

_FCC = 0.5 * np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]])
_SC = np.eye(3)
_HEX = np.array([[1.0, 0, 0], [-0.5, np.sqrt(3) / 2, 0], [0, 0, 1.633]])

# name: (lattice shape, c/a or None, [(site label, frac)], nearest-neighbour distance / a)
PROTOTYPES: dict[str, tuple[np.ndarray, list[tuple[int, tuple]], float]] = {
    "rocksalt": (_FCC, [(0, (0, 0, 0)), (1, (0.5, 0.5, 0.5))], 0.5),
    "cscl": (_SC, [(0, (0, 0, 0)), (1, (0.5, 0.5, 0.5))], np.sqrt(3) / 2),
    "zincblende": (_FCC, [(0, (0, 0, 0)), (1, (0.25, 0.25, 0.25))], np.sqrt(3) / 4),
    "wurtzite": (
        _HEX,
        [
            (0, (1 / 3, 2 / 3, 0)),
            (0, (2 / 3, 1 / 3, 0.5)),
            (1, (1 / 3, 2 / 3, 0.375)),
            (1, (2 / 3, 1 / 3, 0.875)),
        ],
        0.612,
    ),
    "fluorite": (
        _FCC,
        [(0, (0, 0, 0)), (1, (0.25, 0.25, 0.25)), (1, (0.75, 0.75, 0.75))],
        np.sqrt(3) / 4,
    ),
    "rutile": (
        np.diag([1.0, 1.0, 0.64]),
        [
            (0, (0, 0, 0)),
            (0, (0.5, 0.5, 0.5)),
            (1, (0.3, 0.3, 0)),
            (1, (0.7, 0.7, 0)),
            (1, (0.8, 0.2, 0.5)),
            (1, (0.2, 0.8, 0.5)),
        ],
        0.42,
    ),
    "perovskite": (
        _SC,
        [
            (0, (0, 0, 0)),
            (1, (0.5, 0.5, 0.5)),
            (2, (0.5, 0.5, 0)),
            (2, (0.5, 0, 0.5)),
            (2, (0, 0.5, 0.5)),
        ],
        0.5,
    ),
    "l12": (
        _SC,
        [(1, (0, 0, 0)), (0, (0.5, 0.5, 0)), (0, (0.5, 0, 0.5)), (0, (0, 0.5, 0.5))],
        np.sqrt(2) / 2,
    ),
    "heusler": (
        _FCC,
        [(1, (0, 0, 0)), (2, (0.5, 0.5, 0.5)), (0, (0.25, 0.25, 0.25)), (0, (0.75, 0.75, 0.75))],
        np.sqrt(3) / 4,
    ),
    "fcc": (_FCC, [(0, (0, 0, 0))], np.sqrt(2) / 2),
    "bcc": (
        0.5 * np.array([[-1.0, 1, 1], [1, -1, 1], [1, 1, -1]]),
        [(0, (0, 0, 0))],
        np.sqrt(3) / 2,
    ),
    "hcp": (_HEX, [(0, (1 / 3, 2 / 3, 0.25)), (0, (2 / 3, 1 / 3, 0.75))], 1.0),
    "diamond": (_FCC, [(0, (0, 0, 0)), (0, (0.25, 0.25, 0.25))], np.sqrt(3) / 4),
}
#: Number of distinct elements each prototype takes.
N_SPECIES = {name: 1 + max(lab for lab, _ in sites) for name, (_, sites, _) in PROTOTYPES.items()}


def _base_energy(el: str) -> float:
    """A made-up elemental energy per atom (eV), fixed per element."""
    z = atomic_numbers[el]
    return -1.0 - 7.0 * ((z * 0.6180339887) % 1.0)


def make_structure(
    proto: str, elements: list[str], rng: np.random.Generator, strain: float = 0.0
) -> dict:
    """One decorated prototype as a dict (lattice, species, frac_coords, energy).

    The lattice constant (Å) is on a 0.01 Å grid, from the mean covalent radius; ``strain`` > 0
    multiplies the cell by 1 + a random matrix with entries in [-strain, strain]."""
    shape, sites, nn = PROTOTYPES[proto]
    species = [elements[lab] for lab, _ in sites]
    radii = [covalent_radii[atomic_numbers[el]] for el in elements]
    bond = max(2 * np.mean(radii), 1.6)
    a = round(bond / nn, 2)
    lattice = a * shape
    if strain > 0:
        lattice = lattice @ (np.eye(3) + rng.uniform(-strain, strain, (3, 3)))
    frac = np.array([f for _, f in sites], dtype=np.float64)
    ref = np.mean([_base_energy(el) for el in species])
    formation = 0.0 if len(elements) == 1 else rng.uniform(-1.5, 0.3)
    epa = ref + formation + rng.uniform(0.0, 0.2)
    return {
        "lattice": lattice,
        "species": species,
        "frac_coords": frac,
        "energy": float(epa * len(species)),
    }


def generate(
    n: int,
    seed: int = 0,
    elements: tuple[str, ...] = ELEMENT_POOL,
    model: str | None = "synthetic",
    strain: float = 0.0,
) -> Iterator[dict]:
    """``n`` structures (dicts for :meth:`CrystalDB.import_records`), the same for the same seed.

    Four prototypes in thirteen are elemental, so chemical systems get their terminal entries."""
    rng = np.random.default_rng(seed)
    names = list(PROTOTYPES)
    pool = list(elements)
    for _ in range(n):
        proto = names[int(rng.integers(len(names)))]
        k = N_SPECIES[proto]
        if k > len(pool):
            proto, k = "fcc", 1
        chosen = [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]
        d = make_structure(proto, chosen, rng, strain)
        d["model"] = model
        d["tags"] = [proto]
        yield d
