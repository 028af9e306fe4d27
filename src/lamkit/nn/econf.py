"""Electronic-configuration type embedding input (``use_econf_tebd``).

Instead of a one-hot vector, each element enters the type embedding net as a fixed vector that
spells out its ground-state electron configuration, so elements never seen in training still get
a meaningful embedding and a model's type map can change without new weights.

The vector, as DeePMD-kit defines it: the orbitals of the subshells 1s 2s 2p 3s 3p 3d 4s 4p 4d
4f 5s 5p 5d 5f 6s 6p 6d 7s 7p (59 orbitals) in that order; a subshell with ``e`` electrons in
``m = 2l + 1`` orbitals has ``max(0, e - m)`` doubly occupied orbitals first, then singly occupied
ones (Hund's rule), then empty ones; an orbital becomes two entries, (-1, -1) empty, (-1, 1)
single, (1, 1) double. That gives 118 entries, scaled by ``1/sqrt(118)``.

Configurations follow the Madelung (n + l, then n) filling order, except for the elements whose
ground state is known to differ (listed below: Cr, Cu, the 4d and 5d exceptions, La, Ce, Gd,
Ac-Np, Cm, and the predicted Ds, Rg). ``tests/test_econf.py`` checks all 118 elements against the
reference's table.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

SUBSHELLS = (
    (1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (4, 2), (4, 3),
    (5, 0), (5, 1), (5, 2), (5, 3), (6, 0), (6, 1), (6, 2), (7, 0), (7, 1),
)  # fmt: skip
ECONF_DIM = 2 * sum(2 * l + 1 for _, l in SUBSHELLS)  # 118

SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am "
    "Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()

# ground states that differ from the Madelung order: {element: {(n, l): electrons}}
_EXCEPTIONS: dict[str, dict[tuple[int, int], int]] = {
    "Cr": {(3, 2): 5, (4, 0): 1},
    "Cu": {(3, 2): 10, (4, 0): 1},
    "Nb": {(4, 2): 4, (5, 0): 1},
    "Mo": {(4, 2): 5, (5, 0): 1},
    "Ru": {(4, 2): 7, (5, 0): 1},
    "Rh": {(4, 2): 8, (5, 0): 1},
    "Pd": {(4, 2): 10, (5, 0): 0},
    "Ag": {(4, 2): 10, (5, 0): 1},
    "La": {(4, 3): 0, (5, 2): 1},
    "Ce": {(4, 3): 1, (5, 2): 1},
    "Gd": {(4, 3): 7, (5, 2): 1},
    "Pt": {(5, 2): 9, (6, 0): 1},
    "Au": {(5, 2): 10, (6, 0): 1},
    "Ac": {(5, 3): 0, (6, 2): 1},
    "Th": {(5, 3): 0, (6, 2): 2},
    "Pa": {(5, 3): 2, (6, 2): 1},
    "U": {(5, 3): 3, (6, 2): 1},
    "Np": {(5, 3): 4, (6, 2): 1},
    "Cm": {(5, 3): 7, (6, 2): 1},
    "Ds": {(6, 2): 9, (7, 0): 1},
    "Rg": {(6, 2): 10, (7, 0): 1},
}


def configuration(symbol: str) -> dict[tuple[int, int], int]:
    """Electrons per subshell ``(n, l)`` of the element's ground state."""
    if symbol not in SYMBOLS:
        raise ConfigError(
            f"use_econf_tebd: '{symbol}' is not an element (H to Og); the electronic "
            "configuration embedding needs element names in type_map"
        )
    left = SYMBOLS.index(symbol) + 1
    occ = {}
    for n, l in sorted(SUBSHELLS, key=lambda s: (s[0] + s[1], s[0])):
        occ[(n, l)] = min(2 * (2 * l + 1), left)
        left -= occ[(n, l)]
    occ.update(_EXCEPTIONS.get(symbol, {}))
    return occ


def econf_vector(symbol: str) -> np.ndarray:
    """The unscaled 118-entry vector of ±1 (see the module docstring)."""
    occ = configuration(symbol)
    spins = {0: (-1, -1), 1: (-1, 1), 2: (1, 1)}
    out: list[int] = []
    for n, l in SUBSHELLS:
        m, e = 2 * l + 1, occ.get((n, l), 0)
        pairs = max(0, e - m)
        slots = [2] * pairs + [1] * (e - 2 * pairs) + [0] * (m - e + pairs)
        out.extend(s for slot in slots for s in spins[slot])
    return np.asarray(out, dtype=np.int64)


def econf_table(type_map: list[str]) -> np.ndarray:
    """``[ntypes, 118]`` float64: the scaled vectors of ``type_map``'s elements."""
    return np.stack([econf_vector(t) for t in type_map]) / math.sqrt(ECONF_DIM)


def econf_types(use_econf_tebd: bool, type_map, ntypes: int, where: str) -> list[str] | None:
    """The type map a descriptor's type embedding reads its econf vectors for (None: one-hot
    inputs); ``use_econf_tebd`` needs the model's element names."""
    if not use_econf_tebd:
        return None
    if not type_map or len(type_map) != ntypes:
        raise ConfigError(
            f"{where}/use_econf_tebd: needs the model's type_map of {ntypes} elements"
        )
    for t in type_map:
        configuration(t)  # a clear error for a name that is not an element
    return list(type_map)
