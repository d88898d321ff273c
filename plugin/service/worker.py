"""The analysis task: one study version -> ``results/<study>/vNNNN`` -> outbox entries.

:func:`run_analysis` is the one place the node calls the method: :func:`plugin.pipeline.analyze_paths`,
imported here, unless the caller passes another function with the same signature (tests pass a
small stand-in through ``Node(config, analyse=...)`` / ``make_queue(config, analyse=...)``).
"""
from __future__ import annotations

import inspect
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from dicom_io.vocabulary import DEFAULT_SUMMARY_ENCODING

from plugin.pipeline import analyze_paths
from plugin.service.config import Config
from plugin.service.diskspace import DiskReserve, is_disk_full, write_despite_full
from plugin.service.dispatch import EarlyDelivery, create_outbox_entries
from plugin.service.speculation import (CLAIM_WAIT_S, SpeculationAbandoned, SpeculationFiles, SpeculationRunning,
                                        StagedDelivery, Verdict, acquire_within, discard_stale, move_results,
                                        take_staged, verdict, version_claim)
from plugin.service.spool import Spool, atomic_write_json, read_json
from plugin.service.state import Claim, StateLayout, previous_srs, worker_identity

LOG = logging.getLogger(__name__)

AnalysisFn = Callable[..., dict]
"""``fn(paths, out_dir, *, previous_sr_paths=..., convention_rules=...) -> findings document``:
the signature of :func:`plugin.pipeline.analyze_paths`."""


class ClaimBusy(Exception):
    """Another live worker holds this study version; the task is retried later."""


def run_analysis(config: Config, paths: list[Path], out_dir: Path, previous_sr_paths: Sequence[Path] = (), *,
                 analyse: AnalysisFn = analyze_paths, on_result_file: Callable[[Path], None] | None = None,
                 stats: Optional[dict] = None) -> dict:
    """Analyse ``paths`` (one study's routed series) into ``out_dir`` with ``analyse``; return the
    findings document. ``previous_sr_paths`` (the SRs of the study's last analysed version) and the
    site's convention rules are passed only when there are some. In a child process when
    :func:`analyses_in_child`; then ``stats`` (when given) gets its ``analysis_peak_rss_mib``."""
    kwargs: dict = {}
    if previous_sr_paths:
        kwargs["previous_sr_paths"] = [str(p) for p in previous_sr_paths]
    if config.analysis.convention_rules:
        from dicom_io.convention import load_rules  # optional site overrides
        kwargs["convention_rules"] = load_rules(config.analysis.convention_rules)
    a = config.analysis
    if config.convention.on_conflict != "data" or not a.qsm_series or a.summary_encoding != DEFAULT_SUMMARY_ENCODING:
        from plugin.pipeline import AnalysisOptions   # (the defaults need no options)
        kwargs["options"] = AnalysisOptions(on_conflict=config.convention.on_conflict, qsm_series=a.qsm_series,
                                            summary_encoding=a.summary_encoding)
    report = on_result_file is not None and _takes(analyse, "on_result_file")
    args = ([str(p) for p in paths], str(out_dir))
    if analyses_in_child(config):
        from plugin.service.isolation import call_in_child
        done = call_in_child(analyse, args, kwargs, on_result_file=on_result_file if report else None)
        if stats is not None:
            stats["analysis_peak_rss_mib"] = round(done.peak_rss_mib, 1)
        return done.value
    if report:
        kwargs["on_result_file"] = on_result_file   # results delivered while the rest is written
    return analyse(*args, **kwargs)


def analyses_in_child(config: Config) -> bool:
    """Whether each study is analysed in a child forked from the worker process (:mod:`.isolation`):
    ``[queue] study_process`` on, with process workers (thread workers are the node process itself)
    that return their freed memory (``keep_freed_memory`` keeps it for the next study, in the worker)."""
    q = config.queue
    return q.study_process and q.worker_type == "process" and not q.keep_freed_memory


