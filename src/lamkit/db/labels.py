"""Per-structure training labels of a record, and the lattice parameters it is filtered on.

Labels are what a training set needs besides the energy:

``forces``   [nsites, 3] eV/Å
``stress``   [3, 3] eV/Å^3, ASE's sign convention (positive under tension); deepmd's virial is
             ``-stress * volume`` (eV)
``magmoms``  [nsites] Bohr magnetons

Each is stored as float64 little-endian bytes (NULL when absent), so it comes back bit-exact.
Values are checked on the way in: a wrong shape, a NaN or a value far outside anything physical
(a unit slip) is a RecordError naming the label, the site and the value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import RecordError

#: Largest accepted force component magnitude (eV/Å).  Real forces, even on atoms squeezed far
#: from equilibrium, stay within a few hundred eV/Å.
MAX_FORCE = 1.0e4
#: Largest accepted stress component magnitude (eV/Å^3); 1 eV/Å^3 is about 160 GPa.
MAX_STRESS = 1.0e3
#: Largest accepted magnetic moment magnitude per site (Bohr magnetons); atoms carry < 10.
MAX_MAGMOM = 1.0e2

#: Label columns of ``records`` and the shape of one value, ``n`` standing for nsites.
LABELS = ("forces", "stress", "magmoms")


def _array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{name}: expected numbers; {exc}") from None
    return arr


def _check_range(
    name: str, arr: np.ndarray, limit: float, unit: str, per_site: bool, const: str
) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.argwhere(bad)[0]
        site = f" at site {int(where[0])}" if per_site else ""
        raise RecordError(f"{name}{site} is {arr[tuple(where)]}; expected finite values ({unit})")
    big = np.abs(arr) > limit
    if big.any():
        where = np.argwhere(big)[0]
        site = f" at site {int(where[0])}" if per_site else ""
        raise RecordError(
            f"{name}{site} is {arr[tuple(where)]:g} {unit}; at most {limit:g} {unit} in "
            f"magnitude is accepted (lamkit.db.labels.{const})"
        )


def clean_forces(value: Any, nsites: int) -> np.ndarray | None:
    """Forces [nsites, 3] eV/Å as float64, or None; RecordError for a bad shape or value."""
    if value is None:
        return None
    arr = _array("forces", value)
    if arr.shape != (nsites, 3):
        raise RecordError(f"forces: expected shape ({nsites}, 3) eV/Å; found {arr.shape}")
    _check_range("forces", arr, MAX_FORCE, "eV/Å", True, "MAX_FORCE")
    return arr


def clean_stress(value: Any) -> np.ndarray | None:
    """Stress [3, 3] eV/Å^3 (a 3x3 matrix, 9 values or Voigt xx yy zz yz xz xy), or None."""
    if value is None:
        return None
    arr = _array("stress", value)
    if arr.size == 6 and arr.ndim == 1:
        xx, yy, zz, yz, xz, xy = arr
        arr = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    elif arr.size == 9:
        arr = arr.reshape(3, 3)
    else:
        raise RecordError(
            f"stress: expected a 3x3 matrix or 6 Voigt values (eV/Å^3); found shape {arr.shape}"
        )
    _check_range("stress", arr, MAX_STRESS, "eV/Å^3", False, "MAX_STRESS")
    return arr


def clean_magmoms(value: Any, nsites: int) -> np.ndarray | None:
    """Magnetic moments [nsites] (Bohr magnetons), or None.  Collinear moments only."""
    if value is None:
        return None
    arr = _array("magmoms", value)
    if arr.shape != (nsites,):
        raise RecordError(
            f"magmoms: expected one collinear moment per site, shape ({nsites},); found {arr.shape}"
        )
    _check_range("magmoms", arr, MAX_MAGMOM, "Bohr magnetons", True, "MAX_MAGMOM")
    return arr


def virial_to_stress(virial: Any, volume: float) -> np.ndarray:
    """ASE stress (eV/Å^3) of a deepmd virial [9] (eV) of a cell of ``volume`` Å^3."""
    return -np.asarray(virial, dtype=np.float64).reshape(3, 3) / volume


def label_columns(labels: dict | None, nsites: int) -> dict[str, bytes | None]:
    """The ``forces`` / ``stress`` / ``magmoms`` column values of a row (validated)."""
    labels = labels or {}
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise RecordError(f"unknown label(s) {unknown}; expected {', '.join(LABELS)}")
    arrays = {
        "forces": clean_forces(labels.get("forces"), nsites),
        "stress": clean_stress(labels.get("stress")),
        "magmoms": clean_magmoms(labels.get("magmoms"), nsites),
    }
    return {k: None if v is None else v.astype("<f8").tobytes() for k, v in arrays.items()}


def decode(name: str, blob: bytes | None) -> np.ndarray | None:
    """A label array from its column bytes: forces [n, 3], stress [3, 3], magmoms [n]."""
    if blob is None:
        return None
    arr = np.frombuffer(blob, dtype="<f8").astype(np.float64)
    if name == "forces":
        return arr.reshape(-1, 3)
    if name == "stress":
        return arr.reshape(3, 3)
    return arr


#: Lattice parameter columns: lengths (Å) and angles (degrees).
LATTICE_PARAMS = ("a", "b", "c", "alpha", "beta", "gamma")


def lattice_parameters(lattice: np.ndarray) -> dict[str, float]:
    """a, b, c (Å) and alpha, beta, gamma (degrees) of a lattice with rows a, b, c."""
    rows = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
    lengths = [math.sqrt(float(v @ v)) for v in rows]

    def angle(i: int, j: int) -> float:
        cos = float(rows[i] @ rows[j]) / (lengths[i] * lengths[j])
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))

    a, b, c = lengths
    return {"a": a, "b": b, "c": c, "alpha": angle(1, 2), "beta": angle(0, 2), "gamma": angle(0, 1)}
