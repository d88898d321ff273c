"""What the node is doing, read from ``state_dir`` alone (works while ``serve`` runs or not).

Study states: ``receiving`` (instances spooled, study not yet complete), ``pending`` (a version is
queued or being analysed), ``analysed`` (at least one magnitude/phase pair analysed),
``no_analysable_pair`` (the analysis ran but found nothing it could analyse; the reasons are listed),
``failed`` (with the reason), ``ignored`` (routing said so, with the reason). ``speculations``
lists the analyses started at an association release before the study completed
(:mod:`.speculation`): queued, running, staged (finished, waiting for completion to confirm
them) or interrupted, with their instance count and age. The outbox lists
deliveries not yet accepted, with attempts and last error. ``disk`` and ``retention`` say how full
the state_dir file system is and what the last retention pass did (:mod:`.retention`).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from plugin.service.diskspace import RESERVE_FILE, disk_usage
from plugin.service.config import AnalysisConfig
from plugin.service.retention import last_report
from plugin.service.speculation import speculations_of
from plugin.service.spool import Spool, read_json
from plugin.service.state import StateLayout


DEFAULT_LEASE_S = AnalysisConfig().lease_s  # [analysis] lease_s when no config is given


def collect(state_dir: Path, *, lease_s: float = DEFAULT_LEASE_S) -> dict:
    """``lease_s``: ``[analysis] lease_s`` (a claim older than that is stale)."""
    layout = StateLayout(Path(state_dir))
    now = time.time()
    speculations = []
    spool = Spool(layout.spool) if layout.spool.exists() else None
    studies = []
    counts = {"receiving": 0, "pending": 0, "analysed": 0, "no_analysable_pair": 0, "failed": 0, "ignored": 0}
    spooled = set(spool.studies()) if spool else set()
    for study in sorted(spooled | set(layout.studies())):
        versions = []
        for v in layout.versions(study):
            m = layout.manifest(study, v) or {}
            r = layout.result(study, v)
            versions.append({"version": v, "state": version_state(r),
                             "reason": (r or {}).get("reason"), "n_instances": len(m.get("instances", [])),
                             "n_lesions": (r or {}).get("n_lesions"), "n_analyses": (r or {}).get("n_analyses"),
                             "skipped": (r or {}).get("skipped", []), "created": m.get("created"),
                             "finished": (r or {}).get("finished"),
                             # [queue] study_process: the peak memory of the version's analysis process
                             "analysis_peak_rss_mib": (r or {}).get("analysis_peak_rss_mib"),
                             "convention_checks": (r or {}).get("convention_checks", []),
                             "results_dir": str(layout.results_dir(study, v)) if r and r["state"] == "analysed" else None})
            if versions[-1]["state"] == "no_analysable_pair" and not versions[-1]["reason"]:
                versions[-1]["reason"] = "; ".join(f"{sk.get('series_instance_uid')}: {sk.get('reason')}"
                                                   for sk in versions[-1]["skipped"]) or "no magnitude/phase pair found"
        n_spooled = len(spool.instances(study)) if spool and study in spooled else 0
        if n_spooled == 0 and not versions:  # only a series record: its first instance never stored
            continue
        last = versions[-1] if versions else None
        in_last = last["n_instances"] if last else 0
        state = "receiving" if (last is None or n_spooled > in_last) else last["state"]
        counts[state] = counts.get(state, 0) + 1
        uid = (layout.manifest(study, last["version"]) or {}).get("study_instance_uid", study) if last else study
        specs = [{**sp.as_dict(), "study_instance_uid": uid} for sp in speculations_of(layout, study, lease_s, now)]
        speculations += specs
        studies.append({"study_instance_uid": uid, "state": state, "n_spooled": n_spooled, "versions": versions,
                        "speculations": specs})
    pending = []
    for p in sorted(layout.outbox_pending.glob("*.json")) if layout.outbox_pending.exists() else []:
        e = read_json(p)
        if e:
            pending.append({k: e.get(k) for k in ("id", "study_instance_uid", "version", "destination", "target",
                                                  "attempts", "last_error", "next_attempt")} | {"n_files": len(e.get("files", []))})
    n_sent = len(list(layout.outbox_sent.glob("*.json"))) if layout.outbox_sent.exists() else 0
    node = read_json(layout.node_file)
    if node:
        try:
            os.kill(int(node["pid"]), 0)
            node["running"] = True
        except (OSError, KeyError, ValueError):
            node["running"] = False
    disk = None
    if layout.root.exists():
        usage = disk_usage(layout.root)
        disk = {"free_bytes": usage.free_bytes, "total_bytes": usage.total_bytes,
                "free_percent": round(usage.free_percent, 2), "reserve_present": (layout.root / RESERVE_FILE).exists()}
    return {"state_dir": str(layout.root), "node": node, "counts": counts, "studies": studies,
            "speculations": speculations,
            "outbox": {"pending": pending, "sent": n_sent}, "disk": disk, "retention": last_report(layout.root)}


def version_state(result: dict | None) -> str:
    """What a version's result record means to a reader: ``pending`` without one; an ``analysed``
    version in which not one pair could be analysed is ``no_analysable_pair``, not "analysed"."""
    if result is None:
        return "pending"
    if result.get("state") == "analysed" and result.get("n_analyses") == 0:
        return "no_analysable_pair"
    return result["state"]


def format_status(doc: dict) -> str:
    lines = []
    node = doc.get("node") or {}
    if node:
        run = f"pid {node.get('pid')}" if node.get("running") else "not running"
        lines.append(f"node {node.get('ae_title')} on {node.get('host')}:{node.get('port')} ({run}), state {doc['state_dir']}")
    c = doc["counts"]
    lines.append("studies: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in c.items()))
    for s in doc["studies"]:
        last = s["versions"][-1] if s["versions"] else None
        extra = ""
        if last:
            extra = f" v{last['version']}"
            if last["state"] == "analysed":
                extra += f" pairs={last['n_analyses']} lesions={last['n_lesions']}"
                if last.get("analysis_peak_rss_mib") is not None:
                    extra += f" memory={last['analysis_peak_rss_mib']:.0f} MiB"
                for cc in last.get("convention_checks") or []:   # issue 12: only what needs a reader's eye
                    if cc.get("decision") not in ("agree", "data_only"):
                        extra += f"\n            convention {cc.get('phase_series_uid')}: {cc.get('statement')}"
                for sk in last.get("skipped") or []:
                    extra += f"\n            skipped series {sk.get('series_instance_uid')}: {sk.get('reason')}"
            if last.get("reason") and last["state"] in ("failed", "ignored", "no_analysable_pair"):
                extra += f" reason: {last['reason']}"
        label = {"no_analysable_pair": "no analysable pair", "failed": "failed:"}.get(s["state"], s["state"])
        lines.append(f"  {label:<9} {s['study_instance_uid']} instances={s['n_spooled']}{extra}")
    specs = doc.get("speculations") or []
    if specs:
        by_state: dict[str, int] = {}
        for sp in specs:
            by_state[sp["state"]] = by_state.get(sp["state"], 0) + 1
        lines.append(f"speculations: {len(specs)} (" + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) + ")")
        for sp in specs:
            when = (f", running {sp['running_s']:.1f} s" if sp.get("running_s") is not None else
                    f", staged {sp['staged_s']:.1f} s ago" if sp.get("staged_s") is not None else "")
            lines.append(f"  {'speculating' if sp['state'] == 'running' else sp['state']:<11} "
                         f"{sp['study_instance_uid']} instances={sp['n_instances']} "
                         f"(analysed {sp['n_analyse_instances']}) as v{sp['base_version'] + 1}, "
                         f"released {sp['age_s']:.1f} s ago{when}")
    q = doc.get("queue")
    if q:
        lines.append(f"queue ({q['backend']}): " + (f"unreachable: {q['error']}" if "error" in q else
                                                    f"{q['ready']} ready, {q['scheduled']} scheduled (retries)"))
    ob = doc["outbox"]
    lines.append(f"outbox: {len(ob['pending'])} pending, {ob['sent']} delivered")
    disk, ret = doc.get("disk"), doc.get("retention")
    if disk:
        lines.append(f"disk: {disk['free_bytes'] / 1e9:.2f} GB free of {disk['total_bytes'] / 1e9:.2f} GB "
                     f"({disk['free_percent']:.1f}%), reserve {'in place' if disk['reserve_present'] else 'absent'}")
    if ret:
        pol = ret.get("policy", {})
        marks = [f"{pol[k]:g}{u}" for k, u in (("free_space_watermark_percent", "%"), ("free_space_watermark_gb", " GB"))
                 if pol.get(k) is not None]
        age = f"max age {pol['max_age_days']:g} d" if pol.get("max_age_days") is not None else "no max age"
        kept = ", ".join(f"{k} {v}" for k, v in sorted((ret.get("kept") or {}).items())) or "nothing"
        lines.append(f"retention ({age}, watermark {' / '.join(marks) or 'none'}): last pass "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ret['time']))} removed {ret['removed']}, "
                     f"kept {kept}" + ("; BELOW WATERMARK, nothing more removable" if ret.get("below_watermark") else ""))
    now = time.time()
    for e in ob["pending"]:
        due = e.get("next_attempt")
        when = f", next try in {max(0, due - now):.0f} s" if due else ""
        err = f", last error: {e['last_error']}" if e.get("last_error") else ""
        lines.append(f"  {e['id']} -> {e['target']} files={e['n_files']} attempts={e['attempts']}{when}{err}")
    return "\n".join(lines)


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)
