"""Rows made in worker processes: validation, derived fields and the spglib space group of
each item (:func:`records.make_row`) are CPU work per structure, independent of the database,
so an import spreads them over ``workers`` processes while the main process reads the input
and writes the batches. The order of the items is kept; each item comes back as its row or the
reason it was rejected."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

from .errors import RecordError

#: items per task sent to a worker (large enough that pickling is a small part of the work)
CHUNK = 256


def make_one(make: Callable, item) -> tuple[dict | None, str | None]:
    """(row, None), or (None, reason) for an item that cannot be stored."""
    try:
        return make(item), None
    except RecordError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - never let one bad record stop an import
        return None, f"unexpected {type(exc).__name__}: {exc}"


def _make_chunk(make: Callable, items: list) -> list[tuple[dict | None, str | None]]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return [make_one(make, it) for it in items]


def make_rows(make: Callable, items: Iterable, workers: int = 1) -> Iterator[tuple]:
    """Yield ``(item, row, reason)`` for every item, in order. ``make`` must be a picklable
    module-level callable (a ``functools.partial`` of one is fine) when ``workers`` > 1."""
    if workers <= 1:
        for it in items:
            yield (it, *make_one(make, it))
        return
    ctx = multiprocessing.get_context("forkserver")
    items = iter(items)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque = deque()
        while True:
            while len(pending) < 2 * workers:
                chunk = list(itertools.islice(items, CHUNK))
                if not chunk:
                    break
                pending.append((chunk, pool.submit(_make_chunk, make, chunk)))
            if not pending:
                return
            chunk, future = pending.popleft()
            for it, (row, reason) in zip(chunk, future.result()):
                yield it, row, reason
