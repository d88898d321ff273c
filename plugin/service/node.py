"""The running node: Storage SCP -> durable spool -> completion -> routing -> queue.

Receiving (:mod:`.receive`) records each series' facts on its first instance in
``spool/<study>/<series>/series.json``, durably and before the instance itself, so every spooled
instance has its series record. Completion routes from these records; no header is read back from
disk until the worker's one ``scan`` builds the volumes. With ``[receive] processes`` > 1, receiver
processes listen on the same port beside the node's own Storage SCP (:mod:`.receivers`) and report
every instance they stored, and every association end, to this process's completion tracker.

``Node.start()`` first reconciles what a previous run left behind (the restart guarantee), and the
running node does so again every ``[node] reconcile_interval_s`` (:mod:`.reconcile`): whatever was
accepted and is neither queued nor done is queued again, e.g. after a full disk, without a restart.
The same periodic pass re-creates the disk reserve (:mod:`.diskspace`) and, every
``[retention] interval_s``, removes delivered studies (:mod:`.retention`). Counters and gauges are
served to Prometheus when ``[metrics] port`` is set (:mod:`.metrics`).
"""
from __future__ import annotations

import logging
import os
import threading
import time


from plugin.pipeline import analyze_paths
from plugin.service import permissions, speculation
from plugin.service.completion import CompletionTracker
from plugin.service.config import Config
from plugin.service.diskspace import DiskReserve, is_disk_full
from plugin.service.receive import InstanceReceiver, StudyLock, series_record  # noqa: F401 (series_record: API)
from plugin.service.receivers import ReceiverPool, storage_scp
from plugin.service.metrics import NodeMetrics
from plugin.service.queue import ServiceQueue, make_queue, run_consumer
from plugin.service.reconcile import format_counts, reconcile
from plugin.service.retention import run_retention
from plugin.service.routing import RouteDecision, SeriesFacts, route
from plugin.service.spool import Spool, atomic_write_json
from plugin.service.state import StateLayout
from plugin.service.worker import AnalysisFn

LOG = logging.getLogger(__name__)
_LOCKED_HERE: set[str] = set()  # state dirs locked by this process (POSIX locks are per process)

def facts_from_record(record: dict) -> SeriesFacts:
    return SeriesFacts(series_instance_uid=record["series_instance_uid"], modality=record["modality"],
                       manufacturer=record["manufacturer"], series_description=record["series_description"],
                       image_type=tuple(record["image_type"]), calling_ae=record["calling_ae"],
                       called_ae=record["called_ae"])


def route_series(config: Config, series_dir: str, record: dict | None) -> tuple[SeriesFacts, RouteDecision]:
    """Route one spooled series from its recorded facts; a series without usable facts is ignored
    with the reason (status shows it)."""
    if record is None:  # spooled by a node that did not record series facts on receipt
        return SeriesFacts(series_instance_uid=series_dir), RouteDecision(
            "ignore", "<no series record>", (), "no series facts were recorded on receipt; send the series again")
    if "unreadable" in record:
        return SeriesFacts(series_instance_uid=record["series_instance_uid"]), RouteDecision(
            "ignore", "<unreadable>", (), record["unreadable"])
    facts = facts_from_record(record)
    return facts, route(config, facts)


