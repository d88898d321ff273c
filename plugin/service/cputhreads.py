"""BLAS threads of the analysis worker processes (issue 15: studies under load).

numpy and scipy each load an OpenBLAS whose thread pool has one thread per core; on a threaded
call (products above OpenBLAS's size threshold, e.g. the dipole fit's 10,000 x 30 background
designs) the calling thread and the pool busy-wait for each other. In a worker that already runs
its own threads (the QSM map beside the spot readings, the in-plane filters) beside a second
worker and the receivers, that spinning takes the cores the analysis needs:
``benchmarks/load.md`` (2026-12-02, h/load2) measured two concurrent analyses of the 2-echo study
at 8.6-15.9 CPU s each with the default pools and 4.4-6.4 CPU s with one BLAS thread (same
findings), on a main whose dipole fit still used those products. h/cpu3 has since taken them off
BLAS (``plugin/method/fitprojection.py``); on that main the limit changed nothing measurable
(5.7-6.4 vs 6.0-6.6 CPU s): it stays as the guard that keeps any threaded BLAS call from spinning
in a worker.

:func:`limit_blas_threads` sets the pools of the BLAS libraries loaded in this process (so call
it after the analysis modules are imported: :func:`plugin.service.worker.preload_analysis_modules`)
through threadpoolctl, the library made for this.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlasPool:
    """One BLAS library loaded in this process and its thread count after :func:`limit_blas_threads`."""

    library: str        # file name of the shared library
    internal_api: str   # openblas | mkl | blis ...
    threads_before: int
    threads_after: int


def limit_blas_threads(threads: int) -> list[BlasPool]:
    """Limit every BLAS library loaded in this process to ``threads`` threads (0: leave them at the
    library's default). Returns the pools seen; an empty list when threadpoolctl finds none."""
    if threads < 0:
        raise ValueError(f"BLAS threads must be >= 0, got {threads}")
    from threadpoolctl import threadpool_info, threadpool_limits
    before = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if threads:
        threadpool_limits(limits=threads, user_api="blas")
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"}
    pools = [BlasPool(library=i["filepath"].rsplit("/", 1)[-1], internal_api=i.get("internal_api", "?"),
                      threads_before=i["num_threads"], threads_after=after.get(i["filepath"], i["num_threads"]))
             for i in before]
    LOG.debug("BLAS pools: %s", ", ".join(f"{p.library} {p.threads_before} -> {p.threads_after}" for p in pools))
    return pools
