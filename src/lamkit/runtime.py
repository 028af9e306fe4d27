"""Process-level settings that make PyTorch on CPU faster; applied by the trainer, DeepPot and the
CLI, never at import.

``tune_allocator``: glibc returns every freed block above its mmap threshold (a few MB, e.g. one
[192, 4, 48, 48] attention tensor) to the kernel, and the next tensor of that size is mapped and
page-faulted afresh. A DPA-2 training step allocates thousands of such tensors, so on machines
where fresh pages are slow (about 1 GB/s on the virtual machines we measured) this costs a large
share of the step. Serving every allocation from the heap and never trimming it keeps freed pages
for reuse, as a caching allocator would. Peak memory is unchanged; the process just keeps its
high-water mark. Set ``LAMKIT_TUNE_MALLOC=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done: bool | None = None


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
