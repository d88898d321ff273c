"""The work queue: Huey (https://huey.readthedocs.io). Embedded default: ``SqliteHuey`` on
``<state_dir>/queue.sqlite3`` with fsync on commit, consumed by worker threads inside ``serve``.
Multi-machine mode: ``RedisHuey`` on ``[queue] redis_url``; any number of ``borderphase serve
--worker`` processes on other machines consume the same queue (Redis pops each task to exactly one
consumer). Two tasks exist:

* ``borderphase.analyse(study, version)``: analyse one study version (:mod:`.worker`);
* ``borderphase.deliver(entry_id)``: one outbox delivery (:mod:`.dispatch`); on failure it
  reschedules itself with backoff, so the outbox drains as soon as the destination is back.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from huey import RedisHuey, SqliteHuey
from huey.api import Huey

from .config import Config
from .dispatch import deliver_entry
from .state import StateLayout
from .worker import ClaimBusy, analyse_version

LOG = logging.getLogger(__name__)

ANALYSE = "borderphase.analyse"
DELIVER = "borderphase.deliver"


def make_huey(config: Config) -> Huey:
    q = config.queue
    if q.backend == "redis":
        return RedisHuey(q.name, url=q.redis_url, results=False)
    StateLayout(config.state_dir).create()
    return SqliteHuey(q.name, filename=str(StateLayout(config.state_dir).queue_db), results=False,
                      fsync=True, timeout=30)


@dataclass
class ServiceQueue:
    config: Config
    huey: Huey

    def __post_init__(self) -> None:
        config = self.config

        @self.huey.task(name=DELIVER)
        def deliver(eid: str) -> None:
            delay = deliver_entry(config, eid)
            if delay is not None:
                deliver.schedule(args=(eid,), delay=delay)

        @self.huey.task(name=ANALYSE, retries=10_000, retry_delay=5)
        def analyse(study: str, version: int) -> str:
            try:
                return analyse_version(config, study, version, enqueue_delivery=lambda eid: deliver(eid))
            except ClaimBusy as exc:
                LOG.info("%s; will retry", exc)
                raise

        self.analyse = analyse
        self.deliver = deliver

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


def make_queue(config: Config) -> ServiceQueue:
    return ServiceQueue(config, make_huey(config))


def run_consumer(queue: ServiceQueue, workers: int, worker_type: str = "thread"):
    """Create a Huey consumer for this queue (``.start()`` embedded or ``.run()`` standalone)."""
    return queue.huey.create_consumer(workers=max(workers, 1), worker_type=worker_type, periodic=False,
                                      initial_delay=0.05, backoff=1.5, max_delay=0.5, scheduler_interval=1,
                                      check_worker_health=True)