def _takes(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def preload_analysis_modules() -> None:
    """Import what :func:`plugin.pipeline.analyze_paths` imports on its first call (the DICOM
    reader, the echo combination, the result writers, highdicom and its standard tables: about
    1.5 CPU seconds), so that a forked analysis worker pays it when it starts, not on its first
    study's way to the SR. Not done in the receiving process: it does not need them."""
    import dicom_io.convention  # noqa: F401
    import dicom_io.read.series  # noqa: F401
    import dicom_io.results  # noqa: F401
    from dicom_io.results.write import load_standard_tables
    load_standard_tables()   # highdicom's IOD tables: parsed on the first SR otherwise
    import plugin.method.echoes  # noqa: F401
    import plugin.pairing  # noqa: F401


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def convention_checks(findings: Optional[dict]) -> list[dict]:
    """Per analysed pair, what the check of the header's phase convention against the data found
    (findings.json ``data_evidence``: decision and its one-line statement; issue 12), for the
    result record that ``borderphase status`` reads."""
    out = []
    for a in (findings or {}).get("analyses", []):
        ev = a.get("data_evidence") or {}
        if ev.get("decision"):
            out.append({"phase_series_uid": a.get("phase_series_uid"), "decision": ev["decision"],
                        "phase_convention": a.get("phase_convention"), "statement": ev.get("statement", "")})
    return out


def result_files(out_dir: Path) -> list[Path]:
    """The DICOM result files under ``out_dir`` in delivery order (the SR first, the QSM series last)."""
    from dicom_io.results import delivery_order
    return delivery_order(p for p in out_dir.rglob("*") if p.is_file() and is_dicom_file(p))


def analyse_version(config: Config, study: str, version: int, *, enqueue_delivery: Callable[[str], None],
                    analyse: AnalysisFn = analyze_paths) -> str:
    """Run one study version once with ``analyse``; returns the final state (analysed | failed |
    ignored | already | gone: removed by retention since), or ``deferred`` when the disk filled up: then the partial output is removed,
    nothing is recorded (a full disk is not a property of the study) and the node's periodic
    reconcile (:mod:`.reconcile`) queues the version again once space has returned. Result and failure
    records are written through the disk reserve (:mod:`.diskspace`), so they rarely need free space."""
    layout = StateLayout(config.state_dir)
    if layout.result(study, version) is not None:
        return "already"
    if layout.manifest(study, version) is None:
        # removed by retention since (a retried task of a version that was analysed meanwhile):
        # nothing to do, and the claim below must not bring back an empty study folder
        LOG.info("study %s v%d is no longer in the state (removed after delivery): nothing to analyse", study, version)
        return "gone"
    claim = Claim(layout.study_dir(study) / f"v{version:04d}.claim", config.analysis.lease_s)
    try:
        acquired = claim.acquire()
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        LOG.warning("study %s v%d: disk full, cannot claim it; it is queued again when space returns", study, version)
        return "deferred"
    if not acquired:
        raise ClaimBusy(f"study {study} v{version} is being analysed by another worker")
    reserve = DiskReserve(config.state_dir, config.node.reserve_mb)
    entries: list[str] = []
    out_dir = layout.results_dir(study, version)
    try:
        state = _analyse_claimed(config, layout, study, version, reserve, entries, analyse)
    except SpeculationRunning as exc:   # that worker finishes the version: look again shortly
        raise ClaimBusy(str(exc)) from None
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        shutil.rmtree(out_dir, ignore_errors=True)  # give the space back
        for eid in entries:
            (layout.outbox_pending / f"{eid}.json").unlink(missing_ok=True)
        LOG.warning("study %s v%d: disk full during analysis (%s); partial output removed, it is analysed "
                    "again when space returns", study, version, exc)
        return "deferred"
    finally:
        claim.release()
    if state == "analysed":
        for entry_id in entries:
            enqueue_delivery(entry_id)
    return state


def _analyse_claimed(config: Config, layout: StateLayout, study: str, version: int, reserve: DiskReserve,
                     entries: list[str], analyse: AnalysisFn) -> str:
    """The body of :func:`analyse_version` under its claim; fills ``entries`` with the outbox entries
    to deliver once the claim is released."""
    def record(doc: dict) -> None:
        write_despite_full(reserve, lambda: layout.write_result(study, version, doc))

    if layout.result(study, version) is not None:  # finished while we waited for the claim
        return "already"
    manifest = layout.manifest(study, version)
    if manifest is None:
        raise FileNotFoundError(f"no manifest for study {study} v{version}")
    if not manifest["analyse_instances"]:  # routing ignored everything (crash before its result)
        record({"state": "ignored", "finished": time.time(),
                "reason": "; ".join(f"{s['series_instance_uid']}: {s['reason']}" for s in manifest["series"])})
        return "ignored"
    out_dir = layout.results_dir(study, version)
    if config.queue.speculative:
        staged = take_staged(config, layout, study, version, manifest)   # raises SpeculationRunning
        if staged is not None:
            LOG.info("study %s v%d: the speculative analysis of these instances is adopted",
                     manifest["study_instance_uid"], version)
            findings = read_json(out_dir / "findings.json")
            layout.log_run({"study": study, "version": version, "worker": worker_identity(),
                            "started": staged["started"], "speculative": True})
            return record_analysed(config, layout, study, version, manifest, findings, {}, reserve, entries,
                                   started=staged["started"], speculative={
                                       "started": staged["started"], "finished": staged["finished"],
                                       "adopted": time.time()}, stats=staged.get("stats"))
    spool = layout.spool / study
    paths = [spool / rel for rel in manifest["analyse_instances"]]
    if out_dir.exists():
        shutil.rmtree(out_dir)  # leftovers of an interrupted run
    out_dir.mkdir(parents=True)
    started = time.time()
    layout.log_run({"study": study, "version": version, "worker": worker_identity(), "started": started})
    LOG.info("analysing study %s v%d (%d instances)", manifest["study_instance_uid"], version, len(paths))
    early = EarlyDelivery(config, manifest.get("destinations", []))
    stats: dict = {}
    try:
        findings = run_analysis(config, paths, out_dir, previous_srs(layout, study, version), analyse=analyse,
                                on_result_file=early.put, stats=stats)
    except Exception as exc:
        early.finish()
        if is_disk_full(exc):
            raise
        return record_failed(layout, study, version, manifest, reserve, exc, started)
    return record_analysed(config, layout, study, version, manifest, findings, early.finish(), reserve, entries,
                           started=started, stats=stats)


def record_failed(layout: StateLayout, study: str, version: int, manifest: dict, reserve: DiskReserve,
                  exc: Exception, started: float) -> str:
    reason = f"{type(exc).__name__}: {exc}"
    LOG.error("study %s v%d failed: %s", manifest["study_instance_uid"], version, reason)
    LOG.debug("analysis traceback", exc_info=True)
    write_despite_full(reserve, lambda: layout.write_result(study, version, {
        "state": "failed", "reason": reason, "finished": time.time(), "started": started,
        "worker": worker_identity()}))
    return "failed"


def record_analysed(config: Config, layout: StateLayout, study: str, version: int, manifest: dict,
                    findings: Optional[dict], accepted_early: dict, reserve: DiskReserve, entries: list[str], *,
                    started: float, speculative: Optional[dict] = None, stats: Optional[dict] = None) -> str:
    """``results/<study>/vNNNN`` is complete: create its outbox entries (``entries``; sent by the
    caller once the claim is released) and record the version as analysed. ``speculative``: when
    the analysis ran before completion (:mod:`.speculation`), its ``started`` / ``confirmed`` or
    ``adopted`` times, kept in the record; ``stats``: figures of the run for the record
    (``analysis_peak_rss_mib`` from :func:`run_analysis`)."""
    out_dir = layout.results_dir(study, version)
    files = result_files(out_dir)
    n_lesions = sum(len(a.get("lesions", [])) for a in (findings or {}).get("analyses", []))
    skipped = (findings or {}).get("skipped", [])
    entries.extend(write_despite_full(
        reserve, lambda: create_outbox_entries(config, layout, study, version, manifest, files, accepted_early)))
    checks = convention_checks(findings)
    for c in checks:   # issue 12: a contradicted header is said in the node's log at WARNING as well
        if c["decision"] in ("contradicted", "contradicted_header_kept"):
            LOG.warning("study %s v%d phase series %s: %s", manifest["study_instance_uid"], version,
                        c["phase_series_uid"], c["statement"])
    doc = {"state": "analysed", "finished": time.time(), "started": started,
           "n_lesions": n_lesions, "n_analyses": len((findings or {}).get("analyses", [])),
           "skipped": skipped, "convention_checks": checks, "result_files": [str(p.relative_to(out_dir)) for p in files],
           "outbox": list(entries), "worker": worker_identity()}
    if speculative is not None:
        doc["speculative"] = speculative
    doc.update(stats or {})
    write_despite_full(reserve, lambda: layout.write_result(study, version, doc))
    if config.queue.speculative:
        discard_stale(config, layout, study, version)
    LOG.info("study %s v%d analysed: %d lesion(s), %d result object(s), %d delivery(ies)%s",
             manifest["study_instance_uid"], version, n_lesions, len(files), len(entries),
             " (speculative analysis)" if speculative else "")
    return "analysed"


def speculate(config: Config, study: str, key: str, *, enqueue_delivery: Callable[[str], None],
              analyse: AnalysisFn = analyze_paths) -> str:
    """The speculative analysis task (:mod:`.speculation`): analyse the instance set ``key`` of
    ``study`` before the study is complete. Returns ``analysed`` (completion confirmed it while it
    ran: recorded and delivered as that version), ``staged`` (finished first: the version's task
    adopts it), ``adopted`` (staged, then confirmed: recorded and delivered here), ``changed``
    (discarded: the instance set changed), ``superseded`` / ``gone`` / ``busy`` (nothing done),
    ``failed`` (discarded: the version's own analysis runs and records the failure)."""
    layout = StateLayout(config.state_dir)
    files = SpeculationFiles(layout, study, key)
    spec = read_json(files.manifest_path)
    if spec is None:
        return "gone"
    claim = Claim(files.claim_path, config.analysis.lease_s)
    if not claim.acquire():
        return "busy"
    late: Optional[int] = None   # completion came before this task started: analyse that version now
    try:
        if files.staged_path.exists():
            return "staged"
        state, manifest = verdict(layout, Spool(layout.spool), study, spec)
        if state is not Verdict.WAITING:   # completion (or a change) came first
            files.remove()
            if state is not Verdict.CONFIRMED:
                return "superseded"
            late = manifest["version"]
        if late is None:
            out_dir = files.out_dir
            if out_dir.exists():
                shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True)
            started = time.time()
            paths = [layout.spool / study / rel for rel in spec["analyse_instances"]]
            previous = previous_srs(layout, study, spec["base_version"] + 1)
            LOG.info("speculative analysis of study %s (%d instances) during the completion grace",
                     spec["study_instance_uid"], len(paths))
            gate = StagedDelivery(config, layout, study, spec, [str(p) for p in previous]).start()
            stats: dict = {}
            try:
                findings = run_analysis(config, paths, out_dir, previous, analyse=analyse, on_result_file=gate.put,
                                        stats=stats)
            except SpeculationAbandoned:
                gate.abort()
                files.remove()
                LOG.info("study %s: an instance arrived during the grace; the speculative analysis is discarded, "
                         "nothing was delivered", spec["study_instance_uid"])
                return "changed"
            except Exception as exc:
                gate.abort()
                files.remove()
                LOG.info("study %s: speculative analysis failed (%s: %s); the version's own analysis runs",
                         spec["study_instance_uid"], type(exc).__name__, exc)
                return "failed"
            state = gate.settle()
            if state is Verdict.CHANGED:
                gate.abort()
                files.remove()
                LOG.info("study %s: the instance set changed during the grace; the speculative analysis is "
                         "discarded, nothing was delivered", spec["study_instance_uid"])
                return "changed"
            if state is Verdict.CONFIRMED:
                return _finish_confirmed(config, layout, study, spec, files, gate, findings, started, enqueue_delivery,
                                         stats)
            atomic_write_json(files.staged_path, {"started": started, "finished": time.time(),
                                                  "previous_srs": [str(p) for p in previous], "stats": stats})
    finally:
        claim.release()
    if late is not None:   # this worker is free now, the version's own task may still be queued
        try:
            return analyse_version(config, study, late, enqueue_delivery=enqueue_delivery, analyse=analyse)
        except ClaimBusy:
            return "superseded"   # another worker analyses it
    # staged; if completion came meanwhile, adopt it here rather than wait for the version's task
    state, manifest = verdict(layout, Spool(layout.spool), study, spec)
    if state is not Verdict.CONFIRMED:
        return "staged"
    version = manifest["version"]
    vclaim = version_claim(config, layout, study, version)
    if not acquire_within(vclaim, CLAIM_WAIT_S):
        return "staged"
    reserve = DiskReserve(config.state_dir, config.node.reserve_mb)
    entries: list[str] = []
    try:
        result = "already" if layout.result(study, version) is not None else _analyse_claimed(
            config, layout, study, version, reserve, entries, analyse)
    finally:
        vclaim.release()
    for eid in entries:
        enqueue_delivery(eid)
    return "adopted" if result == "analysed" else result


def _finish_confirmed(config: Config, layout: StateLayout, study: str, spec: dict, files: SpeculationFiles,
                      gate: StagedDelivery, findings: dict, started: float,
                      enqueue_delivery: Callable[[str], None], stats: dict) -> str:
    """Completion confirmed the speculation while it ran (the version's claim is held by ``gate``):
    record it as that version, as :func:`analyse_version` would."""
    manifest, version = gate.manifest, gate.manifest["version"]
    reserve = DiskReserve(config.state_dir, config.node.reserve_mb)
    entries: list[str] = []
    try:
        accepted = gate.early.finish()
        renamed = move_results(files.out_dir, layout.results_dir(study, version))
        accepted = {dest: {renamed.get(f, f): t for f, t in got.items()} for dest, got in accepted.items()}
        layout.log_run({"study": study, "version": version, "worker": worker_identity(), "started": started,
                        "speculative": True})
        state = record_analysed(config, layout, study, version, manifest, findings, accepted, reserve, entries,
                                started=started, speculative={"started": started, "confirmed": gate.confirmed_at},
                                stats=stats)
        files.remove()
    finally:
        gate.claim.release()
    for eid in entries:
        enqueue_delivery(eid)
    return state
