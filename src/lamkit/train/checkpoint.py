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
) -> Path:
    """Write ``<prefix>-<step>.pt``; ``pointer=False`` (a secondary family, e.g. the EMA
    weights) leaves the ``checkpoint`` pointer file to the regular checkpoints."""
    folder = Path(folder)
    name = f"{Path(prefix).name}-{step}.pt"
    target = (
        folder / Path(prefix).parent / name if Path(prefix).parent != Path(".") else folder / name
    )
    atomic_save(payload, target)
    if pointer:
        _atomic_text(target.parent / "checkpoint", name)
    link = target.parent / f"{Path(prefix).name}.pt"
    tmp_link = target.parent / f".{link.name}.tmp"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(name, tmp_link)
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
