"""Checks that reject bad data early.

Every failure raises :class:`~lamkit.errors.DataError` with a message that names the file and
says what was expected and what was found, so that a user can fix the data without reading code.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError

#: Smallest accepted |det(box)| in Å³; anything below is a degenerate (flat or empty) cell.
MIN_ABS_DET = 1e-6
#: Files at least this large are memory-mapped read-only instead of read into memory, so a
#: dataset of many GB (MPtraj scale) opens in seconds and only the frames used are paged in.
MMAP_MIN_BYTES = 1 << 20
#: Checks walk a memory-mapped file in blocks of about this many bytes.
BLOCK_BYTES = 16 << 20


def read_npy(path: Path) -> np.ndarray:
    """Load one ``.npy`` array with its dtype unchanged; DataError when it cannot be read.

    Files of MMAP_MIN_BYTES or more come back memory-mapped (read-only); a dataset of an HDF5
    system (:class:`lamkit.data.h5path.H5Path`) is read into memory.
    """
    if hasattr(path, "load"):  # an HDF5 dataset
        arr = path.load()
        if arr.ndim == 0:
            raise DataError(f"{path} holds a scalar; expected one row per frame")
        return arr
    try:
        big = path.stat().st_size >= MMAP_MIN_BYTES
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if big else None)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path} is not a single .npy array")
    if arr.ndim == 0:
        raise DataError(f"{path} holds a scalar; expected one row per frame")
    return arr


def read_float_rows(path: Path) -> np.ndarray:
    """Load ``path`` as float64 rows ``[nframes, ncolumns]`` (float32, float64 or int files)."""
    arr = read_npy(path)
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path} holds {arr.dtype} values; expected float32 or float64 numbers")
    ncol = int(np.prod(arr.shape[1:], dtype=np.int64))  # also right for 0 frames
    return np.asarray(arr, dtype=np.float64).reshape(arr.shape[0], ncol)


def is_mapped(arr: np.ndarray) -> bool:
    """True when ``arr`` is (a view of) a memory-mapped file."""
    base = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def row_blocks(arr: np.ndarray, path: Path | str) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, block)`` over ``arr``; for a memory-mapped array each block is read from a
    fresh mapping of ``path`` that is dropped afterwards, so a full scan does not leave the file
    in the process's resident memory.  ``arr`` must have the file's data in file order."""
    if not is_mapped(arr):
        yield 0, arr
        return
    rows = max(1, BLOCK_BYTES // max(1, arr[:1].nbytes))
    for start in range(0, arr.shape[0], rows):
        view = np.load(path, allow_pickle=False, mmap_mode="r")
        block = np.array(np.asarray(view).reshape(arr.shape)[start : start + rows])
        del view
        yield start, block


def check_nframes(arr: np.ndarray, path: Path, nframes: int, ref_path: Path) -> None:
    """All files of one set must have the same number of frames (rows)."""
    if arr.shape[0] != nframes:
        raise DataError(
            f"frame count mismatch: {path} has {arr.shape[0]} frames but {ref_path} has {nframes}"
        )


def check_columns(arr: np.ndarray, path: Path, expected: int, reason: str) -> None:
    """``arr`` ``[nf, ncol]`` must have ``expected`` columns; ``reason`` explains the number."""
    if arr.shape[1] != expected:
        raise DataError(
            f"shape mismatch: {path} has {arr.shape[1]} values per frame but {reason}, "
            f"so {expected} were expected"
        )


def check_finite(arr: np.ndarray, path: Path | str, frame_ids: np.ndarray | None = None) -> None:
    """Reject NaN/inf in ``arr`` ``[nf, ncol]``, naming the first bad frame and column.

    ``frame_ids`` translates row numbers to the frame numbers printed (default: the row).
    A memory-mapped ``arr`` is checked block by block (see :func:`row_blocks`).
    """
    nbad, first = 0, None
    for start, block in row_blocks(arr, path):
        bad = ~np.isfinite(block)
        if bad.any():
            nbad += int(bad.sum())
            if first is None:
                row, col = (int(i) for i in np.argwhere(bad)[0])
                first = (start + row, col, block[row, col])
    if first is not None:
        row, col, value = first
        frame = row if frame_ids is None else int(frame_ids[row])
        raise DataError(
            f"{path}: frame {frame}, column {col} is {value} "
            f"({nbad} non-finite value(s) in the file)"
        )


def check_boxes(box: np.ndarray, path: Path | str, frame_ids: np.ndarray | None = None) -> None:
    """Reject degenerate cells: ``box`` ``[nf, 9]`` Å, rows a, b, c; needs |det| >= 1e-6 Å³."""
    det = np.linalg.det(box.reshape(-1, 3, 3))
    bad = np.abs(det) < MIN_ABS_DET
    if bad.any():
        row = int(np.argmax(bad))
        frame = row if frame_ids is None else int(frame_ids[row])
        raise DataError(
            f"{path}: frame {frame} has a degenerate box, |det| = {abs(det[row]):.3g} Å³ "
            f"(< {MIN_ABS_DET:g}); cell rows a, b, c = {box[row].reshape(3, 3).tolist()}"
        )


def check_type_range(
    atype: np.ndarray, ntypes: int, source: Path | str, allow_virtual: bool, what: str
) -> None:
    """Type indices must lie in ``[0, ntypes)`` (or be -1 when virtual atoms are allowed)."""
    low = -1 if allow_virtual else 0
    for start, block in row_blocks(atype, source):
        bad = (block < low) | (block >= ntypes)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            if len(pos) > 1:
                pos = (start + pos[0], *pos[1:])
            break
    else:
        return
    where = f"atom {pos[-1]}" if len(pos) == 1 else f"frame {pos[0]}, atom {pos[1]}"
    allowed = f"-1 (virtual) or 0..{ntypes - 1}" if allow_virtual else f"0..{ntypes - 1}"
    raise DataError(
        f"{source}: type index {int(atype[pos])} at {where} is out of range of {what} "
        f"({ntypes} types, so allowed indices are {allowed})"
    )
