"""Candidate crystals for screening: random symmetric crystals and decorated prototypes.

``random_crystals(elements, n, rng)`` draws space groups and Wyckoff-compatible compositions of
one to three elements and lets pyxtal place the atoms (random symmetric crystals, 1-64 atoms
per cell by default, volumes scaled from atomic radii). ``decorated_prototypes(elements)``
decorates known metallic structure types (fcc, bcc, hcp, L1_2, L1_0, B2, B32, D0_3, Heusler,
...) with the given elements, at volumes from Vegard's law, optionally also as supercells with
a random site swap or substitution and a rattle.

Every returned ``ase.Atoms`` is periodic, has no two atoms closer than ``min_distance`` (Å,
periodic images included) and carries its provenance in ``atoms.info``: ``"source"`` (a short
unique-looking label such as ``"L1_2:AuCu3"`` or ``"pyxtal:sg225:Au4Cu12"``), ``"prototype"`` or
``"spacegroup"``. Both functions are deterministic for a given seed or generator state.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import signal
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii, reference_states
from ase.neighborlist import neighbor_list

log = logging.getLogger("lamkit")

# Space groups frequent among intermetallics (ICSD-style statistics): drawn more often.
COMMON_METALLIC_GROUPS = (
    225, 229, 221, 194, 191, 139, 123, 166, 187, 164, 62, 63, 12, 71, 65, 227, 223, 141, 216,
)
COMMON_WEIGHT = 8.0


# ---------------------------------------------------------------------------------------------
# helpers shared by both generators


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_elements(elements: Sequence[str], where: str) -> list[str]:
    elements = list(dict.fromkeys(elements))
    if not elements:
        raise ValueError(f"{where}: expected at least one element symbol, got none")
    bad = [e for e in elements if e not in atomic_numbers or e == "X"]
    if bad:
        raise ValueError(f"{where}: unknown element symbol(s) {', '.join(map(repr, bad))}")
    return elements


def atomic_volume(symbol: str) -> float:
    """Volume per atom (Å^3) of the element's ground-state solid in ASE's reference states;
    for elements without a dense metallic reference: an fcc packing of covalent spheres."""
    z = atomic_numbers[symbol]
    ref = reference_states[z] or {}
    sym, a = ref.get("symmetry"), ref.get("a")
    if sym == "fcc":
        return a**3 / 4
    if sym == "bcc":
        return a**3 / 2
    if sym == "hcp":
        return a**3 * ref.get("c/a", np.sqrt(8 / 3)) * np.sqrt(3) / 4
    if sym == "sc":
        return a**3
    if sym == "diamond":
        return a**3 / 8
    nn = 2.0 * covalent_radii[z]
    return nn**3 / np.sqrt(2)  # fcc with nearest-neighbour distance 2 r_cov


def min_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Smallest interatomic distance in Å, periodic images (and an atom's own images) included;
    ``inf`` if no pair is closer than ``cutoff``."""
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else float("inf")


def nn_distance(symbol: str) -> float:
    """Nearest-neighbour distance (Å) of the element packed fcc at its :func:`atomic_volume`."""
    return float((np.sqrt(2.0) * atomic_volume(symbol)) ** (1.0 / 3.0))


def min_distance_ratio(atoms: Atoms) -> float:
    """Smallest ratio d_ij / ((nn_i + nn_j) / 2) over all pairs (periodic images included), with
    nn the elements' :func:`nn_distance`; ``inf`` for no pair within 1.5 x the largest nn."""
    symbols = atoms.get_chemical_symbols()
    nn = np.array([nn_distance(s) for s in symbols])
    i, j, d = neighbor_list("ijd", atoms, 1.5 * float(nn.max()))
    if not len(d):
        return float("inf")
    return float((d / (0.5 * (nn[i] + nn[j]))).min())


def _scale_to_vegard(atoms: Atoms, factor: float = 1.0) -> Atoms:
    """Scale the cell uniformly so the volume is ``factor`` x the sum of atomic volumes."""
    target = factor * sum(atomic_volume(s) for s in atoms.get_chemical_symbols())
    scale = (target / atoms.get_volume()) ** (1.0 / 3.0)
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    return atoms


def _formula(atoms: Atoms) -> str:
    return atoms.get_chemical_formula(mode="metal")


