"""The resumable state of a screening: one SQLite file in the output folder.

``<out_dir>/screen-state.sqlite`` holds the settings the run was started with (and their hash),
the screening id, and one row per finished structure: its input index, the hash of its input
structure, the per-structure results (JSON; floats round-trip exactly) and its relaxed
structure.  Every finished structure (or batch of rejections) is committed in its own
transaction with ``synchronous=FULL``, so a killed run loses at most the structures in flight;
a re-run with the same settings reuses every stored row whose input hash still matches, and a
run with other settings is refused (or, with ``restart``, starts over).  A lock file keeps two
runs from sharing one folder.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ScreenError, settings_hash

STATE_FILE = "screen-state.sqlite"
LOCK_FILE = ".screen.lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    idx INTEGER PRIMARY KEY,
    input_hash TEXT NOT NULL,
    row TEXT NOT NULL,
    relaxed TEXT,
    db_id INTEGER
);
"""


@dataclass
class Stored:
    """One stored structure: ``row`` (dict of per-structure results), ``relaxed`` (arrays)."""

    index: int
    input_hash: str
    row: dict
    relaxed: dict | None
    db_id: int | None


def encode_structure(atoms) -> dict:
    """JSON-ready arrays of a structure: numbers, cell [3, 3] Å, positions [n, 3] Å, pbc."""
    return {
        "numbers": [int(z) for z in atoms.numbers],
        "cell": np.asarray(atoms.cell.array, dtype=np.float64).tolist(),
        "positions": np.asarray(atoms.positions, dtype=np.float64).tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
    }


def decode_structure(d: dict):
    """The ase.Atoms of :func:`encode_structure`'s dict."""
    from ase import Atoms

    return Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])


def _clean(value: Any) -> Any:
    """A JSON-ready copy: numpy scalars to Python, NaN kept (Python's JSON reads it back)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class StateStore:
    """The state file of ``out_dir`` for a screening with ``settings`` (a JSON-ready dict).

    Raises ScreenError when the folder holds a screening with other settings (unless
    ``restart``: then its state is discarded) or when another run holds the folder."""

    def __init__(self, out_dir: str | Path, settings: dict, restart: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.out_dir / LOCK_FILE)
        self.path = self.out_dir / STATE_FILE
        self.restarted = False
        try:
            self._open(settings, restart)
        except BaseException:
            self.close()
            raise

    def _open(self, settings: dict, restart: bool) -> None:
        settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        digest = settings_hash(settings)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(_SCHEMA)
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        if meta and meta.get("settings_hash") != digest:
            if not restart:
                old = json.loads(meta.get("settings", "{}"))
                raise ScreenError(
                    f"{self.out_dir} holds a screening with other settings "
                    f"({_diff(old, settings)}); use another output folder, or restart to "
                    "discard its results"
                )
            self.conn.executescript("DELETE FROM rows; DELETE FROM meta;")
            self.restarted = True
            meta = {}
        elif meta and restart:
            self.conn.executescript("DELETE FROM rows; DELETE FROM meta;")
            self.restarted = True
            meta = {}
        if not meta:
            meta = {
                "settings": json.dumps(settings, sort_keys=True),
                "settings_hash": digest,
                "screen_id": uuid.uuid4().hex[:12],
            }
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        self.screen_id: str = meta["screen_id"]

    # ------------------------------------------------------------------ writing
    def put(self, items: Iterable[tuple[int, str, dict, dict | None]]) -> None:
        """Store (index, input hash, row, relaxed arrays or None) items in one transaction."""
        data = [
            (int(i), h, json.dumps(_clean(row)), None if rel is None else json.dumps(rel))
            for i, h, row, rel in items
        ]
        if not data:
            return
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO rows (idx, input_hash, row, relaxed, db_id) "
                "VALUES (?, ?, ?, ?, NULL)",
                data,
            )

    def set_db_ids(self, ids: dict[int, int]) -> None:
        """Remember the database record id of inserted structures (index -> id)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "UPDATE rows SET db_id = ? WHERE idx = ?", [(v, k) for k, v in ids.items()]
            )

    # ------------------------------------------------------------------ reading
    def hashes(self) -> dict[int, str]:
        """index -> input hash of every stored structure."""
        return dict(self.conn.execute("SELECT idx, input_hash FROM rows").fetchall())

    def load(self, indices: Iterable[int] | None = None) -> list[Stored]:
        """Stored structures in index order (all, or those of ``indices``)."""
        rows = self.conn.execute(
            "SELECT idx, input_hash, row, relaxed, db_id FROM rows ORDER BY idx"
        ).fetchall()
        wanted = None if indices is None else set(indices)
        return [
            Stored(i, h, json.loads(r), None if rel is None else json.loads(rel), db)
            for i, h, r, rel, db in rows
            if wanted is None or i in wanted
        ]

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
            self.conn = None  # type: ignore[assignment]
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock(path: Path):
    """An exclusive lock on ``path`` (released when the file is closed or the process dies)."""
    fh = open(path, "a+")
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # pragma: no cover - not POSIX: no protection
        pass
    except OSError:
        fh.close()
        raise ScreenError(
            f"{path.parent} is in use by another screening (lock {path.name}); wait for it or "
            "choose another output folder"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def _flat(d: Any, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _diff(old: dict, new: dict) -> str:
    """'key: old -> new' for the settings that differ (at most 4)."""
    old, new = _flat(old), _flat(new)
    keys = sorted(set(old) | set(new))
    parts = [
        f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}"
        for k in keys
        if old.get(k) != new.get(k)
    ]
    more = f", and {len(parts) - 4} more" if len(parts) > 4 else ""
    return "; ".join(parts[:4]) + more


def _short(v: Any) -> str:
    text = "unset" if v is None else str(v)
    return text if len(text) <= 60 else text[:57] + "..."
