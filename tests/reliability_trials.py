"""Node reliability trials with real dcmtk senders, shared by ``tests/test_node_hardening.py``
(a few trials, in CI time) and ``benchmarks/reliability_node.py`` (>= 20 trials, the figures).

* :func:`kill_trial`: two concurrent ``storescu`` senders, ``kill -9`` of the node mid-transfer,
  restart, the senders send their studies again (as a scanner retries a failed transfer); then
  every acknowledged instance must be in the spool (intact) and in the study's last analysed
  version, and every result object must reach the archive exactly once.
* :func:`idle_trial`: ``n_idle`` TCP connections that send nothing, then a real ``storescu``
  whose connection, ACSE and DIMSE timeouts are ``timeout_s``: does it store, and how fast.
"""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from pydicom import dcmread

from node_helpers import (STORESCU, make_mr_study, node_env, start_serve, stop_proc, wait_for,
                          write_config, free_port)
from dicom_io.net.scp import STATUS_SUCCESS, ReceivedInstance, StorageSCP
from plugin.service.spool import Spool
from plugin.service.state import StateLayout
from plugin.service.status import collect


class CountingArchive:
    """A Storage SCP that counts every C-STORE it receives per SOP Instance UID (duplicates show)."""

    def __init__(self, ae_title: str = "ARCHIVE"):
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.scp = StorageSCP(ae_title, "127.0.0.1", 0, self._store)

    def _store(self, inst: ReceivedInstance) -> int:
        with self._lock:
            self.received[inst.sop_instance_uid] += 1
        return STATUS_SUCCESS

    def start(self) -> "CountingArchive":
        self.scp.start()
        return self

    def stop(self) -> None:
        self.scp.stop()


def acknowledged(storescu_log: str) -> list[str]:
    """Files ``storescu -v`` reports as stored ("Sending file: X" ... "Received Store Response
    (Success)"), in order."""
    acked, current = [], None
    for line in storescu_log.splitlines():
        m = re.search(r"Sending file: (\S+)", line)
        if m:
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
            current = None
    return acked


def _sender(port: int, files: list[Path], log: Path, aet: str) -> subprocess.Popen:
    return subprocess.Popen([STORESCU, "-v", "-aet", aet, "-aec", "BPNODE", "-nh", "127.0.0.1", str(port),
                             *[str(f) for f in files]], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=node_env())


def kill_trial(work: Path, *, trial: int = 0, n_slices: int = 40, rows: int = 256, kill_at: int = 30,
               timeout_s: float = 180) -> dict:
    """One kill -9 trial (see the module docstring); returns its counts."""
    work.mkdir(parents=True, exist_ok=True)
    archive = CountingArchive().start()
    port = free_port()
    cfg = write_config(work / "node.toml", work / "state", port, quiet_s=1.0, grace_s=0.5,
                       retry_initial_s=0.5, retry_max_s=1.0,
                       destinations={"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1",
                                                 "port": archive.scp.port}})
    layout = StateLayout(work / "state")
    spool = Spool(layout.spool)
    studies = [make_mr_study(work / f"in{k}", n_slices=n_slices, rows=rows, cols=rows) for k in range(2)]
    total = sum(len(s["files"]) for s in studies)
    node = start_serve(cfg, port, work / "node.log")
    try:
        senders = [_sender(port, s["files"], work / f"send{k}.log", f"SCANNER{k}") for k, s in enumerate(studies)]

        def n_spooled() -> int:
            return sum(len(spool.instances(d)) for d in spool.studies())

        wait_for(lambda: n_spooled() >= kill_at, 60, interval_s=0.005, what="transfer under way")
        node.send_signal(signal.SIGKILL)
        node.wait()
        for s in senders:
            s.wait(60)
        acked = [f for k in range(2) for f in acknowledged((work / f"send{k}.log").read_text())]
        lost_in_spool, spooled = [], {}
        for f in acked:  # every acknowledged instance is in the spool, byte-for-byte the same data set
            ds = dcmread(f)
            p = spool.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            if not p.exists() or dcmread(p) != ds:
                lost_in_spool.append(f)
            else:
                spooled[f] = p
        node = start_serve(cfg, port, work / "node.log")
        resend = [_sender(port, s["files"], work / f"resend{k}.log", f"SCANNER{k}") for k, s in enumerate(studies)]
        for s in resend:
            s.wait(120)

        def done():
            st = collect(layout.root)
            ok = (st["counts"]["analysed"] == 2 and len(st["studies"]) == 2 and not st["outbox"]["pending"]
                  and all(s["n_spooled"] == total // 2 and s["versions"][-1]["n_instances"] == total // 2
                          for s in st["studies"]))
            return st if ok else None

        wait_for(done, timeout_s, what=f"trial {trial}: both studies analysed and delivered")
        not_analysed = []
        for f, p in spooled.items():
            study_dir = p.parent.parent.name
            last = layout.versions(study_dir)[-1]
            if p.relative_to(layout.spool / study_dir).as_posix() not in layout.manifest(study_dir, last)["analyse_instances"]:
                not_analysed.append(f)
        delivered_versions, result_uids = 0, Counter()
        for study_dir in layout.studies():
            for v in layout.versions(study_dir):
                r = layout.result(study_dir, v) or {}
                if r.get("state") == "analysed":
                    delivered_versions += 1
                    for rel in r.get("result_files", []):
                        result_uids[str(dcmread(layout.results_dir(study_dir, v) / rel,
                                                stop_before_pixels=True).SOPInstanceUID)] += 1
        time.sleep(0.5)  # a late duplicate delivery would show here
        received = dict(archive.received)
        return {"trial": trial, "instances": total, "acknowledged": len(acked),
                "spooled": len(spooled), "lost": len(lost_in_spool) + len(not_analysed),
                "versions": delivered_versions, "results": len(result_uids),
                "delivered": sum(1 for u in result_uids if received.get(u)),
                "undelivered": sum(1 for u in result_uids if not received.get(u)),
                "duplicate_deliveries": sum(n - 1 for n in received.values() if n > 1)}
    finally:
        stop_proc(node)
        archive.stop()


def idle_trial(work: Path, *, n_idle: int = 50, timeout_s: int = 5, idle_from: str = "127.0.0.1") -> dict:
    """``n_idle`` silent TCP connections (from ``idle_from``), then one real ``storescu`` with all its
    timeouts at ``timeout_s``; returns whether it stored and how long it took."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = write_config(work / "node.toml", work / "state", port)
    study = make_mr_study(work / "in", n_slices=2)
    node = start_serve(cfg, port, work / "node.log")
    idle: list[socket.socket] = []
    try:
        for _ in range(n_idle):
            s = socket.socket()
            s.bind((idle_from, 0))
            s.connect(("127.0.0.1", port))
            idle.append(s)
        time.sleep(0.5)
        t0 = time.monotonic()
        out = subprocess.run([STORESCU, "-to", str(timeout_s), "-ta", str(timeout_s), "-td", str(timeout_s),
                              "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(port),
                              *[str(f) for f in study["files"]]],
                             capture_output=True, text=True, timeout=60, env=node_env())
        elapsed = time.monotonic() - t0
        return {"n_idle": n_idle, "stored": out.returncode == 0, "seconds": elapsed,
                "output": (out.stdout + out.stderr).strip(), "log": (work / "node.log").read_text()}
    finally:
        for s in idle:
            s.close()
        stop_proc(node)
