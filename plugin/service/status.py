"""What the node is doing, read from ``state_dir`` alone (works while ``serve`` runs or not).

Study states: ``receiving`` (instances spooled, study not yet complete), ``pending`` (a version is
queued or being analysed), ``analysed``, ``failed`` (with the reason), ``ignored`` (routing said
so, with the reason). The outbox lists deliveries not yet accepted, with attempts and last error.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from plugin.service.spool import Spool, read_json
from plugin.service.state import StateLayout


def collect(state_dir: Path) -> dict:
    layout = StateLayout(Path(state_dir))
    spool = Spool(layout.spool) if layout.spool.exists() else None
    studies = []
    counts = {"receiving": 0, "pending": 0, "analysed": 0, "failed": 0, "ignored": 0}
    spooled = set(spool.studies()) if spool else set()
    for study in sorted(spooled | set(layout.studies())):
        versions = []
        for v in layout.versions(study):
            m = layout.manifest(study, v) or {}
            r = layout.result(study, v)
            versions.append({"version": v, "state": r["state"] if r else "pending",
                             "reason": (r or {}).get("reason"), "n_instances": len(m.get("instances", [])),
                             "n_lesions": (r or {}).get("n_lesions"), "n_analyses": (r or {}).get("n_analyses"),
                             "skipped": (r or {}).get("skipped", []), "created": m.get("created"),
                             "finished": (r or {}).get("finished"),
                             "results_dir": str(layout.results_dir(study, v)) if r and r["state"] == "analysed" else None})
        n_spooled = len(spool.instances(study)) if spool and study in spooled else 0
        if n_spooled == 0 and not versions:  # only a series record: its first instance never stored
            continue
        last = versions[-1] if versions else None
        in_last = last["n_instances"] if last else 0
        state = "receiving" if (last is None or n_spooled > in_last) else last["state"]
        counts[state] = counts.get(state, 0) + 1
        uid = (layout.manifest(study, last["version"]) or {}).get("study_instance_uid", study) if last else study
        studies.append({"study_instance_uid": uid, "state": state, "n_spooled": n_spooled, "versions": versions})
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
    return {"state_dir": str(layout.root), "node": node, "counts": counts, "studies": studies,
            "outbox": {"pending": pending, "sent": n_sent}}


def format_status(doc: dict) -> str:
    lines = []
    node = doc.get("node") or {}
    if node:
        run = f"pid {node.get('pid')}" if node.get("running") else "not running"
        lines.append(f"node {node.get('ae_title')} on {node.get('host')}:{node.get('port')} ({run}), state {doc['state_dir']}")
    c = doc["counts"]
    lines.append("studies: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    for s in doc["studies"]:
        last = s["versions"][-1] if s["versions"] else None
        extra = ""
        if last:
            extra = f" v{last['version']}"
            if last["state"] == "analysed":
                extra += f" pairs={last['n_analyses']} lesions={last['n_lesions']}"
                for sk in last.get("skipped") or []:
                    extra += f"\n            skipped series {sk.get('series_instance_uid')}: {sk.get('reason')}"
            if last.get("reason") and last["state"] in ("failed", "ignored"):
                extra += f" reason: {last['reason']}"
        lines.append(f"  {s['state']:<9} {s['study_instance_uid']} instances={s['n_spooled']}{extra}")
    q = doc.get("queue")
    if q:
        lines.append(f"queue ({q['backend']}): " + (f"unreachable: {q['error']}" if "error" in q else
                                                    f"{q['ready']} ready, {q['scheduled']} scheduled (retries)"))
    ob = doc["outbox"]
    lines.append(f"outbox: {len(ob['pending'])} pending, {ob['sent']} delivered")
    now = time.time()
    for e in ob["pending"]:
        due = e.get("next_attempt")
        when = f", next try in {max(0, due - now):.0f} s" if due else ""
        err = f", last error: {e['last_error']}" if e.get("last_error") else ""
        lines.append(f"  {e['id']} -> {e['target']} files={e['n_files']} attempts={e['attempts']}{when}{err}")
    return "\n".join(lines)


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)
