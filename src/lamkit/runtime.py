"""Process-level allocator code: settings that make PyTorch on CPU faster (applied by the
trainer, DeepPot and the CLI, never at import), the process's resident memory, and handing
freed heap memory back to the system. The only module that talks to the C library's allocator.

``tune_allocator``: glibc returns every freed block above its mmap threshold (a few MB, e.g. one
[192, 4, 48, 48] attention tensor) to the kernel, and the next tensor of that size is mapped and
page-faulted afresh. A DPA-2 training step allocates thousands of such tensors, so on machines
where fresh pages are slow (about 1 GB/s on the virtual machines we measured) this costs a large
share of the step. Serving every allocation from the heap and never trimming it keeps freed pages
for reuse, as a caching allocator would. Peak memory is unchanged; the process just keeps its
high-water mark. Set ``LAMKIT_TUNE_MALLOC=0`` to leave the allocator alone.

``release_freed_memory``: chunked evaluation (:mod:`lamkit.nn.chunking`) of large systems
fragments the heap; it trims it (``malloc_trim``) once the process has grown by
``TRIM_SLACK_BYTES`` since the evaluation began (:func:`resident_bytes`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done: bool | None = None
# growth of resident memory during one evaluation beyond which freed heap memory is trimmed
TRIM_SLACK_BYTES = 1 << 30


def tune_allocator() -> bool:
    """Keep freed memory in the heap (glibc ``mallopt``); True when applied. Idempotent."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("LAMKIT_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    _done = ok
    return ok


@functools.cache
def _glibc():
    """glibc (with ``malloc_trim``), or None elsewhere."""
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


def release_freed_memory(start: int | None, slack: int = TRIM_SLACK_BYTES) -> None:
    """Return memory freed into glibc's heap to the system (``malloc_trim``) once the resident
    memory has grown by more than ``slack`` since ``start`` (:func:`resident_bytes` when the
    evaluation began; None: never); a no-op without glibc.

    Slices allocate many mid-sized tensors (below glibc's 32 MB mmap threshold, so from the
    heap) among longer-lived slice outputs; the heap fragments and, left alone, the process
    keeps GBs it no longer uses (3.4 GB of free heap after one DPA-2 small evaluation of
    12,288 atoms in slices of 512). Every trim makes later allocations fault their pages in
    again, which is slow, so :func:`lamkit.nn.chunking.map_rows` asks at most once per block
    and pass, and small systems, which never grow by ``slack``, are never trimmed.
    """
    libc = _glibc()
    if libc is None or start is None:
        return
    now = resident_bytes()
    if now is not None and now > start + slack:
        libc.malloc_trim(0)


def available_bytes() -> int | None:
    """Memory the system can still give without swapping (``MemAvailable``; None off Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_resident_bytes() -> int:
    """The process's peak resident memory so far (bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
