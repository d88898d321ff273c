"""The running node: Storage SCP -> durable spool -> completion -> routing -> queue.

``Node.start()`` first reconciles what a previous run left behind (the restart guarantee):
* temporary spool files (never acknowledged) are removed;
* a study whose spooled instances are not all in a version manifest is made due again (it will
  complete after the quiet period and get a new version);
* every version without a final state is put back on the queue unless it is already there;
* every pending outbox entry of an analysed version is put back on the queue unless it is there.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from dicom_io.read.files import read_tags

from dicom_io.net.scp import (STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, AccessPolicy, ReceivedInstance,
                              StorageSCP, server_ssl_context)

from plugin.service.completion import CompletionTracker
from plugin.service.config import Config
from plugin.service.queue import ServiceQueue, make_queue, run_consumer
from plugin.service.routing import SeriesFacts, route
from plugin.service.spool import Spool, atomic_write_json, safe_uid
from plugin.service.state import StateLayout

LOG = logging.getLogger(__name__)
_LOCKED_HERE: set[str] = set()  # state dirs locked by this process (POSIX locks are per process)


def series_facts(spool_study: Path, series_dir: str, first_file: Path, origin: dict) -> SeriesFacts:
    ds = read_tags(first_file, ["SeriesInstanceUID", "StudyInstanceUID", "Modality", "Manufacturer",
                                "SeriesDescription", "ImageType"])
    ds = {k: v for k, v in ds.items() if v is not None}
    it = ds.get("ImageType", [])
    image_type = (str(it),) if isinstance(it, str) else tuple(str(v) for v in it)
    return SeriesFacts(series_instance_uid=str(ds.get("SeriesInstanceUID", series_dir)),
                       modality=str(ds.get("Modality", "")), manufacturer=str(ds.get("Manufacturer", "")),
                       series_description=str(ds.get("SeriesDescription", "")), image_type=image_type,
                       calling_ae=origin.get("calling_ae", ""), called_ae=origin.get("called_ae", ""))


class Node:
    def __init__(self, config: Config, *, with_workers: bool | None = None):
        self.config = config
        self.layout = StateLayout(config.state_dir)
        self.layout.create()
        self.spool = Spool(self.layout.spool, min_free_mb=config.node.min_free_mb)
        self.tracker = CompletionTracker(config.completion.quiet_period_s, config.completion.release_grace_s)
        self.queue: ServiceQueue = make_queue(config)
        self.with_workers = config.queue.workers > 0 if with_workers is None else with_workers
        self.consumer = None
        self._origins_written: set[tuple[str, str]] = set()
        self._complete_lock = threading.Lock()
        tls = config.node.tls
        ssl_ctx = server_ssl_context(tls.cert_file, tls.key_file, tls.ca_file, tls.require_client_cert) if tls else None
        self.scp = StorageSCP(
            config.node.ae_title, config.node.host, config.node.port, self.on_instance,
            on_association_end=self.on_association_end,
            policy=AccessPolicy(config.node.allowed_calling_ae_titles, config.node.allowed_networks),
            ssl_context=ssl_ctx, maximum_associations=config.node.max_associations)

    # -- receiving (called from pynetdicom's association threads) ----------------------------
    def on_instance(self, inst: ReceivedInstance) -> int:
        study, series = safe_uid(inst.study_instance_uid), safe_uid(inst.series_instance_uid)
        try:
            outcome = self.spool.store(inst.study_instance_uid, inst.series_instance_uid,
                                       inst.sop_instance_uid, inst.encoded)
            key = (study, series)
            if key not in self._origins_written:
                self.spool.write_series_origin(inst.study_instance_uid, inst.series_instance_uid, {
                    "calling_ae": inst.calling_ae_title, "called_ae": inst.called_ae_title,
                    "address": inst.peer_address, "received": time.time()})
                self._origins_written.add(key)
        except OSError as exc:
            LOG.warning("instance %s of study %s not stored (%s): answering Out of Resources",
                        inst.sop_instance_uid, inst.study_instance_uid, exc)
            return STATUS_OUT_OF_RESOURCES
        if outcome.new:
            self.tracker.instance_arrived(study, inst.association_id)
        LOG.debug("stored %s (study %s, from %s)", inst.sop_instance_uid, inst.study_instance_uid,
                  inst.calling_ae_title)
        return STATUS_SUCCESS

    def on_association_end(self, association_id: int, how: str) -> None:
        self.tracker.association_ended(association_id)

    # -- completion -> version -> queue ---------------------------------------------------------
    def complete_study(self, study: str) -> int | None:
        """Snapshot a new version of ``study`` if it has instances not in the last one; enqueue it."""
        with self._complete_lock:
            instances = self.spool.instances(study)
            versions = self.layout.versions(study)
            last = self.layout.manifest(study, versions[-1]) if versions else None
            if not instances or (last is not None and set(last["instances"]) == set(instances)):
                return None
            version = (versions[-1] + 1) if versions else 1
            by_series: dict[str, list[str]] = {}
            for rel in instances:
                by_series.setdefault(rel.split("/", 1)[0], []).append(rel)
            series_docs, analyse, dests, study_uid = [], [], [], None
            spool_study = self.layout.spool / study
            for sdir, rels in sorted(by_series.items()):
                try:
                    facts = series_facts(spool_study, sdir, spool_study / rels[0],
                                         self.spool.series_origin(spool_study, sdir))
                    if study_uid is None:
                        study_uid = str(read_tags(spool_study / rels[0], ["StudyInstanceUID"])["StudyInstanceUID"])
                    decision = route(self.config, facts)
                except Exception as exc:  # unreadable header: ignore this series, say why
                    facts = SeriesFacts(series_instance_uid=sdir)
                    from plugin.service.routing import RouteDecision
                    decision = RouteDecision("ignore", "<unreadable>", (), f"cannot read header: {exc}")
                doc = {"series_dir": sdir, "n_instances": len(rels), "action": decision.action,
                       "rule": decision.rule, "reason": decision.reason,
                       "destinations": list(decision.destinations), **{
                           k: (list(v) if isinstance(v, tuple) else v) for k, v in facts.__dict__.items()}}
                series_docs.append(doc)
                if decision.action == "analyse":
                    analyse.extend(rels)
                    dests.extend(d for d in decision.destinations if d not in dests)
                else:
                    LOG.info("study %s series %s ignored (rule %s): %s", study_uid or study,
                             facts.series_instance_uid, decision.rule, decision.reason)
            manifest = {"study": study, "study_instance_uid": study_uid or study, "version": version,
                        "created": time.time(), "instances": instances, "analyse_instances": analyse,
                        "series": series_docs, "destinations": dests}
            atomic_write_json(self.layout.manifest_path(study, version), manifest)
            if not analyse:
                reasons = "; ".join(f"{s['series_instance_uid']}: {s['reason']}" for s in series_docs)
                self.layout.write_result(study, version, {"state": "ignored", "reason": reasons,
                                                          "finished": time.time()})
                LOG.info("study %s v%d: nothing to analyse (%s)", manifest["study_instance_uid"], version, reasons)
            else:
                self.queue.analyse(study, version)
                LOG.info("study %s v%d complete: %d instance(s), %d to analyse, queued",
                         manifest["study_instance_uid"], version, len(instances), len(analyse))
            return version

    def step(self) -> list[int]:
        out = []
        for study in self.tracker.due():
            try:
                v = self.complete_study(study)
            except Exception:
                LOG.exception("completing study %s failed; will retry", study)
                self.tracker.instance_arrived(study)
                continue
            if v is not None:
                out.append(v)
        return out

    # -- restart ------------------------------------------------------------------------------
    def reconcile(self) -> dict:
        counts = {"tmp_removed": self.spool.clean_tmp(), "studies_due": 0, "requeued": 0, "redelivered": 0}
        queued = self.queue.queued_keys()
        for study in self.spool.studies():
            versions = self.layout.versions(study)
            last = self.layout.manifest(study, versions[-1]) if versions else None
            if last is None or set(last["instances"]) != set(self.spool.instances(study)):
                self.tracker.instance_arrived(study)
                counts["studies_due"] += 1
        for study in self.layout.studies():
            for v in self.layout.versions(study):
                if self.layout.result(study, v) is None and self.layout.manifest(study, v) is not None:
                    if self.queue.ensure_analyse(study, v, queued):
                        counts["requeued"] += 1
        for p in sorted(self.layout.outbox_pending.glob("*.json")):
            entry = json.loads(p.read_text())
            res = self.layout.result(entry["study"], entry["version"])
            if res and res.get("state") == "analysed" and entry["id"] in res.get("outbox", []):
                if self.queue.ensure_deliver(entry["id"], queued):
                    counts["redelivered"] += 1
        return counts

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
        counts = self.reconcile()
        if any(counts.values()):
            LOG.warning("restart reconciliation: %s", counts)
        if self.with_workers:
            q = self.config.queue
            self.consumer = run_consumer(self.queue, q.workers, q.worker_type, q.worker_nice, embedded=True)
            self.consumer.start()
        self.scp.start()
        atomic_write_json(self.layout.node_file, {
            "pid": os.getpid(), "ae_title": self.config.node.ae_title, "host": self.config.node.host,
            "port": self.scp.port, "started": time.time(), "config": self.config.source})

    def run(self, stop: threading.Event, poll_s: float = 0.1, health_every_s: float = 5.0) -> None:
        last_health = time.monotonic()
        while not stop.is_set():
            self.step()
            if self.consumer is not None and time.monotonic() - last_health > health_every_s:
                self.consumer.check_worker_health()  # restart dead worker processes
                last_health = time.monotonic()
            stop.wait(poll_s)

    def stop(self) -> None:
        self.scp.stop()
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None
        if getattr(self, "_lock_fh", None) is not None:
            self._lock_fh.close()  # releases the lock
            self._lock_fh = None
            _LOCKED_HERE.discard(str(self.layout.root.resolve()))
