"""Where the node keeps things under ``state_dir`` (one directory; share it between machines in the
multi-worker mode, e.g. over NFS, since workers read the spool and write results there).

    spool/<study>/<series>/<sop>.dcm        received instances (durable before acknowledgement);
                                            <sop>.v2.dcm...: the same SOP UID received again with other bytes
    spool/<study>/<series>/series.json      the series' facts, recorded from its first instance on receipt:
                                            UIDs, Modality, Manufacturer, SeriesDescription, ImageType,
                                            calling/called AE, address (routing reads these, not the files)
    queue.sqlite3                           Huey queue (embedded mode)
    studies/<study>/v0001.json              version manifest: instances, series, routing decisions
    studies/<study>/v0001.result.json       final state of a version: analysed | failed | ignored
    results/<study>/v0001/                  analysis output (findings.json + DICOM results)
    outbox/pending/<id>.json                one delivery (version x destination) not yet accepted
    outbox/sent/<id>.json                   delivered
    analysis_runs.jsonl                     one line per analysis started (audit; exactly-once checks)
    node.json                               the running node: pid, AE title, host, port
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from plugin.service.permissions import FILE_MODE
from plugin.service.spool import append_json_line, atomic_write_json, read_json

_VERSION_FILE = re.compile(r"^v(\d{4,})\.json$")


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def queue_db(self) -> Path:
        return self.root / "queue.sqlite3"

    @property
    def outbox_pending(self) -> Path:
        return self.root / "outbox" / "pending"

    @property
    def outbox_sent(self) -> Path:
        return self.root / "outbox" / "sent"

    @property
    def runs_log(self) -> Path:
        return self.root / "analysis_runs.jsonl"

    @property
    def node_file(self) -> Path:
        return self.root / "node.json"

    def create(self) -> None:
        for d in (self.spool, self.root / "studies", self.root / "results", self.outbox_pending, self.outbox_sent):
            d.mkdir(parents=True, exist_ok=True)

    def study_dir(self, study: str) -> Path:
        return self.root / "studies" / study

    def manifest_path(self, study: str, version: int) -> Path:
        return self.study_dir(study) / f"v{version:04d}.json"

    def result_path(self, study: str, version: int) -> Path:
        return self.study_dir(study) / f"v{version:04d}.result.json"

    def results_dir(self, study: str, version: int) -> Path:
        return self.root / "results" / study / f"v{version:04d}"

    def versions(self, study: str) -> list[int]:
        d = self.study_dir(study)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _VERSION_FILE.match(p.name)))

    def studies(self) -> list[str]:
        d = self.root / "studies"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def manifest(self, study: str, version: int) -> dict | None:
        return read_json(self.manifest_path(study, version))

    def result(self, study: str, version: int) -> dict | None:
        return read_json(self.result_path(study, version))

    def write_result(self, study: str, version: int, doc: dict) -> None:
        atomic_write_json(self.result_path(study, version), doc)

    def log_run(self, doc: dict) -> None:
        append_json_line(self.runs_log, doc)

    def runs(self) -> list[dict]:
        if not self.runs_log.exists():
            return []
        return [json.loads(l) for l in self.runs_log.read_text().splitlines() if l.strip()]


def previous_srs(layout: StateLayout, study: str, version: int) -> list[Path]:
    """The SR files of the latest earlier version of ``study`` that was analysed."""
    for earlier in sorted((v for v in layout.versions(study) if v < version), reverse=True):
        result = layout.result(study, earlier) or {}
        if result.get("state") == "analysed":
            return sorted((layout.results_dir(study, earlier) / "sr").glob("*.dcm"))
    return []


def _proc_start_ticks(pid: int) -> str | None:
    """The start time of live process ``pid`` (None when there is none). A zombie counts as dead: a
    worker killed with the node stays a zombie wherever nothing reaps it (e.g. a container whose
    init does not), and its claim must not hold a study for a whole lease."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X", "x") else fields[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _proc_start_ticks(pid)}


class Claim:
    """An exclusive, crash-tolerant claim on one piece of work (a file created with O_EXCL).

    A claim is stale, and may be taken over, when its holder is a dead process on this host (pid and
    process start time no longer match) or when it is older than ``lease_s`` (holders on other
    hosts). This is what keeps a study version from being analysed twice when the same task is
    delivered twice (e.g. re-enqueued after a restart while a remote worker still ran it).
    """

    def __init__(self, path: Path, lease_s: float):
        self.path = path
        self.lease_s = lease_s
        self.held = False

    def _stale(self, other: dict | None) -> bool:
        if other is None:
            return True
        if time.time() - float(other.get("time", 0)) > self.lease_s:
            return True
        me = worker_identity()
        if other.get("host") == me["host"]:
            pid = int(other.get("pid", -1))
            return _proc_start_ticks(pid) != other.get("start")
        return False

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                if self._stale(read_json(self.path)):
                    self.path.unlink(missing_ok=True)
                    continue
                return False
            with os.fdopen(fd, "w") as fh:
                json.dump({**worker_identity(), "time": time.time()}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
