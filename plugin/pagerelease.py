"""Give the kernel back pages the analysis holds but does not need: the all-zero pages of the
volumes it keeps, and malloc's free pages between its steps (memory: issue 15).

The background-removed phase, the QSM map and its mask, the brain mask and the label map are
zero outside the head (or outside the spots), and they stay in the worker until the results are
written. Their zero pages are resident all the same: the arrays were written in full (zeroed
around the box), or numpy asked for transparent huge pages and one write made 2 MiB resident. On a
512 x 512 x 60 study that is 22 MiB of the local phase, 29 of the QSM map, 7 of each mask and
14 of the label map (``benchmarks/load.md`` "Worker memory, zero pages").

:func:`release_zero_pages` finds the pages of an array that hold only zero bytes and tells the
kernel it may drop them (``madvise(MADV_DONTNEED)``). In a private anonymous mapping, which is
what malloc's mmap and the heap are, a dropped page reads back as zeros afterwards (the kernel's
shared zero page, not counted in the resident size) and gets a fresh zeroed page when written: the
array's values do not change, only where they live. Nothing is done for memory that is not a
private anonymous mapping (a file mapping would read back the file), for arrays that are not
C-contiguous, or off Linux.

The caller must be the only one writing the array while it runs (a write between the scan and the
madvise would be lost).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import sys
from functools import lru_cache
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

MADV_DONTNEED = 4            # linux/mman.h (also asm-generic)
#: arrays smaller than this are left alone (the scan and the system call are not worth it)
MIN_BYTES = 1 << 20


@lru_cache(maxsize=1)
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _private_anonymous(start: int, end: int) -> bool:
    """Whether [start, end) lies wholly in private anonymous mappings of this process
    (/proc/self/maps: no path, or the heap; permissions rw-p). One allocation may span several
    adjacent entries (numpy's huge-page advice splits its mapping at a 2 MiB boundary)."""
    covered = start
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                if hi <= covered or lo >= end:
                    continue
                name = parts[5] if len(parts) > 5 else ""
                if lo > covered or parts[1] != "rw-p" or name not in ("", "[heap]"):
                    return False
                covered = hi
                if covered >= end:
                    return True
    except (OSError, ValueError, IndexError):
        return False
    return False


def release_zero_pages(array: Optional[np.ndarray]) -> int:
    """Drop the resident pages of ``array`` that hold only zeros (module docstring); returns the
    bytes given back (0 when nothing could be or was done). The values of ``array`` are unchanged.

    >>> a = np.zeros((4, 1024, 1024), np.float32); a[...] = 0; a[1, 5, 7] = 1.5
    >>> release_zero_pages(a) >= 15 * 1024 * 1024 or not sys.platform.startswith("linux")
    True
    >>> float(a.sum()), float(a[1, 5, 7])
    (1.5, 1.5)
    """
    madvise = _madvise()
    if (madvise is None or array is None or not isinstance(array, np.ndarray) or array.nbytes < MIN_BYTES
            or not array.flags.c_contiguous or not array.flags.writeable):
        return 0
    page = mmap.PAGESIZE
    start = array.__array_interface__["data"][0]
    end = start + array.nbytes
    first = -(-start // page) * page        # the pages wholly inside the array
    n_pages = (end - first) // page
    if n_pages <= 0 or not _private_anonymous(start, end):
        return 0
    raw = array.reshape(-1).view(np.uint8)[first - start:first - start + n_pages * page]
    words = raw.view(np.uint64) if page % 8 == 0 and (first % 8 == 0) else raw
    zero = ~words.reshape(n_pages, -1).any(axis=1)
    if not zero.any():
        return 0
    # runs of zero pages: [begin, stop) page indices
    edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.view(np.int8), [0]))))
    released = 0
    for b, e in zip(edges[0::2], edges[1::2]):
        length = int(e - b) * page
        if madvise(first + int(b) * page, length, MADV_DONTNEED) == 0:
            released += length
        else:   # nothing lost: the pages simply stay
            log.debug("madvise(MADV_DONTNEED) refused (errno %d)", ctypes.get_errno())
            break
    return released


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):   # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIMMING = [True]


def set_heap_trimming(on: bool) -> None:
    """Switch :func:`trim_heap` on or off for this process (off: a worker that keeps its freed
    memory for the next study, :func:`plugin.service.memory.keep_freed_memory`)."""
    _TRIMMING[0] = bool(on)


def trim_heap() -> bool:
    """Give the kernel back the free pages inside malloc's heap and thread arenas
    (``malloc_trim(0)``: glibc releases every whole free page, not only the top of the heap).
    Between the analysis steps the slab temporaries of the last step (below the worker's 4 MiB
    mmap threshold, so from the heap) are free but resident: 5-9 MiB on a 512 x 512 x 60 study.
    True when the C library released something; False off glibc or when switched off
    (:func:`set_heap_trimming`)."""
    if not _TRIMMING[0]:
        return False
    trim = _malloc_trim()
    return bool(trim is not None and trim(0))
