"""Batches of torch tensors from in-memory systems: per-system loaders and the system sampler.

A batch always holds frames of a single system (so one atom count) and is a plain dict:

- ``COORD`` [bs, natoms, 3] float64 Å; ``ATYPE`` [bs, natoms] int64; ``BOX`` [bs, 9] float64 Å
  (absent for non-periodic systems);
- every required label: global [bs, width], atomic [bs, natoms, width], float64;
- ``find_<key>`` python float (1.0 when the data has the label);
- ``NATOMS`` [bs, 2 + ntypes] int64 (natoms, natoms, real atoms per type: virtual atoms of a
  mixed-type system are not counted, so it doubles as the reference's ``real_natoms_vec``);
- ``SID`` int, the system index; ``FID`` list[int], frame indices within the system.

Tensors are on the CPU; moving them to a device happens elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .. import keys
from ..errors import DataError
from .system import System


def frames_to_batch(system: System, frames: Sequence[int] | np.ndarray, sid: int = 0) -> dict:
    """The batch dict of ``frames`` (indices into ``system``) as CPU tensors."""
    idx = np.asarray(frames, dtype=np.int64)
    batch: dict = {
        keys.COORD: torch.from_numpy(system.coords[idx]),
        keys.ATYPE: torch.from_numpy(system.atype[idx]),
    }
    if system.box is not None:
        batch[keys.BOX] = torch.from_numpy(system.box[idx])
    for key, arr in system.labels.items():
        batch[key] = torch.from_numpy(arr[idx])
    for key, found in system.find.items():
        batch[keys.find_key(key)] = float(found)
    batch[keys.NATOMS] = torch.from_numpy(system.natoms_vec_of(idx))
    batch[keys.SID] = int(sid)
    batch[keys.FID] = idx.tolist()
    return batch


def iter_frames(system: System, batch_size: int, sid: int = 0) -> Iterator[dict]:
    """Sequential batches over all frames in file order, no shuffling (for ``test``)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, system.nframes, batch_size):
        stop = min(start + batch_size, system.nframes)
        yield frames_to_batch(system, np.arange(start, stop), sid)


