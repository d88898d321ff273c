"""The plugin's work: one durable Huey task per stable study, consumed by threads inside Orthanc.

Orthanc's change callback only enqueues (one SQLite insert); :func:`process_study` does the work
in a consumer thread: read the study through the REST API, route its series with the node's
rules (:func:`plugin.service.routing.route`), name the version (hash of the routed SOP Instance
UIDs), and unless that version is already final: copy its instances to a scratch folder, run the
pipeline in a child process (:mod:`.analysis`), record ``analysed``, store the results into the
study, record ``stored``. A :class:`plugin.service.state.Claim` keeps two threads (or a stale task
after a restart) off the same version.

Restart guarantee (:func:`reconcile`, run when Orthanc reports ``ORTHANC_STARTED``): tasks still in
the SQLite queue survive by themselves; a version whose record is not final (Orthanc died while
it ran: Huey had already taken the task off the queue) is queued again, and so is every study
Orthanc's change log shows as changed since the last start (a study that was still settling when
Orthanc died gets no STABLE_STUDY event after the restart).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from typing import Callable

from huey import SqliteHuey
from huey.api import Huey

from plugin.archive_plugin.analysis import AnalysisFailed, AnalysisInterrupted, run_child
from plugin.archive_plugin.orthanc_reader import (OrthancApi, OrthancApiError, StudyView, download, get_json,
                                                  read_study, version_key)
from plugin.archive_plugin.records import FINAL, PluginState
from plugin.archive_plugin.settings import PluginSettings
from plugin.archive_plugin.storing import StoreFailed, result_files, store_results
from plugin.service.routing import RouteDecision, route
from plugin.service.state import Claim, worker_identity

LOG = logging.getLogger(__name__)
TASK = "borderphase.orthanc_study"
_STUDY_CHANGES = ("StableStudy", "NewChildInstance", "NewStudy")


class ClaimBusy(Exception):
    """Another thread holds this study version; the task is retried later."""


@dataclass
class PluginContext:
    settings: PluginSettings
    api: OrthancApi
    state: PluginState


def _routed(ctx: PluginContext, view: StudyView) -> tuple[list, list[tuple[str, RouteDecision]]]:
    analyse, ignored = [], []
    for s in view.series:
        decision = route(ctx.settings.config, s.facts)
        if decision.action == "analyse":
            analyse.append(s)
        else:
            ignored.append((s.facts.series_instance_uid, decision))
    return analyse, ignored


def process_study(ctx: PluginContext, study_id: str) -> str:
    """Bring one Orthanc study's current version to a final state; returns what happened:
    ``stored`` | ``failed`` | ``ignored`` | ``already`` | ``gone``."""
    try:
        view = read_study(ctx.api, study_id)
    except OrthancApiError as exc:
        LOG.warning("borderphase: Orthanc study %s is gone, not analysed (%s)", study_id, exc)
        return "gone"
    routed, ignored = _routed(ctx, view)
    instances = [pair for s in routed for pair in s.instances]
    key = version_key(sop for _, sop in instances)
    uid, state = view.study_instance_uid, ctx.state
    record = state.record(uid, key)
    if record is not None and record.get("state") in FINAL:
        return "already"
    if not instances:
        reason = "; ".join(f"{series}: {d.reason or d.rule}" for series, d in ignored) or "no series"
        state.update(uid, key, state="ignored", orthanc_study=study_id, reason=reason, finished=time.time())
        LOG.info("borderphase: study %s: nothing to analyse (%s)", uid, reason)
        return "ignored"
    claim = Claim(state.record_path(uid, key).with_suffix(".claim"), ctx.settings.config.analysis.lease_s)
    if not claim.acquire():
        raise ClaimBusy(f"study {uid} version {key} is being analysed by another thread")
    try:
        record = state.record(uid, key) or {}
        if record.get("state") in FINAL:
            return "already"
        out = state.results_dir(uid, key)
        if record.get("state") != "analysed":
            record = _analyse(ctx, study_id, uid, key, routed, instances, record)
            if record["state"] == "failed":
                return "failed"
        files = [out / rel for rel in record.get("result_files", [])]
        try:
            ids = store_results(ctx.api, files, study_id)
        except (StoreFailed, OrthancApiError, OSError) as exc:
            state.update(uid, key, store_error=f"{type(exc).__name__}: {exc}")
            LOG.error("borderphase: results of study %s version %s not stored yet: %s (will retry)", uid, key, exc)
            raise
        state.update(uid, key, state="stored", result_instances=ids, finished=time.time(), store_error=None)
        LOG.warning("borderphase: study %s version %s: %d result object(s) stored in the study (%s lesion(s))",
                    uid, key, len(ids), record.get("n_lesions"))
        return "stored"
    finally:
        claim.release()


def _analyse(ctx: PluginContext, study_id: str, uid: str, key: str, routed, instances, record: dict) -> dict:
    state, config = ctx.state, ctx.settings.config
    started = time.time()
    state.update(uid, key, state="running", orthanc_study=study_id, n_instances=len(instances), started=started,
                 attempts=int(record.get("attempts", 0)) + 1,
                 series=[s.facts.series_instance_uid for s in routed])
    state.log_run({"study": uid, "version": key, "orthanc_study": study_id, "started": started,
                   "worker": worker_identity()})
    LOG.info("borderphase: analysing study %s version %s (%d instance(s))", uid, key, len(instances))
    out, scratch = state.results_dir(uid, key), state.input_dir(uid, key)
    shutil.rmtree(out, ignore_errors=True)   # leftovers of an interrupted run
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        paths = download(ctx.api, instances, scratch)
        state.update(uid, key, copied=time.time())
        findings = run_child(ctx.settings.python, paths, out, previous_sr_paths=state.previous_sr_paths(uid, key),
                             convention_rules=config.analysis.convention_rules,
                             qsm_series=config.analysis.qsm_series,
                             summary_encoding=config.analysis.summary_encoding)
    except (AnalysisFailed, OrthancApiError, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        LOG.error("borderphase: study %s version %s failed: %s", uid, key, reason)
        return state.update(uid, key, state="failed", reason=reason, finished=time.time())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    analyses = findings.get("analyses", [])
    files = result_files(out)
    return state.update(uid, key, state="analysed", analysed=time.time(),
                        n_analyses=len(analyses), n_lesions=sum(len(a.get("lesions", [])) for a in analyses),
                        skipped=findings.get("skipped", []),
                        result_files=[str(p.relative_to(out)) for p in files])


# -- the queue ----------------------------------------------------------------------------------
@dataclass
class PluginQueue:
    huey: Huey
    enqueue: Callable[[str], object]

    def queued_studies(self) -> set[str]:
        tasks = list(self.huey.pending()) + list(self.huey.scheduled())
        return {t.args[0] for t in tasks if t.name == TASK and t.args}

    def ensure(self, study_id: str, queued: set[str] | None = None) -> bool:
        """Queue ``study_id`` unless a task for it is already waiting."""
        queued = self.queued_studies() if queued is None else queued
        if study_id in queued:
            return False
        self.enqueue(study_id)
        queued.add(study_id)
        return True

    def consumer(self, workers: int):
        """Huey consumer threads (not processes: Orthanc's process must not fork Python workers).
        Huey's consumer installs SIGINT/SIGTERM handlers on ``start``; inside Orthanc those
        signals are Orthanc's, so that step is skipped."""
        consumer = self.huey.create_consumer(workers=workers, worker_type="thread", periodic=False,
                                             initial_delay=0.1, backoff=1.5, max_delay=1.0, scheduler_interval=1)
        consumer._set_signal_handlers = lambda: None
        return consumer


def make_queue(ctx: PluginContext) -> PluginQueue:
    ctx.state.create()
    huey = SqliteHuey(ctx.settings.config.queue.name, filename=str(ctx.state.queue_db), results=False,
                      fsync=True, timeout=30)

    @huey.task(name=TASK, retries=20, retry_delay=10)
    def analyse_study(study_id: str) -> str:
        try:
            return process_study(ctx, study_id)
        except ClaimBusy as exc:
            LOG.info("borderphase: %s; will retry", exc)
            raise
        except AnalysisInterrupted as exc:
            LOG.warning("borderphase: Orthanc study %s: %s", study_id, exc)
            raise

    return PluginQueue(huey, analyse_study)


def reconcile(ctx: PluginContext, queue: PluginQueue) -> dict:
    """Put back what a previous run left unfinished; see the module docstring."""
    counts = {"unfinished": 0, "changed": 0}
    queued = queue.queued_studies()
    for record in ctx.state.records():
        if record.get("state") not in FINAL and record.get("orthanc_study"):
            counts["unfinished"] += queue.ensure(record["orthanc_study"], queued)
    last = ctx.state.last_change()
    if last is None:   # first start on this archive: start from now, do not analyse its history
        ctx.state.set_last_change(int(get_json(ctx.api, "/changes?last").get("Last", 0)))
        return counts
    since, studies = last, set()
    while True:
        page = get_json(ctx.api, f"/changes?since={since}&limit=1000")
        for change in page.get("Changes", []):
            if change.get("ResourceType") == "Study" and change.get("ChangeType") in _STUDY_CHANGES:
                studies.add(change["ID"])
        since = int(page.get("Last", since))
        if page.get("Done", True) or not page.get("Changes"):
            break
    for study_id in sorted(studies):
        counts["changed"] += queue.ensure(study_id, queued)
    ctx.state.set_last_change(since)
    return counts
