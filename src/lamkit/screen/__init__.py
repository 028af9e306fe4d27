"""Crystal screening: parse, check, relax, judge stability, uniqueness and novelty (S.U.N.).

>>> from lamkit.screen import screen, ScreenConfig
>>> res = screen(["candidates/"], "model.pth", db="crystals.db", out_dir="screen-out")
>>> res.table            # one row per input structure
>>> res.summary          # counts and rates

See docs/screening.md.  Modules: ``inputs`` (files, folders, archives, database queries, Atoms),
``validity`` (rules with reasons), ``config`` (:class:`ScreenConfig`), ``store`` (resumable
state), ``runner`` (:func:`screen`), ``cluster`` (Dask.distributed), ``report`` (tables, files),
``stability`` (hull oracle), ``novelty`` (matching), ``metrics`` (classifier metrics),
``generate`` (candidate structures), ``cli`` (``lam screen``).
"""

import importlib

# Names are imported on first use: ``lam`` builds its parser without paying for ASE, pandas,
# pymatgen or Dask.
_EXPORTS = {
    "screen": "runner",
    "ScreenResult": "runner",
    "ScreenConfig": "config",
    "ScreenError": "config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
