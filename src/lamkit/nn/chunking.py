"""Evaluation of atom-local blocks in chunks of centre atoms, for systems too large to hold.

A block is *atom-local* when row ``i`` of its output depends only on row ``i`` of its
neighbour list and on whole-system inputs that it only reads (extended coordinates and types,
ghost-atom features). se_e2_a, DPA-1, se_e3_tebd, each DPA-2 repformer layer and the fitting
nets are atom-local. Such a block can run on slices of centre atoms, and forces then need only
one slice's per-pair (or per-triplet) intermediates at a time: each slice runs under
non-reentrant activation checkpointing (:func:`torch.utils.checkpoint.checkpoint`), which keeps
the slice's inputs and outputs for the backward pass and recomputes its intermediates there,
one slice after the other. The price is that recomputation (one more forward pass of the
chunked blocks per backward pass); the results are those of the whole system at once (the same
operations on the same rows; sums over slices may round differently, ~1e-16 relative).

Chunking is off unless asked for: ``EnergyModel.forward(..., chunk_atoms=n)`` runs the model
inside :func:`chunked_evaluation`, and :class:`lamkit.infer.DeepPot` and the ASE calculator do so
for frames above their ``chunk_atoms`` knob. Blocks call :func:`map_rows`, which runs them
whole (no overhead at all) when the batch fits in ``n`` atoms. Training is unaffected, since
the trainer never passes ``chunk_atoms``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

_CHUNK_ATOMS: ContextVar[int | None] = ContextVar("lamkit_chunk_atoms", default=None)
# resident memory when the chunked evaluation began (bytes; None off Linux)
_RSS_START: ContextVar[int | None] = ContextVar("lamkit_rss_start", default=None)
# growth of resident memory during one evaluation beyond which freed heap memory is trimmed
TRIM_SLACK_BYTES = 1 << 30


@contextmanager
def chunked_evaluation(atoms: int | None) -> Iterator[None]:
    """Within this block, atom-local blocks hold at most ``atoms`` centre atoms (all frames of
    the batch together) at a time; ``None`` or 0 turns chunking off."""
    if atoms is not None and atoms < 0:
        raise ValueError(f"chunk_atoms: expected a positive atom count or 0/None, got {atoms}")
    token = _CHUNK_ATOMS.set(int(atoms) if atoms else None)
    rss_token = _RSS_START.set(resident_bytes() if atoms else None)
    try:
        yield
    finally:
        _RSS_START.reset(rss_token)
        _CHUNK_ATOMS.reset(token)


def chunk_atoms() -> int | None:
    """The atom budget set by the innermost :func:`chunked_evaluation` (None: off)."""
    return _CHUNK_ATOMS.get()


def row_bounds(nf: int, nloc: int) -> list[tuple[int, int]] | None:
    """``[(start, stop), ...]`` slices of centre atoms of near-equal size for a batch of ``nf``
    frames of ``nloc`` atoms, or None when the whole batch fits in the budget (or chunking is
    off)."""
    atoms = _CHUNK_ATOMS.get()
    if not atoms or nf * nloc <= atoms:
        return None
    rows = max(1, atoms // max(nf, 1))
    nchunks = -(-nloc // rows)
    size = -(-nloc // nchunks)
    return [(s, min(s + size, nloc)) for s in range(0, nloc, size)]


@functools.cache
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def resident_bytes() -> int | None:
    """Resident memory of this process (bytes), or None where /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _page_size()
    except (OSError, ValueError, IndexError):
        return None


@functools.cache
def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def release_freed_memory(slack: int = TRIM_SLACK_BYTES) -> None:
    """Return memory freed into glibc's heap to the system (``malloc_trim``) once the resident
    memory has grown by more than ``slack`` since the chunked evaluation began; a no-op
    without glibc.

    Slices allocate many mid-sized tensors (below glibc's 32 MB mmap threshold, so from the
    heap) among longer-lived slice outputs; the heap fragments and, left alone, the process
    keeps GBs it no longer uses (3.4 GB of free heap after one DPA-2 small evaluation of
    12,288 atoms in slices of 512). Every trim makes later allocations fault their pages in
    again, which is slow, so :func:`map_rows` asks at most once per block and pass, and small
    systems, which never grow by ``slack``, are never trimmed.
    """
    libc = _glibc()
    start = _RSS_START.get()
    if libc is None or start is None:
        return
    now = resident_bytes()
    if now is not None and now > start + slack:
        libc.malloc_trim(0)


def _cat(parts: list[Any]) -> Any:
    """Concatenate chunk outputs along the atom axis (dim 1): tensors, tuples or dicts of them;
    None entries stay None."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=1)
    if isinstance(first, dict):
        return {k: _cat([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([p[i] for p in parts]) for i in range(len(first)))
    raise TypeError(f"map_rows: cannot concatenate chunk outputs of type {type(first).__name__}")


def map_rows(
    fn: Callable[..., Any],
    nf: int,
    nloc: int,
    *rows: torch.Tensor | None,
    bounds: list[tuple[int, int]] | None = None,
) -> Any:
    """``fn(start, stop, *row_slices)`` over slices of centre atoms, outputs joined on dim 1.

    ``fn`` computes the outputs (a tensor, or a tuple/dict of tensors, each ``[nf, stop-start,
    ...]``) of centre atoms ``start:stop``; ``rows`` are per-centre-atom inputs ``[nf, nloc,
    ...]`` (or None) handed to it already sliced. They are split with one ``torch.split``, so
    their gradient is assembled once rather than zero-filled per slice. Without chunking (see
    :func:`row_bounds`, or pass ``bounds``) this is just ``fn(0, nloc, *rows)``.
    """
    if bounds is None:
        bounds = row_bounds(nf, nloc)
    if bounds is None:
        return fn(0, nloc, *rows)
    sizes = [e - s for s, e in bounds]
    pieces = [[None] * len(bounds) if r is None else r.split(sizes, dim=1) for r in rows]
    if any(r is not None and r.device.type == "cpu" for r in rows):
        fn = _trimming(fn)
    parts = [
        checkpoint(
            fn,
            s,
            e,
            *(p[k] for p in pieces),
            use_reentrant=False,
            preserve_rng_state=False,  # no randomness in evaluation; saves a state copy per call
        )
        for k, (s, e) in enumerate(bounds)
    ]
    return _cat(parts)


def _trimming(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that first trims the heap when it starts the first slice: before the block's
    forward pass, and in each backward pass when that slice is recomputed (the last one, as
    autograd runs later slices first)."""

    def run(start, stop, *args):
        if start == 0:
            release_freed_memory()
        return fn(start, stop, *args)

    return run