class SystemLoader:
    """Endless batches of one system: each pass visits every frame once in a new random order.

    The last batch of a pass may be smaller (drop_last=False); the next call starts a new pass
    with a fresh permutation drawn from the loader's own seeded generator.
    """

    def __init__(
        self,
        system: System,
        batch_size: int,
        seed: int | np.random.SeedSequence | None = None,
        sid: int = 0,
        shuffle: bool = True,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.system = system
        self.batch_size = int(batch_size)
        self.sid = sid
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self._perm = np.zeros(0, dtype=np.int64)
        self._pos = 0

    def __len__(self) -> int:
        """Batches per pass: ceil(nframes / batch_size)."""
        return math.ceil(self.system.nframes / self.batch_size)

    def next_indices(self) -> np.ndarray:
        """Frame indices of the next batch, ``[<= batch_size]`` int64."""
        if self._pos >= len(self._perm):
            nf = self.system.nframes
            self._perm = self.rng.permutation(nf) if self.shuffle else np.arange(nf)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += len(idx)
        return idx

    def next_batch(self) -> dict:
        return frames_to_batch(self.system, self.next_indices(), self.sid)

    def __iter__(self) -> SystemLoader:
        return self

    def __next__(self) -> dict:
        return self.next_batch()

    def state_dict(self) -> dict:
        """Generator state, current permutation and position (plain python types)."""
        return {
            "rng": self.rng.bit_generator.state,
            "perm": [int(i) for i in self._perm],
            "pos": self._pos,
            "nframes": self.system.nframes,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        for name, mine in (("nframes", self.system.nframes), ("batch_size", self.batch_size)):
            if state[name] != mine:
                raise DataError(
                    f"{self.system.path}: the saved loader state has {name} = {state[name]}, "
                    f"but the loaded system has {mine}; the data changed since the checkpoint"
                )
        self.rng.bit_generator.state = state["rng"]
        self._perm = np.asarray(state["perm"], dtype=np.int64)
        self._pos = int(state["pos"])


class MultiSystemSampler:
    """Draws a system with probability ``probs[i]`` at each step and returns its next batch.

    All randomness comes from ``seed``: one generator picks systems, and each system's loader
    has its own generator spawned from the same seed, so a seed fixes the whole sample stream.
    :meth:`state_dict` / :meth:`load_state_dict` let a restarted run continue that stream.
    """

    def __init__(
        self,
        systems: Sequence[System],
        batch_sizes: Sequence[int],
        probs: Sequence[float] | np.ndarray,
        seed: int | None = None,
        rank: int = 0,
        world: int = 1,
    ):
        nsys = len(systems)
        probs = np.asarray(probs, dtype=np.float64)
        if nsys == 0:
            raise ValueError("MultiSystemSampler needs at least one system")
        if len(batch_sizes) != nsys or probs.shape != (nsys,):
            raise ValueError(
                f"{nsys} systems but {len(batch_sizes)} batch sizes and {probs.size} probabilities"
            )
        if (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"probabilities must be >= 0 and sum to 1, got {probs.tolist()}")
        self.systems = list(systems)
        self.batch_sizes = [int(b) for b in batch_sizes]
        self.probs = probs / probs.sum()
        streams = np.random.SeedSequence(seed).spawn(nsys + 1)
        self.rng = np.random.default_rng(streams[0])
        # data parallel: every rank draws the same global batch of world x batch_size frames
        # and keeps its own slice (lamkit.train.distributed)
        self.rank, self.world = int(rank), int(world)
        self.loaders = [
            SystemLoader(s, b * self.world, seed=streams[i + 1], sid=i)
            for i, (s, b) in enumerate(zip(self.systems, self.batch_sizes))
        ]

    @property
    def nbatches(self) -> list[int]:
        """Batches per pass of each system."""
        return [len(loader) for loader in self.loaders]

    def next(self) -> dict:
        """The next batch of a system drawn with probabilities ``probs``."""
        sid = int(self.rng.choice(len(self.loaders), p=self.probs))
        loader = self.loaders[sid]
        if self.world == 1:
            return loader.next_batch()
        idx = loader.next_indices()
        mine = np.array_split(idx, self.world)[self.rank]
        if len(mine) == 0:  # a short last batch of a pass: fewer frames than ranks
            mine = idx[-1:]
        return frames_to_batch(loader.system, mine, sid)

    def __iter__(self) -> MultiSystemSampler:
        return self

    def __next__(self) -> dict:
        return self.next()

    def state_dict(self) -> dict:
        """Everything needed to continue the same stream (plain python types, checkpointable)."""
        return {
            "rng": self.rng.bit_generator.state,
            "loaders": [loader.state_dict() for loader in self.loaders],
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["loaders"]) != len(self.loaders):
            raise DataError(
                f"the saved sampler state has {len(state['loaders'])} systems, "
                f"but {len(self.loaders)} are loaded"
            )
        self.rng.bit_generator.state = state["rng"]
        for loader, sub in zip(self.loaders, state["loaders"]):
            loader.load_state_dict(sub)

    def describe(self, title: str = "training") -> str:
        return describe_systems(self.systems, self.batch_sizes, self.probs, title)


def describe_systems(
    systems: Sequence[System],
    batch_sizes: Sequence[int],
    probs: Sequence[float] | np.ndarray,
    title: str = "training",
) -> str:
    """A summary table of the systems: path, natoms, nframes, batch size, batches, prob, pbc."""
    header = ("system", "natoms", "nframes", "bch_sz", "n_bch", "prob", "pbc")
    rows = [
        (
            s.path,
            str(s.natoms),
            str(s.nframes),
            str(bs),
            str(math.ceil(s.nframes / bs)),
            f"{p:.3e}",
            "T" if s.pbc else "F",
        )
        for s, bs, p in zip(systems, batch_sizes, probs)
    ]
    width = max(len(header[0]), *(len(r[0]) for r in rows)) if rows else len(header[0])
    fmt = f"{{:<{width}}}  {{:>6}}  {{:>7}}  {{:>6}}  {{:>6}}  {{:>9}}  {{:>3}}"
    lines = [f"--- Summary of {title} data: {len(rows)} system(s) ---", fmt.format(*header)]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
