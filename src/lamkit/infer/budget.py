"""How many atoms one evaluation may hold (:class:`AtomBudget`), shared by the inference
interfaces (:mod:`.deep_eval`), model ensembles and relaxations.

Frames are evaluated in chunks whose total atom count stays under a budget, so neighbour data
and autograd graphs are only ever built for one chunk at a time. Frames larger than
``chunk_atoms`` (default 1024, or ``$LAMKIT_CHUNK_ATOMS``) are themselves evaluated in slices
of centre atoms with activation checkpointing (:mod:`lamkit.nn.chunking`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

DEFAULT_BATCH_ATOMS = 1024
MAX_BATCH_ATOMS = 1 << 18
# Frames above this many atoms are evaluated in slices of at most this many centre atoms: the
# same bound as for batches of frames (DEFAULT_BATCH_ATOMS). Smaller frames pay nothing;
# larger ones pay a recomputation of the sliced blocks (about a quarter more time for DPA-2)
# and hold about 1-2 GB of slice tensors instead of ~1.4 MB per atom (DPA-2 small, float64).
DEFAULT_CHUNK_ATOMS = 1024


def default_chunk_atoms() -> int:
    """``$LAMKIT_CHUNK_ATOMS`` if set (0 turns chunking off), else ``DEFAULT_CHUNK_ATOMS``."""
    env = os.environ.get("LAMKIT_CHUNK_ATOMS", "").strip()
    if not env:
        return DEFAULT_CHUNK_ATOMS
    try:
        value = int(env)
    except ValueError:
        raise ValueError(f"LAMKIT_CHUNK_ATOMS: expected an atom count, got {env!r}") from None
    if value < 0:
        raise ValueError(f"LAMKIT_CHUNK_ATOMS: expected 0 (off) or a positive count, got {value}")
    return value


class AtomBudget:
    """How many atoms one evaluation may hold: frames x atoms per frame (``atoms``), and for a
    frame of more than ``chunk_atoms`` atoms, centre atoms per slice inside it (see
    :mod:`lamkit.nn.chunking`; ``chunk_atoms`` None or 0: never slice frames).

    ``adaptive`` budgets halve after a CUDA out-of-memory error and retry the chunk (a single
    frame that does not fit is then sliced, more finely at each error); on a GPU they also
    double after every successful chunk, up to the largest size known to work.
    """

    def __init__(
        self,
        atoms: int = DEFAULT_BATCH_ATOMS,
        adaptive: bool = True,
        chunk_atoms: int | None = DEFAULT_CHUNK_ATOMS,
    ):
        if atoms < 1:
            raise ValueError(f"auto_batch_size: expected a positive atom count, got {atoms}")
        if chunk_atoms is not None and chunk_atoms < 0:
            raise ValueError(
                f"chunk_atoms: expected 0/None (off) or an atom count, got {chunk_atoms}"
            )
        self.atoms = int(atoms)
        self.adaptive = adaptive
        self.chunk_atoms = int(chunk_atoms) if chunk_atoms else None
        self._too_big = MAX_BATCH_ATOMS + 1  # smallest budget that ran out of memory
        self._chunk_too_big = MAX_BATCH_ATOMS + 1
        self.host_checked = False  # fit_host_memory ran (CPU evaluation)

    @classmethod
    def from_arg(cls, arg, chunk_atoms: int | None = None) -> AtomBudget:
        """``True``: adaptive (start from ``$DP_INFER_BATCH_SIZE`` or 1024 atoms);
        an int: that fixed budget; ``False``/``None``: the default budget, fixed.
        ``chunk_atoms`` None means :func:`default_chunk_atoms`."""
        if isinstance(arg, AtomBudget):
            return arg
        chunk = default_chunk_atoms() if chunk_atoms is None else chunk_atoms
        if arg is True:
            env = int(os.environ.get("DP_INFER_BATCH_SIZE", 0) or 0)
            return cls(env or DEFAULT_BATCH_ATOMS, adaptive=not env, chunk_atoms=chunk)
        if arg is False or arg is None:
            return cls(DEFAULT_BATCH_ATOMS, adaptive=False, chunk_atoms=chunk)
        if isinstance(arg, (int, np.integer)):
            fixed = cls(int(arg), adaptive=False, chunk_atoms=chunk)
            fixed.host_checked = True  # the caller's choice stands
            return fixed
        raise ValueError(f"auto_batch_size: expected True, False or an int, got {arg!r}")

    def frames(self, natoms: int) -> int:
        """Frames per chunk (at least one, even if one frame exceeds the budget)."""
        return max(1, self.atoms // max(natoms, 1))

    def chunk(self, natoms: int) -> int | None:
        """Atoms per slice for frames of ``natoms`` atoms (``AtomicModel.forward``'s
        ``chunk_atoms``), or None: whole frames."""
        if self.chunk_atoms is None or natoms <= self.chunk_atoms:
            return None
        return self.chunk_atoms

    def fit_host_memory(self, bytes_per_atom: float, available: int | None) -> None:
        """Cap the atoms per evaluation so that one takes at most half the memory still
        available (``bytes_per_atom``: measured on a first one-frame evaluation). On a CPU the
        kernel kills a process that runs out of memory rather than raising an error, so the
        halving retry cannot help there; this keeps e.g. ``lam test`` of a DPA-3 model (about
        25 MB per atom in float64) from being killed."""
        self.host_checked = True
        if not available or bytes_per_atom <= 0:
            return
        cap = max(1, int(0.5 * available / bytes_per_atom))
        if cap < self.atoms:
            self.atoms = cap

    @property
    def needs_host_check(self) -> bool:
        return not self.host_checked

    def succeeded(self, device: torch.device) -> None:
        if self.adaptive and device.type == "cuda":
            self.atoms = min(self.atoms * 2, self._too_big - 1, MAX_BATCH_ATOMS)
            if self.chunk_atoms is not None:
                self.chunk_atoms = min(
                    self.chunk_atoms * 2, self._chunk_too_big - 1, MAX_BATCH_ATOMS
                )

    def out_of_memory(self, used_atoms: int, natoms: int | None = None) -> bool:
        """Shrink after an OOM of a call on ``used_atoms`` atoms (frames of ``natoms``): fewer
        frames, or for one frame finer slices. False when nothing is left to shrink (re-raise)."""
        if not self.adaptive or used_atoms <= 1:
            return False
        if natoms is None or used_atoms > natoms:  # several frames: fewer of them
            self._too_big = min(self._too_big, used_atoms)
            self.atoms = max(1, used_atoms // 2)
            return True
        sliced = min(natoms, self.chunk_atoms or natoms)  # one frame: slice it (finer)
        if sliced <= 1:
            return False
        self._too_big = min(self._too_big, natoms + 1)
        self.atoms = min(self.atoms, natoms)
        self._chunk_too_big = min(self._chunk_too_big, sliced)
        self.chunk_atoms = max(1, sliced // 2)
        return True


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA or host)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, (MemoryError, oom)) or "out of memory" in str(exc).lower()
