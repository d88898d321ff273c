"""Memory behaviour of the long-lived analysis worker processes.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after
the first study the worker's 10-60 MB arrays come from the heap and the arenas of the analysis
threads, and freed ones stay in the process: its resident size then holds the sum of every
stage's arrays instead of the largest stage's (measured on a 512 x 512 x 60 two-echo study: peak
RSS 915 MB with the dynamic threshold, 590 MB with a fixed one; benchmarks/load.md). A fixed
threshold maps every large array on its own and returns it to the system when freed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

LOG = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3          # mallopt parameter (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024   # glibc's initial value; fixing it stops the dynamic raise


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold in this process (see the module docstring). True when set; False
    where the C library is not glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    if not ok:
        LOG.debug("mallopt(M_MMAP_THRESHOLD) refused: freed arrays may stay in the worker")
    return ok
