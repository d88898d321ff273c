"""Memory behaviour of the long-lived analysis worker processes.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after
the first study the worker's 10-60 MB arrays come from the heap and the arenas of the analysis
threads, and freed ones stay in the process: its resident size then holds the sum of every
stage's arrays instead of the largest stage's. A fixed threshold maps every large array on its
own and returns it to the system when freed (figures below and in benchmarks/load.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

LOG = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3          # mallopt parameter (glibc malloc.h)
#: Fixed (setting it stops the dynamic raise). Above the slab temporaries of the chunked steps
#: (1-3 MB, reused from the heap), below every volume-sized array. Measured with
#: benchmarks/worker_memory.py on 512 x 512 x 60 (2 / 6 echoes): glibc's initial 128 KiB 560 / 670
#: MiB but every slab temporary a fresh mmap (slower), 4 MiB 570 / 684 MiB, 16 MiB 640 / 682-713 MiB,
#: none (dynamic) 654 / 704-720 MiB.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


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
