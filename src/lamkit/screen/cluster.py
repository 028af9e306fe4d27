"""Relaxation on a Dask.distributed cluster: a local one (``workers=N``) or a running scheduler
(``cluster="tcp://host:8786"``).

The valid structures are cut into shards of ``chunk_size`` (the same chunks an in-process run
relaxes, so the batches and hence the results are the same).  Each shard is one task:
:func:`relax_shard` relaxes it in batches on a worker with a :class:`lamkit.relax.Relaxer`
that the worker builds once and keeps (a model file is loaded once per worker; a calculator or
model object is broadcast once with ``scatter``).  At most two shards per worker are in flight,
so the scheduler never holds the whole submission.  The driver judges every returned structure
(hull, novelty) and commits it to the state store, and writes the database on ``--insert``.

A shard whose task raises or whose worker dies is retried ``retries`` times by Dask; a shard
that keeps failing becomes failed rows (with the error) that a re-run tries again, never a
crashed screening.  Local workers are processes with one thread each (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .config import ScreenConfig, ScreenError
from .potential import Resolved, relaxer_for
from .relax_jobs import run_chunk

log = logging.getLogger("lamkit")

#: Shards in flight per worker.
IN_FLIGHT = 2
#: Seconds to wait for a scheduler given by address.
CONNECT_TIMEOUT = 30
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def relax_shard(spec: Any, shard: list[tuple[int, Any]], relax_kwargs: dict) -> list[tuple]:
    """Worker task: relax (index, atoms) pairs; returns (index, RelaxResult) or (index, error
    text) for each, in any order."""
    import torch

    torch.set_num_threads(1)
    relaxer = relaxer_for(spec, relax_kwargs)
    out: list[tuple] = []
    run_chunk(
        relaxer,
        shard,
        lambda i, res: out.append((i, res)),
        lambda i, reason: out.append((i, reason)),
    )
    return out


def _client(workers: int | None, address: str | None):
    """A Dask client (and the LocalCluster it owns, or None)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ScreenError(
            f"workers/cluster need dask.distributed (pip install 'dask[distributed]'): {exc}"
        ) from None
    if address is not None:
        try:
            return Client(address, timeout=f"{CONNECT_TIMEOUT}s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise ScreenError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        env=_ONE_THREAD,
    )
    try:
        return Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise


def _spec_for(client, pot: Resolved):
    """What tasks receive as the potential: a model path as it is, an object scattered once."""
    if isinstance(pot.spec, str):
        return pot.spec
    try:
        return client.scatter(pot.spec, broadcast=True, hash=False)
    except Exception as exc:  # noqa: BLE001 - unpicklable potentials
        raise ScreenError(
            f"cannot send the potential ({type(pot.spec).__name__}) to the workers: {exc}; "
            "give a model file or a picklable ASE calculator"
        ) from None


def relax_distributed(
    jobs: list[tuple[int, Any]],
    pot: Resolved,
    config: ScreenConfig,
    on_result: Callable[[int, Any], None],
    on_error: Callable[..., None],
    workers: int | None = None,
    address: str | None = None,
) -> None:
    """Relax (index, atoms) jobs on Dask; see the module docstring.  ``on_result(index,
    RelaxResult)``, ``on_error(index, reason, transient=...)`` are called in the driver."""
    from dask.distributed import as_completed

    shards = [jobs[k : k + config.chunk_size] for k in range(0, len(jobs), config.chunk_size)]
    client, cluster = _client(workers, address)
    try:
        spec = _spec_for(client, pot)
        kwargs = config.relax_kwargs()  # device None: each worker picks CUDA if it has one
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or (workers or 1))
        pending = list(reversed(shards))
        running: dict[Any, list] = {}
        ac = as_completed()

        def submit() -> None:
            shard = pending.pop()
            fut = client.submit(
                relax_shard, spec, shard, kwargs, retries=config.retries, pure=False
            )
            running[fut] = shard
            ac.add(fut)

        while pending and len(running) < IN_FLIGHT * n_workers:
            submit()
        for fut in ac:
            shard = running.pop(fut)
            _collect(fut, shard, config.retries, on_result, on_error)
            fut.release()
            if pending:
                submit()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _collect(fut, shard, retries: int, on_result, on_error) -> None:
    """Hand a finished shard's results (or its failure) to the callbacks."""
    try:
        results = fut.result()
    except Exception as exc:  # noqa: BLE001 - a shard that kept failing: failed rows
        reason = f"shard failed after {retries} retries: {type(exc).__name__}: {exc}"
        log.warning("screen: %s", reason)
        for i, _ in shard:
            on_error(i, reason, transient=True)
        return
    for i, res in results:
        if isinstance(res, str):
            on_error(i, res)
        else:
            on_result(i, res)
