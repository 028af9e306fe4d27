"""Relaxing (index, atoms) jobs in chunks with fallbacks: in this process (:func:`relax_local`,
used by :mod:`.runner`) or in a Dask worker's shard (:mod:`.cluster`, which runs
:func:`run_chunk` too)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .config import ScreenConfig
from .potential import Resolved, relaxer_for

log = logging.getLogger("lamkit")


def relax_local(
    jobs: list[tuple[int, Any]],
    pot: Resolved,
    config: ScreenConfig,
    on_result: Callable[[int, Any], None],
    on_error: Callable[[int, str], None],
) -> None:
    """Relax (index, atoms) jobs in this process, ``chunk_size`` at a time; each finished
    structure goes to ``on_result(index, RelaxResult)``.  A chunk whose relaxation raises is
    retried one structure at a time; a structure that still raises goes to ``on_error``."""
    relaxer = relaxer_for(pot.spec, config.relax_kwargs(), pot.local)
    for start in range(0, len(jobs), config.chunk_size):
        chunk = jobs[start : start + config.chunk_size]
        run_chunk(relaxer, chunk, on_result, on_error)


class _CallbackError(Exception):
    """An error of the caller's callback (not of the relaxation): it is raised, not retried."""


def run_chunk(relaxer, chunk, on_result, on_error) -> None:
    """Relax one chunk of (index, atoms) jobs with fallbacks (see :func:`relax_local`)."""
    done: set[int] = set()

    def cb(k: int, res) -> None:
        done.add(k)
        try:
            on_result(chunk[k][0], res)
        except Exception as exc:
            raise _CallbackError(exc) from exc

    try:
        relaxer.run([a for _, a in chunk], on_result=cb)
        return
    except _CallbackError as exc:
        raise exc.__cause__ from None  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - retried one by one below
        log.warning("relaxation of a chunk of %d failed (%s); retrying one by one", len(chunk), exc)
    for k, (i, atoms) in enumerate(chunk):
        if k in done:
            continue
        try:
            (res,) = relaxer.run([atoms])
        except Exception as exc:  # noqa: BLE001 - one structure's failure is its row
            on_error(i, f"relaxation error: {type(exc).__name__}: {exc}")
            continue
        on_result(i, res)