# ---------------------------------------------------------------------------------------------
# random symmetric crystals (pyxtal)


def _draw_group(rng: np.random.Generator) -> int:
    weights = np.ones(230)
    weights[0] = 0.2  # P1: allowed, rarely useful
    for g in COMMON_METALLIC_GROUPS:
        weights[g - 1] = COMMON_WEIGHT
    return int(rng.choice(np.arange(1, 231), p=weights / weights.sum()))


@functools.cache
def _group(number: int):
    """pyxtal's Group (about 40 ms to build; read-only here, so built once per process)."""
    from pyxtal.symmetry import Group

    return Group(number)


def _multiplicities(group: int) -> list[int]:
    return sorted({int(w.multiplicity) for w in _group(group).Wyckoff_positions})


def _draw_counts(
    mults: list[int], nel: int, max_atoms: int, rng: np.random.Generator
) -> list[int] | None:
    """Per-element atom counts, each a sum of one or two Wyckoff multiplicities."""
    small = [m for m in mults if m <= max_atoms]
    if not small:
        return None
    counts = []
    for _ in range(nel):
        k = 1 if rng.random() < 0.7 else 2
        counts.append(int(sum(rng.choice(small, size=k))))
    return counts if sum(counts) <= max_atoms else None


class _PyxtalTimeout(BaseException):
    """Raised by the interval timer inside pyxtal (a BaseException: pyxtal's own
    ``except Exception`` retry loops must not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the block after ``seconds`` (SIGALRM; only in the main thread on POSIX;
    elsewhere, or with None, no limit)."""
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise _PyxtalTimeout()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _pyxtal_crystal(
    group: int, species: list[str], counts: list[int], seed: int, timeout: float | None
) -> Atoms | None:
    """One pyxtal attempt; None when pyxtal refuses, fails (it raises many kinds of errors)
    or runs longer than ``timeout`` seconds (a few group/composition pairs make it loop for
    minutes)."""
    from pyxtal import pyxtal
    from pyxtal.tolerance import Tol_matrix

    if not _group(group).check_compatible(counts)[0]:
        return None
    crystal = pyxtal()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _time_limit(timeout):
                crystal.from_random(
                    3,
                    _group(group),
                    species,
                    counts,
                    factor=1.0,
                    tm=Tol_matrix(prototype="metallic"),
                    random_state=np.random.default_rng(seed),
                    max_count=3,
                )
            if not crystal.valid:
                return None
            atoms = crystal.to_ase(resort=True)
        except _PyxtalTimeout:
            log.info("pyxtal: sg %d %s %s timed out after %s s", group, species, counts, timeout)
            return None
        except Exception as exc:  # pyxtal signals incompatibility and failures by exceptions
            log.debug("pyxtal failed for sg %d %s %s: %s", group, species, counts, exc)
            return None
    atoms.pbc = True
    return atoms


