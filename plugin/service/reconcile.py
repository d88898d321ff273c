"""Reconciliation: put back on the queue whatever was accepted and is neither queued nor done.

The durable state (spool, manifests, results, outbox) is the truth; the queue is only a to-do list
that can lose entries: a restart, a worker killed mid-task, or a full disk on which SQLite could not
write a retry. :func:`reconcile` compares the two and repairs the queue. The node runs it at start-up
and then every ``[node] reconcile_interval_s`` while it runs, so a study stranded by a full disk is
analysed once space returns, without a restart.

* a study whose spooled instances are not all in a version manifest is made due again (it completes
  after the quiet period and gets a new version);
* every version without a final state is queued unless it is queued already, or (periodic pass) a
  live worker holds its claim;
* every pending outbox entry of an analysed version is queued for delivery unless it is queued
  already, or (periodic pass) it is not overdue (a delivery may be in progress);
* at start-up: temporary spool files (never acknowledged) are removed; in the periodic pass, only
  the files of C-STOREs whose association ended mid-instance (idle for
  ``ABANDONED_AFTER_TIMEOUTS`` x ``[node] network_timeout_s``).

While free space is below ``[node] min_free_mb`` nothing is requeued (it would fail again at once);
the pass says so and the next one after space returns does it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from plugin.service.completion import CompletionTracker
from plugin.service.config import Config
from plugin.service.diskspace import free_bytes, is_disk_full
from plugin.service.queue import ServiceQueue
from plugin.service.spool import Spool, read_json
from plugin.service.state import Claim, StateLayout

LOG = logging.getLogger(__name__)


@dataclass
class ReconcileCounts:
    tmp_removed: int = 0
    studies_due: int = 0
    requeued: int = 0
    redelivered: int = 0
    waiting_for_space: int = 0   # versions / deliveries left for a later pass: the disk is full
    claimed: int = 0             # versions a live worker is analysing (periodic pass)

    def as_dict(self) -> dict:
        return asdict(self)

    def changed(self) -> bool:
        return bool(self.tmp_removed or self.studies_due or self.requeued or self.redelivered)


ABANDONED_AFTER_TIMEOUTS = 3  # a receive file idle for this many [node] network_timeout_s is abandoned


def _claim_live(config: Config, layout: StateLayout, study: str, version: int) -> bool:
    claim = Claim(layout.study_dir(study) / f"v{version:04d}.claim", config.analysis.lease_s)
    if not claim.path.exists():
        return False
    return not claim._stale(read_json(claim.path))


def reconcile(config: Config, layout: StateLayout, spool: Spool, queue: ServiceQueue, tracker: CompletionTracker,
              *, startup: bool) -> ReconcileCounts:
    counts = ReconcileCounts()
    if startup:
        counts.tmp_removed = spool.clean_tmp()
    else:  # files of C-STOREs whose association ended mid-instance (a live one writes or times out)
        counts.tmp_removed = spool.remove_abandoned_receive_files(
            ABANDONED_AFTER_TIMEOUTS * config.node.network_timeout_s)
    receiving = set(tracker.pending())
    for study in spool.studies():
        if study in receiving:
            continue
        instances = spool.instances(study)
        if not instances:  # only a series record (a crash before its first instance was stored)
            continue
        versions = layout.versions(study)
        last = layout.manifest(study, versions[-1]) if versions else None
        if last is None or set(last["instances"]) != set(instances):
            tracker.instance_arrived(study)
            counts.studies_due += 1

    space_ok = free_bytes(layout.root) >= config.node.min_free_mb * 1e6
    try:
        queued = queue.queued_keys()
    except Exception as exc:  # a full disk can make even reading SQLite fail
        LOG.warning("reconcile: cannot read the queue (%s); next pass", exc)
        return counts
    now = time.time()
    grace_s = max(60.0, 2 * config.dispatch.timeout_s)
    try:
        for study in layout.studies():
            for v in layout.versions(study):
                if layout.result(study, v) is not None or layout.manifest(study, v) is None:
                    continue
                if not startup and _claim_live(config, layout, study, v):
                    counts.claimed += 1
                elif not space_ok:
                    counts.waiting_for_space += 1
                elif queue.ensure_analyse(study, v, queued):
                    counts.requeued += 1
        for p in sorted(layout.outbox_pending.glob("*.json")):
            entry = read_json(p)
            if entry is None:
                continue
            res = layout.result(entry["study"], entry["version"])
            if not (res and res.get("state") == "analysed" and entry["id"] in res.get("outbox", [])):
                continue
            if not startup and float(entry.get("next_attempt") or 0) > now - grace_s:
                continue  # not overdue: its retry is due soon, or a delivery is under way
            if not space_ok:
                counts.waiting_for_space += 1
            elif queue.ensure_deliver(entry["id"], queued):
                counts.redelivered += 1
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        LOG.warning("reconcile: disk full while queueing (%s); next pass", exc)
    if counts.waiting_for_space:
        LOG.warning("reconcile: %d accepted item(s) wait for free space (%.0f MB needed under %s)",
                    counts.waiting_for_space, config.node.min_free_mb, layout.root)
    return counts


def format_counts(counts: ReconcileCounts) -> str:
    return json.dumps({k: v for k, v in counts.as_dict().items() if v}, sort_keys=True)
