"""Keep XLA:CPU's scratch memory mapped from one dispatch to the next (Linux with glibc).

XLA:CPU allocates a program's temporary buffers at each execution and frees them when it ends. glibc's malloc
serves allocations over its mmap threshold (at most 32 MB unless raised) with fresh pages from the kernel and unmaps
them on free, so every dispatch of a compiled chunk faults its scratch in again, page by page. The char GPT's train
chunk has 56 MB of it: 12,800 minor page faults and about 13 ms per dispatch, 2.5-3 ms per step at 5 steps per
dispatch, 15-20 % of the step (AMD EPYC, 2 cores). Raising the mmap and trim thresholds above the program's scratch
size keeps those pages in malloc's heap, where the next dispatch reuses them: no faults, jl.fit at 16.2-16.5
against 19.6-20.2 ms per step (interleaved processes, scratch `s9/fit_malloc.py`).

The thresholds are process-wide: malloc'd blocks up to the new threshold (NumPy arrays included) then come from the
heap, whose freed space is kept for reuse rather than returned to the kernel at once. Set JUPYTER_LLM_MALLOPT=0 to
leave malloc alone; a threshold set through glibc's own environment variables is never overridden.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
GLIBC_DEFAULT_MAX = 32 * 2**20  # the dynamic mmap threshold's ceiling: below it there is nothing to gain
CAP = 2**30  # beyond 1 GB of scratch a program's work dwarfs its page faults
_set_to = 0  # the mmap threshold this process has been given here


def keep_scratch_mapped(scratch_bytes: int) -> int:
    """Raise malloc's thresholds so that `scratch_bytes` of per-execution buffers stay mapped between dispatches.
    Returns the mmap threshold now in force from here (0 when malloc is left as it is)."""
    global _set_to
    if not _applies():
        return 0
    want = min(CAP, 1 << max(0, int(scratch_bytes * 1.25) - 1).bit_length())  # a power of two with headroom
    if want <= max(_set_to, GLIBC_DEFAULT_MAX):
        return _set_to
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(2 * want, 2**31 - 1))) and \
                libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(want)):
            _set_to = want
    except (OSError, AttributeError):  # no glibc after all
        pass
    return _set_to


def _applies() -> bool:
    if os.environ.get("JUPYTER_LLM_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    user_set = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    return not any(v in os.environ for v in user_set) and "mmap_threshold" not in tunables \
        and "trim_threshold" not in tunables
