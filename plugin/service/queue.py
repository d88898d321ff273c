"""The work queue: Huey (https://huey.readthedocs.io). Embedded default: ``SqliteHuey`` on
``<state_dir>/queue.sqlite3`` with fsync on commit, consumed by worker threads inside ``serve``.
Multi-machine mode: ``RedisHuey`` on ``[queue] redis_url``; any number of ``borderphase serve
--worker`` processes on other machines consume the same queue (Redis pops each task to exactly one
consumer). Three tasks exist:

* ``borderphase.analyse(study, version)``: analyse one study version (:mod:`.worker`) with the
  queue's ``analyse`` function (:func:`plugin.pipeline.analyze_paths` unless a test passes a stand-in);
* ``borderphase.deliver(entry_id)``: one outbox delivery retry (:mod:`.dispatch`), at a higher
  priority than analyses; on failure it reschedules itself with backoff, so the outbox drains as
  soon as the destination is back. The first attempt is made by the analysing worker itself;
* ``borderphase.speculate(study, key)``: a study's analysis started at its association release,
  before it is complete, delivered only if completion confirms its instances (:mod:`.speculation`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from huey import PriorityRedisHuey, SqliteHuey
from huey.api import Huey
from huey.exceptions import RetryTask

from plugin.pipeline import analyze_paths
from plugin.service.config import Config
from plugin.service.cputhreads import limit_blas_threads
from plugin.service.diskspace import is_disk_full
from plugin.service.dispatch import deliver_entry
from plugin.service.isolation import die_with_parent
from plugin.service.state import StateLayout
from plugin.service.memory import keep_freed_memory, return_freed_memory
from plugin.service.worker import AnalysisFn, ClaimBusy, analyse_version, preload_analysis_modules
from plugin.service.worker import speculate as speculate_version

LOG = logging.getLogger(__name__)

ANALYSE = "borderphase.analyse"
DELIVER = "borderphase.deliver"
SPECULATE = "borderphase.speculate"
CLAIM_RETRY_S = 5


def make_huey(config: Config) -> Huey:
    q = config.queue
    if q.backend == "redis":
        return PriorityRedisHuey(q.name, url=q.redis_url, results=False)  # needs Redis >= 5
    StateLayout(config.state_dir).create()
    return SqliteHuey(q.name, filename=str(StateLayout(config.state_dir).queue_db), results=False,
                      fsync=True, timeout=30)


@dataclass
class ServiceQueue:
    """The node's two tasks on one Huey instance. ``analyse_fn`` is the function the analysis task
    runs in this instance's consumers (threads, or processes forked from this one); a separate
    ``serve --worker`` process builds its own queue and so brings its own function."""

    config: Config
    huey: Huey
    analyse_fn: AnalysisFn = analyze_paths

    def __post_init__(self) -> None:
        config = self.config
        analyse_fn = self.analyse_fn

        def deliver_now(eid: str) -> None:
            delay = deliver_entry(config, eid)
            if delay is not None:
                deliver.schedule(args=(eid,), delay=delay)

        @self.huey.task(name=DELIVER, priority=10)  # retries go before queued analyses
        def deliver(eid: str) -> None:
            deliver_now(eid)

        @self.huey.task(name=ANALYSE, retries=10_000, retry_delay=5, priority=0)
        def analyse(study: str, version: int) -> str:
            try:
                # first delivery attempt right after the analysis, in the same worker (the outbox
                # entry is already durable); a failure schedules retries on the queue
                return analyse_version(config, study, version, enqueue_delivery=deliver_now, analyse=analyse_fn)
            except ClaimBusy as exc:  # a live worker has it: look again later, quietly (no traceback)
                LOG.info("%s; will retry in %d s", exc, CLAIM_RETRY_S)
                raise RetryTask(delay=CLAIM_RETRY_S) from None

        @self.huey.task(name=SPECULATE, priority=0)   # no retries: the version's own task is the fallback
        def speculate(study: str, key: str) -> str:
            return speculate_version(config, study, key, enqueue_delivery=deliver_now, analyse=analyse_fn)

        self.analyse = analyse
        self.deliver = deliver
        self.speculate = speculate

    # -- queue inspection (restart reconciliation, status) ----------------------------------
    def queued_keys(self) -> set[tuple]:
        keys = set()
        for task in list(self.huey.pending()) + list(self.huey.scheduled()):
            keys.add((task.name, tuple(task.args)))
        return keys

    def ensure_analyse(self, study: str, version: int, queued: set[tuple] | None = None) -> bool:
        queued = self.queued_keys() if queued is None else queued
        if (ANALYSE, (study, version)) in queued:
            return False
        self.analyse(study, version)
        return True

    def ensure_deliver(self, eid: str, queued: set[tuple] | None = None) -> bool:
        queued = self.queued_keys() if queued is None else queued
        if (DELIVER, (eid,)) in queued:
            return False
        self.deliver(eid)
        return True


def make_queue(config: Config, *, analyse: AnalysisFn = analyze_paths) -> ServiceQueue:
    """The configured queue whose analysis task runs ``analyse`` (the pipeline; tests pass a stand-in)."""
    return ServiceQueue(config, make_huey(config), analyse)


class _DiskFullWithoutTraceback(logging.Filter):
    """Huey logs a full traceback each time its SQLite queue cannot commit (``database or disk is
    full``) while the disk is full; one line says the same (the node's periodic reconcile repairs the
    queue once space returns, :mod:`.reconcile`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_disk_full(record.exc_info[1]):
            record.msg = f"{record.getMessage()} ({record.exc_info[1]}; retried when space returns)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_disk_full_tracebacks() -> None:
    """On huey's loggers and on the root handlers (huey names a logger per worker)."""
    targets = [logging.getLogger(n) for n in ("huey", "huey.consumer", "huey.consumer.Worker")]
    targets += logging.getLogger().handlers
    for t in targets:
        if not any(isinstance(f, _DiskFullWithoutTraceback) for f in t.filters):
            t.addFilter(_DiskFullWithoutTraceback())


def run_consumer(queue: ServiceQueue, workers: int, worker_type: str = "process", nice: int = 10,
                 embedded: bool = True, blas_threads: int = 1, keep_memory: bool = False):
    """Create a Huey consumer for this queue (``.start()`` embedded or ``.run()`` standalone).

    With ``worker_type="process"`` the analysis runs in forked worker processes at a lower CPU
    priority (``nice``), so that receiving (the C-STORE SCP threads of the parent) keeps the CPU it
    needs and never waits on the analysis for the GIL; embedded workers die with the node.
    ``blas_threads``: the BLAS pools of the analysing process(es) (:mod:`.cputhreads`; 0: as loaded).
    ``keep_memory``: the analysing process keeps its freed memory for the next study
    (:func:`.memory.keep_freed_memory`) instead of returning it (:func:`.memory.return_freed_memory`).
    """
    set_memory = keep_freed_memory if keep_memory else return_freed_memory
    from huey.consumer import Worker
    quiet_disk_full_tracebacks()
    # max_delay: an idle worker polls the queue every 0.1 s (was 0.5: 0.25 s of queue wait on average)
    consumer = queue.huey.create_consumer(workers=max(workers, 1), worker_type=worker_type, periodic=False,
                                          initial_delay=0.05, backoff=1.5, max_delay=0.1, scheduler_interval=1,
                                          check_worker_health=True)
    if worker_type == "thread":
        return_freed_memory()   # the analysis runs in this process
        if blas_threads:
            preload_analysis_modules()   # so that every BLAS library the analysis uses is loaded, then limited
            limit_blas_threads(blas_threads)
    if worker_type == "process":
        original = consumer.environment.init_child

        def init_child(process):
            if embedded:
                die_with_parent()
            if isinstance(process, Worker):
                if nice:
                    os.nice(nice)
                set_memory()   # a long-lived worker: each study's arrays go back to the system, or stay for the next
                preload_analysis_modules()   # at start, not on the first study
                limit_blas_threads(blas_threads)   # after the imports: every BLAS library is loaded
            original(process)

        consumer.environment.init_child = init_child
    return consumer
