"""Durable records of the plugin's work, one JSON file per study version, under the work directory::

    studies/<study uid>/<version key>.json     state of one study version (below)
    results/<study uid>/<version key>/         findings.json + the DICOM results (sr/, seg/, summary/, kos/)
    input/<study uid>-<version key>/           scratch copy of the instances being analysed (removed after)
    queue.sqlite3                              the Huey queue (:mod:`.queueing`)
    analysis_runs.jsonl                        one line per analysis started (audit; exactly-once checks)
    changes.json                               the last Orthanc change sequence reconciled at start-up

States: ``queued`` -> ``running`` -> ``analysed`` (results written here, durable) -> ``stored``
(every result accepted by Orthanc), or ``failed`` / ``ignored`` with a reason. A version is
analysed at most once: ``analysed`` is written only after findings.json and the result files, and a
re-run after a crash between ``analysed`` and ``stored`` stores the same files again (same SOP
Instance UIDs: Orthanc answers AlreadyStored), never a second analysis.
Records hold UIDs and Orthanc ids only, never patient names or IDs.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from plugin.service.spool import append_json_line, atomic_write_json, read_json, safe_uid

FINAL = ("stored", "failed", "ignored")


@dataclass(frozen=True)
class PluginState:
    root: Path

    def create(self) -> None:
        for d in ("studies", "results", "input"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    @property
    def queue_db(self) -> Path:
        return self.root / "queue.sqlite3"

    @property
    def runs_log(self) -> Path:
        return self.root / "analysis_runs.jsonl"

    def record_path(self, study_uid: str, key: str) -> Path:
        return self.root / "studies" / safe_uid(study_uid) / f"{key}.json"

    def results_dir(self, study_uid: str, key: str) -> Path:
        return self.root / "results" / safe_uid(study_uid) / key

    def input_dir(self, study_uid: str, key: str) -> Path:
        return self.root / "input" / f"{safe_uid(study_uid)}-{key}"

    def record(self, study_uid: str, key: str) -> dict | None:
        return read_json(self.record_path(study_uid, key))

    def update(self, study_uid: str, key: str, **fields) -> dict:
        """Merge ``fields`` into the version's record (created if new), durably; return it."""
        doc = self.record(study_uid, key) or {"study_instance_uid": study_uid, "version": key,
                                               "created": time.time()}
        doc.update(fields, updated=time.time())
        atomic_write_json(self.record_path(study_uid, key), doc)
        return doc

    def records(self) -> list[dict]:
        out = []
        for path in sorted((self.root / "studies").glob("*/*.json")):
            doc = read_json(path)
            if doc is not None:
                out.append(doc)
        return sorted(out, key=lambda d: (d.get("created", 0), d.get("version", "")))

    def previous_sr_paths(self, study_uid: str, key: str) -> list[Path]:
        """The SR files of this study's latest other version whose results are in Orthanc."""
        earlier = [r for r in self.records() if r.get("study_instance_uid") == study_uid
                   and r.get("version") != key and r.get("state") == "stored"]
        if not earlier:
            return []
        last = max(earlier, key=lambda r: r.get("finished", 0))
        return sorted((self.results_dir(study_uid, last["version"]) / "sr").glob("*.dcm"))

    def log_run(self, doc: dict) -> None:
        append_json_line(self.runs_log, doc)

    def runs(self) -> list[dict]:
        if not self.runs_log.exists():
            return []
        return [json.loads(line) for line in self.runs_log.read_text().splitlines() if line.strip()]

    def last_change(self) -> int | None:
        doc = read_json(self.root / "changes.json")
        return None if doc is None else int(doc["last"])

    def set_last_change(self, seq: int) -> None:
        atomic_write_json(self.root / "changes.json", {"last": int(seq), "time": time.time()})
