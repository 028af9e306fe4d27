"""Parse structure files in child processes, each file under a timeout and a memory limit.

A reader stuck in a hostile CIF, or one that allocates without bound, only costs its own
process: the parent kills it after ``timeout`` seconds (or notices its death), records the file
as rejected with the reason and starts a fresh parser for the remaining files.  Parsers are
separate interpreters (``python -m lamkit.screen.parsing``), so nothing of the caller (threads,
an unguarded ``__main__`` script) is copied into them; the timeout of a file starts once its
parser has imported its readers.

Structures travel back as plain arrays (:func:`payload_of`): atomic numbers [n], cell [3, 3] Å,
positions [n, 3] Å, pbc [3].
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
import warnings
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

#: Address-space limit of a parser process (bytes): a reader that tries to allocate more fails
#: with MemoryError inside its own process.
PARSE_MEMORY_BYTES = 6 << 30
#: Seconds a parser process may take to start (import ASE and pymatgen).
STARTUP_TIMEOUT = 300.0

Frames = list[tuple[int, "dict | None", "str | None"]]  # (frame index, payload, error)


def reason(exc: BaseException) -> str:
    """``Type: message`` of an exception, for a rejection."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def payload_of(obj: Any) -> dict:
    """Plain arrays of a structure (ase.Atoms, pymatgen Structure, Record, structure dict):
    ``numbers`` [n] int64, ``cell`` [3, 3] Å, ``positions`` [n, 3] Å, ``pbc`` [3] bool.
    Raises ValueError (or RecordError) saying why it cannot be read."""
    from ase.data import atomic_numbers

    from ..db.records import ELEMENTS, arrays_from, is_atoms

    if is_atoms(obj):
        return {
            "numbers": np.asarray(obj.numbers, dtype=np.int64).copy(),
            "cell": np.asarray(obj.cell.array, dtype=np.float64).copy(),
            "positions": np.asarray(obj.positions, dtype=np.float64).copy(),
            "pbc": np.asarray(obj.pbc, dtype=bool).copy(),
        }
    s = arrays_from(obj)
    unknown = sorted({str(el) for el in s.species} - set(ELEMENTS))
    if unknown:
        raise ValueError(f"unknown element symbol(s) {unknown}; expected symbols H..Og")
    lattice = np.asarray(s.lattice, dtype=np.float64)
    frac = np.asarray(s.frac_coords, dtype=np.float64)
    n = len(s.species)
    if lattice.shape != (3, 3) or frac.shape != (n, 3):
        raise ValueError(
            f"expected a [3, 3] lattice and [{n}, 3] coordinates; found {lattice.shape} and "
            f"{frac.shape}"
        )
    return {
        "numbers": np.array([atomic_numbers[el] for el in s.species], dtype=np.int64),
        "cell": lattice,
        "positions": frac @ lattice,
        "pbc": np.ones(3, dtype=bool),
    }


def parse_file(path: str, kind: str, max_bytes: int) -> Frames:
    """Frames of one file (``kind`` "file") or deepmd/npy folder (``kind`` "deepmd"); never
    raises: a whole-file failure is frame -1 with its reason."""
    from ..db.readers import iter_deepmd, iter_file

    p = Path(path)
    try:
        if kind == "deepmd":
            items = iter_deepmd(p)
        else:
            size = p.stat().st_size
            if size > max_bytes:
                return [(-1, None, f"file of {size} bytes exceeds the {max_bytes} byte limit")]
            if size == 0:
                return [(-1, None, "empty file")]
            items = iter_file(p)
        out: Frames = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # readers warn about every quirk they fix
            for item in items:
                if item.error is not None:
                    out.append((item.index, None, item.error))
                    continue
                try:
                    out.append((item.index, payload_of(item.obj), None))
                except Exception as exc:  # noqa: BLE001 - one bad frame is one rejection
                    out.append((item.index, None, reason(exc)))
        return out
    except Exception as exc:  # noqa: BLE001 - a reader failing on the whole file
        return [(-1, None, f"cannot read file: {reason(exc)}")]


