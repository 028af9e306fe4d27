"""Training checkpoints: ``<save_ckpt>-<step>.pt`` files written atomically, a ``checkpoint``
pointer file naming the newest, a ``<save_ckpt>.pt`` link to it, and pruning to
``max_ckpt_keep``. A run killed at any moment leaves the previous checkpoint intact."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..model.io import atomic_save


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(
    payload: dict,
    folder: str | Path,
    prefix: str,
    step: int,
    keep: int = 5,
    pointer: bool = True,
    store: str | Path | None = None,
) -> Path:
    """Write ``<prefix>-<step>.pt``; ``pointer=False`` (a secondary family, e.g. the EMA
    weights) leaves the ``checkpoint`` pointer file to the regular checkpoints.

    ``store`` (``training.save_dir``; relative to ``folder``) is where the step files go; the
    pointer file and the ``<prefix>.pt`` link stay next to ``prefix`` and name them by their
    relative path."""
    folder = Path(folder)
    name = f"{Path(prefix).name}-{step}.pt"
    home = folder / Path(prefix).parent
    target = (folder / store if store else home) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    atomic_save(payload, target)
    rel = os.path.relpath(target, home)
    if pointer:
        _atomic_text(home / "checkpoint", rel)
    link = home / f"{Path(prefix).name}.pt"
    tmp_link = home / f".{link.name}.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(rel, tmp_link)
    os.replace(tmp_link, link)
    _prune(target.parent, Path(prefix).name, keep)
    return target


def _prune(folder: Path, stem: str, keep: int) -> None:
    if keep <= 0:
        return
    pat = re.compile(re.escape(stem) + r"-(\d+)\.pt$")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := pat.match(p.name)))
    for _, p in found[:-keep]:
        p.unlink()


def latest_checkpoint(path: str | Path) -> Path:
    """The checkpoint a path designates: a file, or a folder's ``checkpoint`` pointer."""
    path = Path(path)
    if path.is_dir():
        return path / (path / "checkpoint").read_text().strip()
    return path