def random_crystals(
    elements: Sequence[str],
    n: int,
    rng: np.random.Generator | int | None = None,
    *,
    max_atoms: int = 64,
    min_atoms: int = 1,
    n_elements: tuple[int, int] = (1, 3),
    volume_factor: tuple[float, float] = (1.0, 1.15),
    max_volume_factor: float = 1.4,
    groups: Sequence[int] | None = None,
    min_ratio: float = 0.7,
    max_attempts: int | None = None,
    timeout: float | None = 10.0,
) -> list[Atoms]:
    """``n`` random symmetric crystals of 1-3 of ``elements`` made with pyxtal.

    Each crystal: a space group drawn from 1-230 (groups common among intermetallics,
    :data:`COMMON_METALLIC_GROUPS`, weighted x8; or uniformly from ``groups``); a number k of
    elements in ``n_elements`` (inclusive range, k drawn with weight k); per-element counts
    that are sums of one or two Wyckoff multiplicities of the group, with
    ``min_atoms <= total <= max_atoms`` atoms in the (conventional) cell. pyxtal places the
    atoms; the cell is then scaled to f x the Vegard volume (sum of the elements'
    :func:`atomic_volume`), f uniform in ``volume_factor``, or larger (up to
    ``max_volume_factor``) until no pair is closer than ``min_ratio`` x the mean of the two
    elements' :func:`nn_distance`. Attempts that pyxtal refuses, fails or takes over
    ``timeout`` seconds for (SIGALRM, main thread only), or that would need a larger
    expansion, are skipped; after ``max_attempts`` (default ``50 n``) attempts the list is
    returned short with a warning in the log.

    The result depends only on the seed (or generator state) of ``rng`` (and on no attempt
    hitting the timeout: pyxtal's typical attempt takes 10-100 ms).
    ``atoms.info``: ``source`` ("pyxtal:sg<N>:<formula>#<k>"), ``spacegroup`` (requested group).
    """
    elements = _check_elements(elements, "random_crystals")
    if not 1 <= min_atoms <= max_atoms:
        raise ValueError(
            f"random_crystals: need 1 <= min_atoms <= max_atoms, got {min_atoms}, {max_atoms}"
        )
    lo, hi = n_elements[0], min(n_elements[1], len(elements))
    if not 1 <= lo <= hi:
        raise ValueError(
            f"random_crystals: n_elements {n_elements} impossible with {len(elements)} element(s)"
        )
    rng = _as_rng(rng)
    max_attempts = 50 * n if max_attempts is None else max_attempts
    nels = np.arange(lo, hi + 1)
    nel_p = nels / nels.sum()  # k elements drawn with weight k: multinaries fail more often
    out: list[Atoms] = []
    attempts = 0
    while len(out) < n and attempts < max_attempts:
        attempts += 1
        group = int(rng.choice(groups)) if groups else _draw_group(rng)
        nel = int(rng.choice(nels, p=nel_p))
        species = sorted(rng.choice(elements, size=nel, replace=False).tolist())
        counts = _draw_counts(_multiplicities(group), nel, max_atoms, rng)
        factor = float(rng.uniform(*volume_factor))
        seed = int(rng.integers(2**31))
        if counts is None or sum(counts) < min_atoms:
            continue
        atoms = _pyxtal_crystal(group, species, counts, seed, timeout)
        if atoms is None or not min_atoms <= len(atoms) <= max_atoms:
            continue
        ratio = min_distance_ratio(_scale_to_vegard(atoms, 1.0))
        factor = max(factor, (min_ratio / ratio) ** 3)
        if factor > max_volume_factor:
            continue
        _scale_to_vegard(atoms, factor)
        atoms.info.update(source=f"pyxtal:sg{group}:{_formula(atoms)}#{len(out)}",
                          spacegroup=group)
        out.append(atoms)
    if len(out) < n:
        log.warning("random_crystals: made %d of %d crystals in %d attempts", len(out), n,
                    attempts)
    return out


# ---------------------------------------------------------------------------------------------
# decorated prototypes


@dataclass(frozen=True)
class Prototype:
    """A structure type: space group, conventional cell parameters (a = 1; lengths scaled to the
    Vegard volume later), one representative position per Wyckoff site and its label (A, B,
    C). ``equivalent``: groups of labels whose exchange gives the same structure type."""

    name: str
    spacegroup: int
    cellpar: tuple[float, float, float, float, float, float]
    sites: tuple[tuple[str, tuple[float, float, float]], ...]
    equivalent: tuple[tuple[str, ...], ...] = ()

    @property
    def labels(self) -> list[str]:
        return sorted({lab for lab, _ in self.sites})


_CUBIC = (1.0, 1.0, 1.0, 90.0, 90.0, 90.0)
_HCP = (1.0, 1.0, np.sqrt(8 / 3), 90.0, 90.0, 120.0)
_S2, _S3 = np.sqrt(2.0), np.sqrt(3.0)

