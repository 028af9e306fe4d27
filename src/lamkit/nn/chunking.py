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

Chunking is off unless asked for: ``EnergyModel.forward(..., chunk_atoms=n)`` starts a
:class:`Chunking` (the budget and the resident memory when the evaluation began) and hands it
explicitly down the forward passes (``chunking=``) of the descriptor, its blocks and the
fitting; :class:`lamkit.infer.DeepPot` and the ASE calculator do so for frames above their
``chunk_atoms`` knob. Blocks call :func:`map_rows` with it, which runs them whole (no overhead
at all) when the batch fits in ``n`` atoms or ``chunking`` is None. Training is unaffected,
since the trainer never passes ``chunk_atoms``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from .. import runtime


@dataclass(frozen=True)
class Chunking:
    """One chunked evaluation: atom-local blocks hold at most ``atoms`` centre atoms (all
    frames of the batch together) at a time; ``rss_start`` is the process's resident memory
    (bytes; None off Linux) when the evaluation began (see
    :func:`lamkit.runtime.release_freed_memory`)."""

    atoms: int
    rss_start: int | None = None

    @classmethod
    def start(cls, atoms: int | None) -> Chunking | None:
        """A chunked evaluation of ``atoms`` centre atoms per slice beginning now; None (no
        chunking) for ``atoms`` None or 0."""
        if atoms is not None and atoms < 0:
            raise ValueError(f"chunk_atoms: expected a positive atom count or 0/None, got {atoms}")
        if not atoms:
            return None
        return cls(int(atoms), runtime.resident_bytes())


def row_bounds(nf: int, nloc: int, chunking: Chunking | None) -> list[tuple[int, int]] | None:
    """``[(start, stop), ...]`` slices of centre atoms of near-equal size for a batch of ``nf``
    frames of ``nloc`` atoms, or None when the whole batch fits in the budget (or ``chunking``
    is None)."""
    if chunking is None or nf * nloc <= chunking.atoms:
        return None
    rows = max(1, chunking.atoms // max(nf, 1))
    nchunks = -(-nloc // rows)
    size = -(-nloc // nchunks)
    return [(s, min(s + size, nloc)) for s in range(0, nloc, size)]


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
    chunking: Chunking | None,
    bounds: list[tuple[int, int]] | None = None,
) -> Any:
    """``fn(start, stop, *row_slices)`` over slices of centre atoms, outputs joined on dim 1.

    ``fn`` computes the outputs (a tensor, or a tuple/dict of tensors, each ``[nf, stop-start,
    ...]``) of centre atoms ``start:stop``; ``rows`` are per-centre-atom inputs ``[nf, nloc,
    ...]`` (or None) handed to it already sliced. They are split with one ``torch.split``, so
    their gradient is assembled once rather than zero-filled per slice. ``bounds`` defaults to
    :func:`row_bounds` of ``chunking``; without slices this is just ``fn(0, nloc, *rows)``.
    """
    if bounds is None:
        bounds = row_bounds(nf, nloc, chunking)
    if bounds is None:
        return fn(0, nloc, *rows)
    sizes = [e - s for s, e in bounds]
    pieces = [[None] * len(bounds) if r is None else r.split(sizes, dim=1) for r in rows]
    if any(r is not None and r.device.type == "cpu" for r in rows):
        fn = _trimming(fn, None if chunking is None else chunking.rss_start)
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


def _trimming(fn: Callable[..., Any], rss_start: int | None) -> Callable[..., Any]:
    """``fn`` that first trims the heap when it starts the first slice: before the block's
    forward pass, and in each backward pass when that slice is recomputed (the last one, as
    autograd runs later slices first)."""

    def run(start, stop, *args):
        if start == 0:
            runtime.release_freed_memory(rss_start)
        return fn(start, stop, *args)

    return run
