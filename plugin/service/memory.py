"""Memory behaviour of the long-lived analysis worker processes.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so after
the first study the worker's 10-60 MB arrays come from the heap and the arenas of the analysis
threads, and freed ones stay in the process: its resident size then holds the sum of every
stage's arrays instead of the largest stage's. A fixed threshold maps every large array on its
own and returns it to the system when freed (figures below and in benchmarks/load.md).

The price of returning: every study's arrays are fresh pages the kernel must fault in and zero
(about 200,000 faults, 1.0-1.5 s of system time for the 2-echo 512 x 512 x 60 study), and on a
virtual machine that hands free guest memory back to its host (virtio free page reporting) they
are fresh host pages too once the worker has been idle for a few seconds.
:func:`keep_freed_memory` (``[queue] keep_freed_memory``) is the other choice: one heap for every
thread, no trimming, so the next study reuses the last one's pages; the worker's resident size
then stays at its peak between studies and that peak is higher (heap fragmentation: 368 -> 412
MiB on the 2-echo study, benchmarks/load.md "Thirteenth session").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Mapping, Optional

LOG = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3          # mallopt parameter (glibc malloc.h)
#: Fixed (setting it stops the dynamic raise). Above the slab temporaries of the chunked steps
#: (1-3 MB, reused from the heap), below every volume-sized array. Measured with
#: benchmarks/worker_memory.py on 512 x 512 x 60 (2 / 6 echoes): glibc's initial 128 KiB 560 / 670
#: MiB but every slab temporary a fresh mmap (slower), 4 MiB 570 / 684 MiB, 16 MiB 640 / 682-713 MiB,
#: none (dynamic) 654 / 704-720 MiB.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


M_TRIM_THRESHOLD = -1          # mallopt parameters (glibc malloc.h)
M_ARENA_MAX = -8
#: With :func:`keep_freed_memory`: every array up to this size comes from the heap, and free
#: memory at its top up to this size stays
KEEP_THRESHOLD_BYTES = 1 << 30


def _mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Keep what the analysis frees in this process for the next study (module docstring): arrays
    from one heap shared by every thread (one arena: several made the peak 457-559 MiB against 412
    on the 2-echo study), never mapped on their own, the heap never trimmed (also not between the
    analysis steps: :func:`plugin.pagerelease.trim_heap` is switched off). The analysis's zero pages
    are still given back (:func:`plugin.pagerelease.release_zero_pages`). True when set; False where
    the C library is not glibc (nothing changed)."""
    from plugin.pagerelease import set_heap_trimming
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = all(bool(mallopt(param, value)) for param, value in
             ((M_MMAP_THRESHOLD, KEEP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, KEEP_THRESHOLD_BYTES), (M_ARENA_MAX, 1)))
    if not ok:
        LOG.debug("mallopt refused a setting: the worker's freed memory may partly go back to the system")
    set_heap_trimming(False)
    return ok


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold in this process (see the module docstring) and give back the free
    pages its heap already holds. A worker forked from a process whose heap has large free holes
    (a long-running node, or a test runner that analysed studies in-process) inherits them resident;
    malloc serves a volume-sized array from such a hole before it maps one, and freeing it then
    returns nothing until the next :func:`plugin.pagerelease.trim_heap` (seen in CI: a freed 96 MiB
    array left the worker's resident size unchanged). True when set; False where the C library is
    not glibc (nothing changed)."""
    from plugin.pagerelease import set_heap_trimming, trim_heap
    mallopt = _mallopt()
    if mallopt is None:
        return False
    set_heap_trimming(True)
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    if not ok:
        LOG.debug("mallopt(M_MMAP_THRESHOLD) refused: freed arrays may stay in the worker")
    trim_heap()
    return ok


#: glibc's malloc tunable that backs its mmapped blocks and heap with transparent huge pages
#: (``madvise(MADV_HUGEPAGE)``; glibc >= 2.35). With the fixed mmap threshold above, every
#: volume-sized array is a fresh mapping that the kernel faults in page by page: 4 KiB pages made
#: that 0.2-0.5 s of system time per step (background removal of the 2-echo 512 x 512 x 60 study:
#: 224,000 page faults, 0.66 s, against 67,000 and 0.45 s with the tunable; numpy's own
#: MADV_HUGEPAGE on its arrays does not reach most of them); the whole analysis of that study with
#: its results 390,000 -> 200,000 faults. Peak RSS is unchanged (349.5 against 347.4 MiB on that
#: study): benchmarks/load.md "Huge pages for the worker's malloc".
HUGETLB_TUNABLE = "glibc.malloc.hugetlb"


def glibc_version() -> Optional[tuple[int, int]]:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (ValueError, OSError, AttributeError):
        return None


def with_malloc_hugepages(env: Mapping[str, str], version: Optional[tuple[int, int]] = None) -> Optional[dict[str, str]]:
    """``env`` with ``glibc.malloc.hugetlb=1`` added to ``GLIBC_TUNABLES`` (other tunables kept),
    or None when there is nothing to do: not glibc or older than 2.35 (``version``: default this
    process's), or a ``glibc.malloc.hugetlb`` value already set (the site's own choice stands).
    glibc reads its tunables when a process starts, so the caller must exec a new program with it."""
    version = glibc_version() if version is None else version
    if version is None or version < (2, 35):
        return None
    current = env.get("GLIBC_TUNABLES", "")
    if any(item.split("=", 1)[0] == HUGETLB_TUNABLE for item in current.split(":") if item):
        return None
    out = dict(env)
    out["GLIBC_TUNABLES"] = ":".join([t for t in current.split(":") if t] + [f"{HUGETLB_TUNABLE}=1"])
    return out