PROTOTYPES: dict[str, Prototype] = {p.name: p for p in (
    # elements
    Prototype("fcc", 225, _CUBIC, (("A", (0, 0, 0)),)),
    Prototype("bcc", 229, _CUBIC, (("A", (0, 0, 0)),)),
    Prototype("hcp", 194, _HCP, (("A", (1 / 3, 2 / 3, 1 / 4)),)),
    Prototype("sc", 221, _CUBIC, (("A", (0, 0, 0)),)),
    # binaries
    Prototype("L1_2", 221, _CUBIC, (("B", (0, 0, 0)), ("A", (0, 0.5, 0.5)))),
    Prototype("L1_0", 123, (1.0, 1.0, _S2, 90, 90, 90), (("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))),
              (("A", "B"),)),
    Prototype("B2", 221, _CUBIC, (("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))), (("A", "B"),)),
    Prototype("B32", 227, _CUBIC, (("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))), (("A", "B"),)),
    Prototype("D0_3", 225, _CUBIC,
              (("B", (0, 0, 0)), ("A", (0.5, 0.5, 0.5)), ("A", (0.25, 0.25, 0.25)))),
    Prototype("L1_1", 166, (1.0, 1.0, 2 * _S3 * _S2, 90, 90, 120),
              (("A", (0, 0, 0)), ("B", (0, 0, 0.5))), (("A", "B"),)),
    Prototype("B1", 225, _CUBIC, (("A", (0, 0, 0)), ("B", (0.5, 0.5, 0.5))), (("A", "B"),)),
    Prototype("D0_19", 194, (1.0, 1.0, np.sqrt(2 / 3), 90, 90, 120),
              (("B", (1 / 3, 2 / 3, 1 / 4)), ("A", (5 / 6, 2 / 3, 1 / 4)))),
    Prototype("D0_22", 139, (1.0, 1.0, 2.0, 90, 90, 90),
              (("B", (0, 0, 0)), ("A", (0, 0, 0.5)), ("A", (0, 0.5, 0.25)))),
    Prototype("A15", 223, _CUBIC, (("B", (0, 0, 0)), ("A", (0.25, 0, 0.5)))),
    Prototype("C15", 227, _CUBIC, (("A", (0, 0, 0)), ("B", (5 / 8, 5 / 8, 5 / 8)))),
    Prototype("C32", 191, (1.0, 1.0, 1.0, 90, 90, 120),
              (("A", (0, 0, 0)), ("B", (1 / 3, 2 / 3, 0.5)))),
    # ternaries
    Prototype("L2_1", 225, _CUBIC,
              (("A", (0.25, 0.25, 0.25)), ("B", (0, 0, 0)), ("C", (0.5, 0.5, 0.5))),
              (("B", "C"),)),
    Prototype("XA", 216, _CUBIC,
              (("A", (0, 0, 0)), ("A", (0.25, 0.25, 0.25)), ("B", (0.5, 0.5, 0.5)),
               ("C", (0.75, 0.75, 0.75)))),
    Prototype("C1_b", 216, _CUBIC,
              (("A", (0.25, 0.25, 0.25)), ("B", (0, 0, 0)), ("C", (0.5, 0.5, 0.5))),
              (("B", "C"),)),
    Prototype("E2_1", 221, _CUBIC,
              (("B", (0, 0, 0)), ("C", (0.5, 0.5, 0.5)), ("A", (0, 0.5, 0.5)))),
    Prototype("L1_2-ABC2", 123, _CUBIC,
              (("A", (0, 0, 0)), ("B", (0.5, 0.5, 0)), ("C", (0, 0.5, 0.5)))),
)}
"""Known structure types by name (Strukturbericht-style where one exists)."""


def build_prototype(proto: Prototype | str, decoration: dict[str, str],
                    volume_factor: float = 1.0) -> Atoms:
    """The primitive cell of ``proto`` with labels replaced by elements
    (``{"A": "Cu", "B": "Au"}``), scaled to ``volume_factor`` x the Vegard volume."""
    from ase.spacegroup import crystal

    proto = PROTOTYPES[proto] if isinstance(proto, str) else proto
    missing = [lab for lab in proto.labels if lab not in decoration]
    if missing:
        raise ValueError(f"prototype {proto.name}: no element given for site label(s) "
                         f"{missing}; expected keys {proto.labels}")
    symbols = [decoration[lab] for lab, _ in proto.sites]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = crystal(
            symbols,
            basis=[pos for _, pos in proto.sites],
            spacegroup=proto.spacegroup,
            cellpar=list(proto.cellpar),
            primitive_cell=True,
        )
    atoms.pbc = True
    return _scale_to_vegard(atoms, volume_factor)


def _decorations(proto: Prototype, elements: list[str]) -> list[dict[str, str]]:
    """Distinct assignments of distinct elements to the prototype's labels."""
    labels = proto.labels
    seen, out = set(), []
    for combo in itertools.permutations(elements, len(labels)):
        deco = dict(zip(labels, combo))
        key = dict(deco)
        for group in proto.equivalent:  # canonical order inside interchangeable label groups
            for lab, el in zip(group, sorted(deco[g] for g in group)):
                key[lab] = el
        k = tuple(sorted(key.items()))
        if k not in seen:
            seen.add(k)
            out.append(deco)
    return out


def _supercell_variant(atoms: Atoms, elements: list[str], max_atoms: int,
                       rattle: float, rng: np.random.Generator) -> Atoms:
    """A supercell (largest of 3x3x3, 2x2x2, 2x2x1, 2x1x1 within ``max_atoms``) with two unlike
    atoms swapped (or one atom substituted by another element when all are alike), rattled by
    a Gaussian of ``rattle`` Å."""
    reps = next((r for r in ((3, 3, 3), (2, 2, 2), (2, 2, 1), (2, 1, 1))
                 if len(atoms) * int(np.prod(r)) <= max_atoms), (1, 1, 1))
    sc = atoms.repeat(reps)
    symbols = sc.get_chemical_symbols()
    i = int(rng.integers(len(sc)))
    unlike = [j for j, s in enumerate(symbols) if s != symbols[i]]
    if unlike:
        j = int(rng.choice(unlike))
        symbols[i], symbols[j] = symbols[j], symbols[i]
        how = "swap"
    else:
        others = [e for e in elements if e != symbols[i]]
        if others:
            symbols[i] = str(rng.choice(others))
        how = "subst"
    sc.set_chemical_symbols(symbols)
    if rattle > 0:
        sc.positions += rng.normal(0.0, rattle, sc.positions.shape)
    sc.info["variant"] = f"{'x'.join(map(str, reps))}-{how}"
    return sc


def decorated_prototypes(
    elements: Sequence[str],
    prototypes: Sequence[str] | None = None,
    *,
    max_elements: int = 3,
    volume_factor: float = 1.0,
    variants: int = 0,
    rattle: float = 0.0,
    max_atoms: int = 64,
    rng: np.random.Generator | int | None = None,
    min_ratio: float = 0.7,
) -> list[Atoms]:
    """Every prototype in ``prototypes`` (default: all of :data:`PROTOTYPES`) decorated with
    every distinct assignment of distinct ``elements`` to its site labels (prototypes with more
    labels than ``max_elements`` are left out), primitive cells at ``volume_factor`` x the
    Vegard volume. With ``variants`` > 0, each decorated prototype is followed by that many
    supercells with a random swap of two unlike atoms (or a substitution) and a Gaussian
    rattle of ``rattle`` Å (drawn from ``rng``; deterministic given its seed). Structures with
    a pair closer than ``min_ratio`` x the mean of the two elements' :func:`nn_distance` are
    skipped (logged).

    ``atoms.info``: ``source`` ("L1_2:AuCu3", variants "L1_2:AuCu3/v1"), ``prototype``.
    """
    elements = _check_elements(elements, "decorated_prototypes")
    names = list(PROTOTYPES) if prototypes is None else list(prototypes)
    unknown = [p for p in names if p not in PROTOTYPES]
    if unknown:
        raise ValueError(f"decorated_prototypes: unknown prototype(s) {unknown}; "
                         f"known: {', '.join(PROTOTYPES)}")
    rng = _as_rng(rng)
    out: list[Atoms] = []
    for name in names:
        proto = PROTOTYPES[name]
        if len(proto.labels) > max_elements:
            continue
        for deco in _decorations(proto, elements):
            base = build_prototype(proto, deco, volume_factor)
            label = f"{name}:{_formula(base)}"
            tag = "-".join(f"{k}{v}" for k, v in sorted(deco.items()))
            batch = [(base, f"{label}[{tag}]" if len(proto.labels) > 1 else label)]
            for k in range(variants):
                batch.append((_supercell_variant(base, elements, max_atoms, rattle, rng),
                              f"{label}[{tag}]/v{k + 1}"))
            for atoms, source in batch:
                ratio = min_distance_ratio(atoms)
                if ratio < min_ratio:
                    log.info("decorated_prototypes: %s skipped (closest pair %.2f of the "
                             "nearest-neighbour distance)", source, ratio)
                    continue
                atoms.info.update(source=source, prototype=name)
                out.append(atoms)
    return out
