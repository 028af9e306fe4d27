"""OPTIMADE chemical formulas of lamkit records, and a cache of the stored formulas.

lamkit stores pymatgen's reduced formula (``formula``, e.g. "NaCl", "Li2O2" for the ratio 1:1,
"O2" for oxygen); OPTIMADE's ``chemical_formula_reduced`` orders the symbols alphabetically and
divides by the greatest common divisor ("ClNa", "LiO", "O"), and ``chemical_formula_anonymous``
replaces them by A, B, ... in order of decreasing count ("AB").  Both are functions of the
composition, and so of the stored formula: filters on them are evaluated once per distinct
stored formula (:class:`FormulaIndex`) and reach ``records`` through the indexed ``formula``
column.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache

from optimade.models.utils import ANONYMOUS_ELEMENTS
from sqlalchemy import func, select

from ..schema import records


def _reduced_counts(counts: dict[str, int]) -> list[tuple[str, int]]:
    g = 0
    for n in counts.values():
        g = math.gcd(g, int(n))
    return [(el, int(n) // g) for el, n in sorted(counts.items())]


def _text(pairs: Iterable[tuple[str, int]]) -> str:
    return "".join(f"{el}{n if n != 1 else ''}" for el, n in pairs)


def reduced_of_species(species: Iterable[str]) -> str:
    """OPTIMADE ``chemical_formula_reduced`` of a list of site symbols ("ClNa")."""
    return _text(_reduced_counts(Counter(species)))


def anonymous_of_species(species: Iterable[str]) -> str:
    """OPTIMADE ``chemical_formula_anonymous`` of a list of site symbols ("AB2")."""
    counts = sorted((n for _, n in _reduced_counts(Counter(species))), reverse=True)
    return _text(zip(ANONYMOUS_ELEMENTS, counts))


@lru_cache(maxsize=65536)
def formulas_of_stored(formula: str) -> tuple[str, str]:
    """(OPTIMADE reduced, OPTIMADE anonymous) formula of a stored pymatgen formula."""
    from pymatgen.core import Composition

    amounts = Composition(formula).get_el_amt_dict()
    counts = {el: int(round(n)) for el, n in amounts.items()}
    species = [el for el, n in counts.items() for _ in range(n)]
    return reduced_of_species(species), anonymous_of_species(species)


def stored_formula_of_reduced(text: str) -> str | None:
    """The stored (pymatgen) formula of an OPTIMADE ``chemical_formula_reduced``, or None when
    ``text`` is not one (not reduced, not alphabetical, an unknown symbol): such a value is on
    no record."""
    from ..records import ELEMENTS, reduced_formula

    parts = re.findall(r"([A-Z][a-z]?)([0-9]*)", text)
    if not parts or "".join(el + n for el, n in parts) != text:
        return None
    counts = {el: int(n) if n else 1 for el, n in parts}
    if len(counts) != len(parts) or any(el not in ELEMENTS for el in counts):
        return None
    if sum(counts.values()) > 100_000:  # more sites than any record holds
        return None
    species = [el for el, n in counts.items() for _ in range(n)]
    if reduced_of_species(species) != text:
        return None
    return reduced_formula(species)


class FormulaIndex:
    """The distinct stored formulas with their OPTIMADE forms, refreshed when records were
    added since the last look (records are never changed in place, so a formula once stored
    stays a valid key; one whose records were all deleted only matches nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen_id: int | None = None
        self._forms: dict[str, tuple[str, str]] = {}

    def _refresh(self, conn) -> None:
        last = conn.execute(select(func.max(records.c.id))).scalar()
        if last is None or last == self._seen_id:
            return
        stmt = select(records.c.formula).distinct()
        if self._seen_id is not None:
            stmt = stmt.where(records.c.id > self._seen_id)
        for (formula,) in conn.execute(stmt):
            if formula not in self._forms:
                self._forms[formula] = formulas_of_stored(formula)
        self._seen_id = last

    def matching(self, conn, which: int, predicate: Callable[[str], bool]) -> list[str]:
        """Stored formulas whose OPTIMADE form ``which`` (0 reduced, 1 anonymous) satisfies
        ``predicate``."""
        with self._lock:
            self._refresh(conn)
            return sorted(f for f, forms in self._forms.items() if predicate(forms[which]))