def _serve(memory: int) -> None:
    """Parser process (``python -m lamkit.screen.parsing``): answer (job, path, kind, max_bytes)
    messages read from stdin with (job, frames) on stdout, length-prefixed pickles."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    inp = sys.stdin.buffer
    import ase.io  # noqa: F401 - the readers, imported before the first file's clock starts
    import pymatgen.io.cif  # noqa: F401

    from lamkit.db import readers  # noqa: F401

    _send(out, "ready")
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not on every platform
        pass
    while True:
        msg = _recv(inp)
        if msg is None:
            return
        job, path, kind, max_bytes = msg
        try:
            frames = parse_file(path, kind, max_bytes)
        except MemoryError:
            frames = [(-1, None, "out of memory while parsing (the file is too large or hostile)")]
        try:
            _send(out, (job, frames))
        except MemoryError:
            _send(out, (job, [(-1, None, "parsed structures too large to return")]))


def _send(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


class _Worker:
    """One parser process; ``ready`` once it has imported its readers."""

    def __init__(self):
        import lamkit

        env = dict(os.environ)
        root = str(Path(lamkit.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lamkit.screen.parsing", str(PARSE_MEMORY_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.stdout = self.proc.stdout
        self.ready = False

    def fileno(self) -> int:
        return self.stdout.fileno()  # type: ignore[union-attr]

    def send(self, msg: Any) -> None:
        _send(self.proc.stdin, msg)

    def recv(self) -> Any:
        return _recv(self.stdout)

    def kill(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        return code

    def stop(self) -> None:
        try:
            _send(self.proc.stdin, None)
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()


def parse_jobs(
    jobs: list[tuple[str, str]],
    workers: int = 2,
    timeout: float = 60.0,
    max_bytes: int = 1 << 30,
    progress: bool = False,
) -> list[Frames]:
    """Frames of each (path, kind) job, in order.  ``workers`` parser processes (0: parse here,
    without timeout or memory limit); ``timeout`` seconds per file."""
    if not jobs:
        return []
    if workers == 0:
        return [parse_file(p, k, max_bytes) for p, k in jobs]
    from tqdm.auto import tqdm

    results: list[Frames | None] = [None] * len(jobs)
    todo = deque(range(len(jobs)))
    workers_: list[_Worker] = [_Worker() for _ in range(min(workers, len(jobs)))]
    busy: dict[_Worker, tuple[int, float]] = {}  # worker -> (job, deadline)
    bar = tqdm(total=len(jobs), disable=not progress, unit=" files", desc="parse", leave=False)

    def replace(w: _Worker) -> None:
        workers_.remove(w)
        if todo:
            workers_.append(_Worker())

    try:
        while todo or busy:
            for w in [w for w in workers_ if w.ready and w not in busy]:
                if not todo:
                    break
                j = todo.popleft()
                w.send((j, jobs[j][0], jobs[j][1], max_bytes))
                busy[w] = (j, time.monotonic() + timeout)
            starting = [w for w in workers_ if not w.ready]
            now = time.monotonic()
            soonest = min([d for _, d in busy.values()], default=now + STARTUP_TIMEOUT)
            for w in wait(starting + list(busy), timeout=max(0.0, soonest - now)):
                msg = w.recv()  # type: ignore[union-attr]
                if w in busy:
                    j, _ = busy.pop(w)  # type: ignore[index]
                    if msg is None:
                        code = w.kill()  # type: ignore[union-attr]
                        results[j] = [(-1, None, f"parser process died (exit code {code})")]
                        replace(w)  # type: ignore[arg-type]
                    else:
                        results[j] = msg[1]
                    bar.update(1)
                elif msg == "ready":
                    w.ready = True  # type: ignore[union-attr]
                else:
                    code = w.kill()  # type: ignore[union-attr]
                    raise RuntimeError(f"parser process failed to start (exit code {code})")
            now = time.monotonic()
            for w, (j, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[w]
                    w.kill()
                    results[j] = [(-1, None, f"parsing timed out after {timeout:g} s")]
                    replace(w)
                    bar.update(1)
            if todo and not workers_:  # pragma: no cover - replace() keeps one alive
                workers_.append(_Worker())
    finally:
        bar.close()
        for w in workers_:
            if w in busy:
                w.kill()
            else:
                w.stop()
    return [r if r is not None else [] for r in results]


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
