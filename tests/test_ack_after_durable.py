"""Acknowledged only once durable: for every instance a real dcmtk storescu sends, the node's C-STORE
response is issued only after the instance's bytes were fdatasync-ed, renamed into place and the
directory holding the new name fsync-ed (an fsync that *started after* the rename), and after the
new study/series directories themselves were made durable.

The file-system calls and the response are recorded in one timeline: ``os.fdatasync``, ``os.fsync``,
``os.replace`` and ``os.link`` (how the spool names an instance) are wrapped (the path behind each descriptor read from /proc), and pynetdicom's
EVT_DIMSE_SENT, which fires before the response's PDUs are queued for the socket, marks the answer.
Several associations send at once, so group commit (one directory fsync shared by concurrent
writers) is exercised too: a shared fsync only counts for the renames it started after."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import evt

from conftest import require_peer
from node_helpers import STORESCU, free_port, make_mr_study, node_env, write_config
from plugin.service.config import load_config
from plugin.service.node import Node

pytestmark = pytest.mark.peers


class Timeline:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = 0
        self.events: list[dict] = []

    def tick(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    def add(self, **event) -> None:
        with self.lock:
            self.events.append(event)


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    require_peer(STORESCU, "dcmtk")
    tl = Timeline()
    real_fdatasync, real_fsync, real_replace, real_link = os.fdatasync, os.fsync, os.replace, os.link

    def wrap_sync(kind, real):
        def sync(fd):
            path, start = _fd_path(fd), tl.tick()
            real(fd)
            tl.add(kind=kind, path=path, start=start, end=tl.tick())
        return sync

    def replace(src, dst, *a, **k):
        real_replace(src, dst, *a, **k)
        tl.add(kind="replace", src=os.path.realpath(src), path=os.path.realpath(dst), end=tl.tick())

    def link(src, dst, *a, **k):  # the spool names an instance with a hard link (never overwrites)
        real_link(src, dst, *a, **k)
        tl.add(kind="replace", src=os.path.realpath(src), path=os.path.realpath(dst), end=tl.tick())

    monkeypatch.setattr(os, "fdatasync", wrap_sync("fdatasync", real_fdatasync))
    monkeypatch.setattr(os, "fsync", wrap_sync("fsync", real_fsync))
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)

    port = free_port()
    cfg = load_config(write_config(tmp_path / "node.toml", tmp_path / "state", port, quiet_s=30, grace_s=30,
                                   destinations={"x": {"ae_title": "X", "host": "127.0.0.1", "port": 9}}))
    node = Node(cfg, with_workers=False)
    node.start()

    def answered(event):
        cs = event.message.command_set
        if "AffectedSOPInstanceUID" in cs and cs.CommandField == 0x8001:  # C-STORE-RSP
            tl.add(kind="response", sop=str(cs.AffectedSOPInstanceUID), status=int(cs.Status), start=tl.tick())

    node.scp._server.bind(evt.EVT_DIMSE_SENT, answered)
    yield node, tl, port, tmp_path
    node.stop()


def _send_concurrently(port: int, dirs: list[Path]) -> None:
    procs = [subprocess.Popen([STORESCU, "-aet", "SCANNER", "-aec", "BPNODE", "+sd", "+r", "-nh", "127.0.0.1",
                               str(port), str(d)], env=node_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for d in dirs]
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0, out.decode(errors="replace")


def durability_problems(tl: Timeline, spool_root: Path) -> tuple[int, list[str]]:
    """(instances checked, what was acknowledged before it was durable)."""
    ev = list(tl.events)
    responses = {e["sop"]: e for e in ev if e["kind"] == "response"}
    problems = []
    checked = 0
    for final in sorted(spool_root.rglob("*.dcm")):
        sop = final.name[:-len(".dcm")]
        rsp = responses.get(sop)
        if rsp is None:
            problems.append(f"{sop}: no C-STORE response recorded")
            continue
        checked += 1
        renames = [e for e in ev if e["kind"] == "replace" and e["path"] == str(final.resolve())]
        if not renames:
            problems.append(f"{sop}: not renamed into place")
            continue
        rn = renames[0]
        synced = [e for e in ev if e["kind"] == "fdatasync" and e["path"] == rn["src"] and e["end"] < rn["end"]]
        if not synced:
            problems.append(f"{sop}: renamed before its bytes were fdatasync-ed")
        dir_synced = [e for e in ev if e["kind"] == "fsync" and e["path"] == str(final.parent.resolve())
                      and e["start"] > rn["end"] and e["end"] < rsp["start"]]
        if rn["end"] > rsp["start"]:
            problems.append(f"{sop}: acknowledged before it was renamed into place")
        elif not dir_synced:
            problems.append(f"{sop}: acknowledged before an fsync of {final.parent.name} that started after the rename")
        if not synced or synced[-1]["end"] > rsp["start"]:
            problems.append(f"{sop}: acknowledged before its bytes were fdatasync-ed")
        # the directories created for the study and the series are durable entries too
        for d in (final.parent, final.parent.parent):
            parent_synced = [e for e in ev if e["kind"] == "fsync" and e["path"] == str(d.parent.resolve())
                             and e["end"] < rsp["start"]]
            if not parent_synced:
                problems.append(f"{sop}: acknowledged before the directory entry of {d.name} was fsync-ed")
    return checked, problems


def test_every_instance_is_durable_before_its_success_status(recorded):
    node, tl, port, tmp = recorded
    dirs = []
    for k in range(3):  # three studies from three concurrent associations (different directories)
        make_mr_study(tmp / f"in{k}", n_slices=4)
        dirs.append(tmp / f"in{k}")
    t0 = time.time()
    _send_concurrently(port, dirs)
    assert time.time() - t0 < 120
    checked, problems = durability_problems(tl, node.layout.spool)
    assert checked == 24  # 3 studies x 2 series x 4 slices, every one answered Success
    assert all(e["status"] == 0 for e in tl.events if e["kind"] == "response")
    assert problems == []


def test_the_check_catches_an_acknowledgement_before_the_directory_fsync(recorded, monkeypatch):
    """The same check on a spool that skips the directory fsync (an ack before the new name is
    durable) must report every instance: the test above can fail."""
    import plugin.service.spool as spool_mod
    node, tl, port, tmp = recorded
    monkeypatch.setattr(spool_mod._DIR_SYNCER, "sync", lambda d: None)
    make_mr_study(tmp / "in", n_slices=2)
    _send_concurrently(port, [tmp / "in"])
    checked, problems = durability_problems(tl, node.layout.spool)
    assert checked == 4
    assert sum("started after the rename" in p for p in problems) == 4
