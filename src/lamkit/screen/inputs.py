"""Inputs of a screening: files, folders, archives, database queries and ase.Atoms.

:func:`collect` turns what the user gives into :class:`Candidate` s, one per structure, in a
fixed order (inputs in the given order; folders and archives walked in sorted / stored order;
frames in file order), each with its index, a source name and either a periodic ase.Atoms or
the reason it could not be read.  Nothing here raises for bad content.

Files are parsed by :mod:`lamkit.db.readers` (CIF through pymatgen, JSON forms, deepmd/npy,
anything ASE reads) in a pool of parser processes with a per-file timeout and memory limit, so a
hostile file can neither hang nor crash the run: it becomes a rejected candidate.  Archives (zip,
tar, tar.gz/bz2/xz, single-file .gz) are unpacked member by member into a private temporary
folder under generated names (member paths are never used as paths), with limits on each member
and on the whole archive counted on the bytes actually written (decompression bombs stop at the
limit); unsafe members (absolute paths, '..', links, devices) are rejected.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ScreenConfig, ScreenError
from .parsing import parse_jobs, payload_of
from .parsing import reason as _reason
from .store import STATE_FILE

if TYPE_CHECKING:
    from ase import Atoms

#: Suffixes picked up when walking folders and archives (plus POSCAR/CONTCAR names, deepmd
#: folders and the archive suffixes); a file named explicitly is read whatever its suffix.
STRUCTURE_SUFFIXES = (
    ".cif", ".json", ".jsonl", ".ndjson", ".extxyz", ".xyz", ".vasp", ".poscar", ".traj", ".xsf",
    ".res",
)  # fmt: skip
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
#: Archives inside archives are opened up to this depth.
MAX_ARCHIVE_DEPTH = 2
#: Compression ratio above which a member is taken for a decompression bomb (when > 1 MiB).
MAX_RATIO = 1000


@dataclass
class Candidate:
    """One input structure: ``atoms`` (periodic ase.Atoms) or ``error`` (why it has none)."""

    index: int
    source: str
    atoms: Atoms | None = None
    error: str | None = None

    def input_hash(self) -> str:
        """sha256 (hex) of the exact structure (species, cell, positions, pbc) or of the error."""
        h = hashlib.sha256()
        if self.atoms is None:
            h.update(f"error\0{self.source}\0{self.error}".encode())
            return h.hexdigest()
        a = self.atoms
        h.update(np.asarray(a.numbers, dtype="<i8").tobytes())
        h.update(np.asarray(a.cell.array, dtype="<f8").tobytes())
        h.update(np.asarray(a.positions, dtype="<f8").tobytes())
        h.update(np.asarray(a.pbc, dtype=bool).tobytes())
        return h.hexdigest()


@dataclass
class _Job:
    """A file to parse: ``path`` on disk, ``display`` name for the table, ``kind``."""

    path: str
    display: str
    kind: str = "file"  # "file" | "deepmd"


def atoms_from_arrays(payload: dict) -> Atoms:
    """An ase.Atoms from the plain arrays a parser sends (numbers, cell, positions, pbc)."""
    from ase import Atoms

    return Atoms(
        numbers=payload["numbers"],
        positions=payload["positions"],
        cell=payload["cell"],
        pbc=payload["pbc"],
    )


def collect(
    inputs: Any, config: ScreenConfig | None = None, db: Any = None, progress: bool = False
) -> list[Candidate]:
    """Candidates of ``inputs``: a path, an ase.Atoms, a ``{"db_query": {...}}`` dict, or a list
    of these (pymatgen Structures and record dicts are accepted too).  ``db`` (a CrystalDB)
    serves database queries.  Raises ScreenError only for unusable arguments (a query without a
    database, an invalid filter); unreadable content becomes rejected candidates."""
    config = config or ScreenConfig()
    if isinstance(inputs, (str, Path, dict)) or _is_atoms(inputs):
        inputs = [inputs]
    entries: list[Any] = []  # each a _Job or a finished list of (source, atoms, error)
    with ExitStack() as stack:
        tmp: list[Path] = []

        def tmpdir() -> Path:
            if not tmp:
                import tempfile

                tmp.append(Path(stack.enter_context(tempfile.TemporaryDirectory("-screen"))))
            return tmp[0]

        objects = 0
        for obj in inputs:
            if isinstance(obj, (str, Path)):
                entries.extend(_expand_path(Path(obj), str(obj), config, tmpdir))
            elif isinstance(obj, dict) and "db_query" in obj:
                entries.append(_from_query(obj["db_query"], db))
            else:
                entries.append([_from_object(obj, objects)])
                objects += 1
        jobs = [e for e in entries if isinstance(e, _Job)]
        parsed = parse_jobs(
            [(j.path, j.kind) for j in jobs],
            workers=config.parse_workers,
            timeout=config.parse_timeout,
            max_bytes=config.max_file_bytes,
            progress=progress,
        )
        results = dict(zip(map(id, jobs), parsed))
        out: list[Candidate] = []
        for e in entries:
            items = _job_items(e, results[id(e)]) if isinstance(e, _Job) else e
            for source, payload, error in items:
                atoms = None if payload is None else atoms_from_arrays(payload)
                out.append(Candidate(len(out), source, atoms, error))
    return out


def _job_items(job: _Job, frames: list[tuple[int, dict | None, str | None]]):
    """(source, payload, error) of each frame a parser returned for ``job``."""
    if not frames:
        return [(job.display, None, "no structure found in the file")]
    single = len(frames) == 1
    return [
        (job.display if single or frame < 0 else f"{job.display}[{frame}]", payload, error)
        for frame, payload, error in frames
    ]


def _is_atoms(obj: Any) -> bool:
    from ase import Atoms

    return isinstance(obj, Atoms)


def _from_object(obj: Any, k: int):
    """(source, payload, error) of a Python object (ase.Atoms, pymatgen Structure, dict)."""
    from ..db.readers import item_from_object

    source = f"atoms[{k}]" if _is_atoms(obj) else f"object[{k}]"
    try:
        item = item_from_object(obj, source, k)
        if item.error is not None:
            return (source, None, item.error)
        return (source, payload_of(item.obj), None)
    except Exception as exc:  # noqa: BLE001 - any malformed object becomes a rejection
        return (source, None, _reason(exc))


def _from_query(filters: Any, db: Any) -> list:
    """(source, payload, error) of every record matching CrystalDB.query ``filters``."""

    if db is None:
        raise ScreenError("a {'db_query': ...} input needs a database (db=... / --db URL)")
    if not isinstance(filters, dict):
        raise ScreenError(
            f"db_query: expected a dict of CrystalDB.query filters; found {filters!r}"
        )
    out = []
    from ..db.errors import QueryError

    try:
        for rec in db.iter_query(**filters):
            out.append((rec.public_id, payload_of(rec), None))
    except (QueryError, TypeError) as exc:
        raise ScreenError(f"db_query {filters}: {exc}") from None
    return out


def _is_poscar(name: str) -> bool:
    return name.upper().startswith(("POSCAR", "CONTCAR"))


def _archive_kind(name: str) -> str | None:
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    if low.endswith(".gz"):
        return "gz"
    return None


def _wanted(name: str) -> bool:
    """Whether a file met while walking a folder or archive is read."""
    low = name.lower()
    return (
        low.endswith(STRUCTURE_SUFFIXES)
        or _is_poscar(PurePosixPath(name).name)
        or _archive_kind(name) is not None
    )


def _expand_path(path: Path, display: str, config: ScreenConfig, tmpdir, depth: int = 0):
    """Jobs (and rejections) of a path given by the user (or met in a walk)."""
    if not path.exists():
        return [[(display, None, "no such file or folder")]]
    if path.is_dir():
        if (path / "type.raw").is_file():
            return [_Job(str(path), display, "deepmd")]
        out: list = []
        children = sorted(path.iterdir())
        for child in children:
            name = f"{display.rstrip('/')}/{child.name}"
            if child.is_dir() and (child / STATE_FILE).exists():
                continue  # a screening's output folder (its relaxed.extxyz is no input)
            if child.is_dir() or _wanted(child.name):
                out.extend(_expand_path(child, name, config, tmpdir, depth))
        return out
    kind = _archive_kind(path.name)
    if kind is None:
        return [_Job(str(path), display)]
    if depth >= MAX_ARCHIVE_DEPTH:
        return [[(display, None, f"archive nested deeper than {MAX_ARCHIVE_DEPTH} levels")]]
    budget = [config.max_archive_bytes]
    try:
        members = list(_unpack(path, kind, tmpdir(), config.max_file_bytes, budget))
    except Exception as exc:  # noqa: BLE001 - a corrupt archive is one rejection
        return [[(display, None, f"cannot read archive: {_reason(exc)}")]]
    out = []
    for member, on_disk, error in members:
        name = f"{display}:{member}"
        if error is not None:
            out.append([(name, None, error)])
        elif _wanted(member) or kind == "gz":
            out.extend(_expand_path(on_disk, name, config, tmpdir, depth + 1))
    return out


def _unsafe(name: str) -> str | None:
    """Why an archive member name is unsafe to trust, or None."""
    if not name or "\x00" in name:
        return "empty or NUL-containing member name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute member path"
    if ".." in re.split(r"[\\/]", name):
        return "member path escapes the archive ('..')"
    return None


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _target(tmp: Path, name: str) -> Path:
    """A fresh private path for a member: a new folder and a sanitized base name (the name keeps
    its suffix, which tells the reader the format)."""
    import tempfile

    base = _SAFE.sub("_", PurePosixPath(name.replace("\\", "/")).name)[-100:] or "member"
    return Path(tempfile.mkdtemp(dir=tmp)) / base


def _copy_capped(src, dst: Path, limit: int, budget: list[int]) -> str | None:
    """Copy a stream to ``dst``, at most ``limit`` bytes and what is left of ``budget[0]``;
    returns why it stopped early, or None."""
    written = 0
    with open(dst, "wb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                return None
            written += len(chunk)
            if written > limit:
                return f"member larger than the {limit} byte limit (decompression bomb?)"
            if written > budget[0]:
                return "archive expands beyond its total byte limit (decompression bomb?)"
            out.write(chunk)
            budget[0] -= len(chunk)


def _unpack(
    path: Path, kind: str, tmp: Path, limit: int, budget: list[int]
) -> Iterator[tuple[str, Path | None, str | None]]:
    """(member name, extracted path, error) of every regular member of an archive."""
    if kind == "gz":
        name = path.name[:-3]
        dst = _target(tmp, name)
        with gzip.open(path, "rb") as src:
            error = _copy_capped(src, dst, limit, budget)
        yield name, (None if error else dst), error
    elif kind == "zip":
        yield from _unpack_zip(path, tmp, limit, budget)
    else:
        yield from _unpack_tar(path, tmp, limit, budget)


def _unpack_zip(path: Path, tmp: Path, limit: int, budget: list[int]):
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            error = _unsafe(name)
            mode = info.external_attr >> 16
            if error is None and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                error = "not a regular file (link or device) in the archive"
            if error is None and info.file_size > limit:
                error = f"member of {info.file_size} bytes exceeds the {limit} byte limit"
            if (
                error is None
                and info.file_size > 1 << 20
                and info.file_size > MAX_RATIO * max(info.compress_size, 1)
            ):
                error = (
                    f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 "
                    "looks like a decompression bomb"
                )
            if error is None and _wanted(name):
                dst = _target(tmp, name)
                try:
                    with zf.open(info) as src:
                        error = _copy_capped(src, dst, limit, budget)
                except Exception as exc:  # noqa: BLE001 - a corrupt member
                    error = f"cannot extract: {_reason(exc)}"
                yield name, (None if error else dst), error
            elif error is not None:
                yield name, None, error


def _unpack_tar(path: Path, tmp: Path, limit: int, budget: list[int]):
    with tarfile.open(path, "r:*") as tf:
        for member in tf:
            name = member.name
            if member.isdir():
                continue
            error = _unsafe(name)
            if error is None and not member.isfile():
                error = "not a regular file (link or device) in the archive"
            if error is None and member.size > limit:
                error = f"member of {member.size} bytes exceeds the {limit} byte limit"
            if error is None and _wanted(name):
                dst = _target(tmp, name)
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    yield name, None, "member has no data"
                    continue
                with src:
                    error = _copy_capped(src, dst, limit, budget)
                yield name, (None if error else dst), error
            elif error is not None:
                yield name, None, error