class Node:
    def __init__(self, config: Config, *, with_workers: bool | None = None, analyse: AnalysisFn = analyze_paths):
        """``analyse`` is what the embedded workers run on each study version: the pipeline;
        tests pass a stand-in here."""
        self.config = config
        # umask and modes first: everything below (spool, queue database, results) is created
        # owner-only, or group-readable for [storage] group
        self.modes = permissions.apply(config.state_dir, config.storage.group)
        self.layout = StateLayout(config.state_dir)
        self.layout.create()
        self.spool = Spool(self.layout.spool, min_free_mb=config.node.min_free_mb, file_mode=self.modes.file,
                           file_gid=self.modes.gid)
        self.tracker = CompletionTracker(config.completion.quiet_period_s, config.completion.release_grace_s)
        self.queue: ServiceQueue = make_queue(config, analyse=analyse)
        self.with_workers = config.queue.workers > 0 if with_workers is None else with_workers
        self.consumer = None
        self._complete_lock = threading.Lock()
        # set at every association end: the loop (:meth:`run`) looks at once for a released study
        # (its speculative analysis starts then, not at the next poll: issue 15)
        self._wake = threading.Event()
        self.reserve = DiskReserve(config.state_dir, config.node.reserve_mb)
        # receiving and retention never touch one study at once, in any of the receiving processes
        self.guard = StudyLock(self.layout.spool / ".locks")
        self.metrics = NodeMetrics(self.layout, queue_depth=self._queue_depth, reserve=self.reserve)
        self.metrics_port: int | None = None
        self._next_reconcile = self._next_retention = 0.0
        self.on_instance = InstanceReceiver(self.spool, self.guard, self._stored, self._refused)
        self.receivers = ReceiverPool(config, on_stored=self._stored, on_refused=self._refused,
                                      on_association_end=self.on_association_end)
        self.scp = storage_scp(config, self.on_instance, on_association_end=self.on_association_end,
                               dispatch=self.receivers.dispatch if self.receivers.size else None,
                               on_refused=self._refused)

    # -- receiving: this process's association threads and the receiver processes' reports -----
    def _stored(self, study: str | None, association_id, n: int = 1) -> None:
        """``n`` instances are durable in the spool (``study`` None: identical resends, nothing new)."""
        if study is not None:
            self.tracker.instance_arrived(study, association_id)
        self.metrics.received.inc(n)

    def _refused(self, reason: str) -> None:
        self.metrics.refused.labels(reason).inc()

    def on_association_end(self, association_id, how: str) -> None:
        self.tracker.association_ended(association_id)
        self._wake.set()

    # -- completion -> version -> queue ---------------------------------------------------------
    def _plan(self, study: str) -> dict | None:
        """The manifest a version of ``study`` would get now (routing applied; not yet written, no
        ``version``/``created``), or None when there is nothing new since the last version.
        Called under ``_complete_lock``."""
        instances = self.spool.instances(study)
        versions = self.layout.versions(study)
        last = self.layout.manifest(study, versions[-1]) if versions else None
        if not instances or (last is not None and set(last["instances"]) == set(instances)):
            return None
        by_series: dict[str, list[str]] = {}
        for rel in instances:
            by_series.setdefault(rel.split("/", 1)[0], []).append(rel)
        series_docs, analyse, dests, study_uid = [], [], [], None
        for sdir, rels in sorted(by_series.items()):
            record = self.spool.series_record(study, sdir)
            facts, decision = route_series(self.config, sdir, record)
            study_uid = study_uid or (record or {}).get("study_instance_uid")
            doc = {"series_dir": sdir, "n_instances": len(rels), "action": decision.action,
                   "rule": decision.rule, "reason": decision.reason,
                   "destinations": list(decision.destinations), **{
                       k: (list(v) if isinstance(v, tuple) else v) for k, v in facts.__dict__.items()}}
            series_docs.append(doc)
            if decision.action == "analyse":
                analyse.extend(rels)
                dests.extend(d for d in decision.destinations if d not in dests)
        return {"study": study, "study_instance_uid": study_uid or study, "base_version": versions[-1] if versions else 0,
                "instances": instances, "analyse_instances": analyse, "series": series_docs, "destinations": dests}

    def complete_study(self, study: str) -> int | None:
        """Snapshot a new version of ``study`` if it has instances not in the last one; enqueue it."""
        with self._complete_lock:
            plan = self._plan(study)
            if plan is None:
                return None
            version = plan.pop("base_version") + 1
            for s in plan["series"]:
                if s["action"] != "analyse":
                    LOG.info("study %s series %s ignored (rule %s): %s", plan["study_instance_uid"],
                             s["series_instance_uid"], s["rule"], s["reason"])
            manifest = {"study": study, "study_instance_uid": plan["study_instance_uid"], "version": version,
                        "created": time.time(), "instances": plan["instances"],
                        "analyse_instances": plan["analyse_instances"], "series": plan["series"],
                        "destinations": plan["destinations"]}
            analyse, series_docs = manifest["analyse_instances"], manifest["series"]
            atomic_write_json(self.layout.manifest_path(study, version), manifest)
            if not analyse:
                reasons = "; ".join(f"{s['series_instance_uid']}: {s['reason']}" for s in series_docs)
                self.layout.write_result(study, version, {"state": "ignored", "reason": reasons,
                                                          "finished": time.time()})
                LOG.info("study %s v%d: nothing to analyse (%s)", manifest["study_instance_uid"], version, reasons)
            else:
                self.queue.analyse(study, version)
                LOG.info("study %s v%d complete: %d instance(s), %d to analyse, queued",
                         manifest["study_instance_uid"], version, len(manifest["instances"]), len(analyse))
            return version

    def speculate(self, study: str) -> str | None:
        """At ``study``'s association release, before it is complete: queue a speculative analysis
        of the instances spooled now (:mod:`.speculation`); its results are staged and delivered
        only if completion snapshots exactly these instances. Returns the speculation's key."""
        with self._complete_lock:
            plan = self._plan(study)
            if plan is None or not plan["analyse_instances"]:
                return None
            key = speculation.instance_set_key(plan["instances"])
            files = speculation.SpeculationFiles(self.layout, study, key)
            if files.manifest_path.exists():   # this very set is speculated already
                return None
            atomic_write_json(files.manifest_path, {**plan, "key": key, "created": time.time()})
            self.queue.speculate(study, key)
            LOG.info("study %s released: %d instance(s) analysed speculatively during the completion grace",
                     plan["study_instance_uid"], len(plan["instances"]))
            return key

    def step(self) -> list[int]:
        if self.config.queue.speculative:
            for study in self.tracker.released():
                try:
                    self.speculate(study)
                except Exception:   # only a head start is lost: the study still completes as usual
                    LOG.exception("speculative start of study %s failed", study)
        out = []
        for study in self.tracker.due():
            try:
                v = self.complete_study(study)
            except Exception as exc:
                if is_disk_full(exc):  # no traceback for a full disk: it completes once space returns
                    LOG.warning("completing study %s: disk full (%s); will retry", study, exc)
                else:
                    LOG.exception("completing study %s failed; will retry", study)
                self.tracker.instance_arrived(study)
                continue
            if v is not None:
                out.append(v)
        return out

    # -- reconciliation, retention (at start-up and periodically) --------------------------------
    def reconcile(self, *, startup: bool = True) -> dict:
        return reconcile(self.config, self.layout, self.spool, self.queue, self.tracker, startup=startup).as_dict()

    def _queue_depth(self) -> tuple[int, int]:
        return self.queue.huey.pending_count(), self.queue.huey.scheduled_count()

    def _forget_study(self, study: str) -> None:
        """Retention removed ``study``: a later C-STORE into it starts afresh (series record and all)."""
        self.on_instance.forget_study(study)
        self.metrics.forget_study(study)

    def run_retention(self):
        report = run_retention(self.config, self.layout, self.spool, receiving=lambda: set(self.tracker.pending()),
                               guard=self.guard, on_removed=self._forget_study)
        for reason, n in report.removed_by_reason.items():
            self.metrics.removed.labels(reason).inc(n)
        return report

    def maintain(self, now: float | None = None) -> None:
        """The periodic pass: requeue stranded work, re-create the disk reserve, run retention."""
        now = time.monotonic() if now is None else now
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.config.node.reconcile_interval_s
            try:
                counts = reconcile(self.config, self.layout, self.spool, self.queue, self.tracker, startup=False)
                if counts.changed():
                    LOG.warning("periodic reconciliation requeued stranded work: %s", format_counts(counts))
                self.reserve.ensure(min_free_after_bytes=int(self.config.node.min_free_mb * 1e6))
                self.metrics.observe_finished()
            except Exception:
                LOG.exception("periodic reconciliation failed; next pass in %.0f s", self.config.node.reconcile_interval_s)
        if now >= self._next_retention:
            self._next_retention = now + self.config.retention.interval_s
            try:
                self.run_retention()
            except Exception:
                LOG.exception("retention pass failed; next pass in %.0f s", self.config.retention.interval_s)

    # -- lifecycle ----------------------------------------------------------------------------
    def _lock_state_dir(self) -> None:
        """One receiving node per state dir (two would race on completion and versions)."""
        import fcntl
        key = str(self.layout.root.resolve())
        busy = OSError(f"another borderphase node is already running on {self.layout.root}")
        if key in _LOCKED_HERE:
            raise busy
        self._lock_fh = open(self.layout.root / "node.lock", "w")
        try:  # a POSIX record lock: released at process death, not inherited by forked workers
            fcntl.lockf(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            self._lock_fh = None
            raise busy from None
        _LOCKED_HERE.add(key)

    def start(self) -> None:
        self._lock_state_dir()
        counts = reconcile(self.config, self.layout, self.spool, self.queue, self.tracker, startup=True)
        if counts.changed():
            LOG.warning("restart reconciliation: %s", format_counts(counts))
        self.reserve.ensure(min_free_after_bytes=int(self.config.node.min_free_mb * 1e6))
        if self.config.metrics.port is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics.host, self.config.metrics.port)
        self._next_reconcile = time.monotonic() + self.config.node.reconcile_interval_s
        if self.with_workers:
            q = self.config.queue
            self.consumer = run_consumer(self.queue, q.workers, q.worker_type, q.worker_nice, embedded=True,
                                         blas_threads=q.blas_threads,
                                         keep_memory=q.keep_freed_memory)
            self.consumer.start()
        self.scp.start()
        self.receivers.start(self.scp.port)
        atomic_write_json(self.layout.node_file, {
            "pid": os.getpid(), "ae_title": self.config.node.ae_title, "host": self.config.node.host,
            "port": self.scp.port, "started": time.time(), "config": self.config.source,
            "metrics_port": self.metrics_port})

    def run(self, stop: threading.Event, poll_s: float = 0.1, health_every_s: float = 5.0) -> None:
        last_health = last_rx_health = time.monotonic()
        while not stop.is_set():
            self.step()
            self.maintain()
            if self.consumer is not None and time.monotonic() - last_health > health_every_s:
                self.consumer.check_worker_health()  # restart dead worker processes
                last_health = time.monotonic()
            if self.receivers.size and time.monotonic() - last_rx_health > health_every_s:
                self.receivers.check_health()  # restart dead receiver processes
                last_rx_health = time.monotonic()
            if self._wake.wait(poll_s):   # an association ended: step again now (stop: within poll_s)
                self._wake.clear()

    def stop(self) -> None:
        self.receivers.stop()
        self.scp.stop()
        self.metrics.stop()
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None
        if getattr(self, "_lock_fh", None) is not None:
            self._lock_fh.close()  # releases the lock
            self._lock_fh = None
            _LOCKED_HERE.discard(str(self.layout.root.resolve()))
