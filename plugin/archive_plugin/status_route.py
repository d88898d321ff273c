"""The document ``GET /borderphase/status`` answers: every study the plugin has seen, each version
with its state (queued, running, analysed, stored, failed, ignored) and reason, and the queue.
UIDs and Orthanc ids only, never patient names or IDs."""
from __future__ import annotations

from collections import Counter

from plugin.archive_plugin.records import PluginState

_FIELDS = ("version", "state", "reason", "store_error", "n_instances", "n_analyses", "n_lesions", "attempts",
           "created", "started", "copied", "analysed", "finished", "result_instances", "skipped")


def status_document(state: PluginState, queued_studies: set[str]) -> dict:
    studies: dict[str, dict] = {}
    for record in state.records():
        uid = record.get("study_instance_uid", "")
        entry = studies.setdefault(uid, {"study_instance_uid": uid, "orthanc_study": record.get("orthanc_study"),
                                         "versions": []})
        entry["orthanc_study"] = record.get("orthanc_study") or entry["orthanc_study"]
        version = {k: record.get(k) for k in _FIELDS if k in record}
        version["results_dir"] = str(state.results_dir(uid, record["version"])) if record.get("result_files") else None
        entry["versions"].append(version)
    for entry in studies.values():
        entry["state"] = entry["versions"][-1]["state"] if entry["versions"] else "unknown"
        entry["queued"] = entry["orthanc_study"] in queued_studies
    counts = Counter(e["state"] for e in studies.values())
    return {"work_dir": str(state.root), "queue": {"studies_waiting": len(queued_studies)},
            "counts": dict(sorted(counts.items())), "studies": list(studies.values())}
