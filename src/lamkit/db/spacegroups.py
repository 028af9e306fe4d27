"""Space-group numbers of Hermann-Mauguin symbols as people type them.

Records store spglib's number and short symbol ("Fm-3m", "P6_3/mmc").  A query may name a group
by any of its symbols in spglib's tables (short, full, or of another setting: "F 4/m -3 2/m",
"Pnam"), with or without spaces, without the subscript underscore ("P63/mmc") and without the
bar of old notation ("Fm3m").  A symbol that is exactly one group's wins over such a reading:
"P3" is No. 143, not P-3 (No. 147).
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

from .records import load_spglib


def _squeeze(symbol: str) -> str:
    return "".join(symbol.split())


def _loose(symbol: str) -> str:
    return _squeeze(symbol).replace("_", "").replace("-", "")


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, set[int]], dict[str, set[int]], list[str]]:
    spglib = load_spglib()
    exact: dict[str, set[int]] = defaultdict(set)
    loose: dict[str, set[int]] = defaultdict(set)
    short: list[str] = []
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        if t.international_short not in short:
            short.append(t.international_short)
        for symbol in (t.international_short, t.international_full, t.international):
            exact[_squeeze(symbol)].add(int(t.number))
            loose[_loose(symbol)].add(int(t.number))
    return dict(exact), dict(loose), short


def numbers_of(symbol: str) -> list[int]:
    """Space-group numbers a symbol names (one, unless it is ambiguous); [] if none."""
    exact, loose, _ = _tables()
    found = exact.get(_squeeze(symbol)) or loose.get(_loose(symbol)) or set()
    return sorted(found)


def short_symbols() -> list[str]:
    """spglib's short symbols of the 230 groups, in order of number."""
    return list(_tables()[2])
