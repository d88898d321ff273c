"""Several receiving processes on one port ([receive] processes = 2), with real dcmtk storescu
against the real node (``serve`` in a subprocess): a study whose associations land in both the
node's process and its receiver process (the node hands connections round-robin) completes
once, with every instance, only after the last of its associations ended, whichever process held
it; a killed receiver process is started again and the node keeps receiving."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import require_peer
from node_helpers import (STORESCU, child_pids, free_port, make_mr_study, node_env, start_serve, stop_proc, wait_for,
                          write_config)
from plugin.service.state import StateLayout

pytestmark = pytest.mark.peers

SENDERS = 8
GRACE_S = 1.0


def _receiver_pids(node_pid: int) -> set[int]:
    """Child processes of the node that listen: its receiver processes (not multiprocessing helpers)."""
    return {c for c in child_pids(node_pid)
            if "receiver" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
            or b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}


@pytest.fixture
def node(tmp_path):
    require_peer(STORESCU, "dcmtk")
    port = free_port()
    state = tmp_path / "state"
    cfg = write_config(tmp_path / "node.toml", state, port, quiet_s=120, grace_s=GRACE_S, workers=0,
                       receive_processes=2, extra_node="reconcile_interval_s = 3600",
                       destinations={"x": {"ae_title": "X", "host": "127.0.0.1", "port": 9}})
    log = tmp_path / "node.log"
    proc = start_serve(cfg, port, log)
    wait_for(lambda: (state / "node.json").exists(), 120, what="node and receiver process listening")
    yield proc, port, StateLayout(state), log
    stop_proc(proc)


def _send_split(port: int, files: list[Path]) -> float:
    """``files`` over SENDERS concurrent storescu associations; the time the last one ended."""
    groups = [files[i::SENDERS] for i in range(SENDERS)]
    procs = [subprocess.Popen([STORESCU, "-aet", "SCANNER", "-aec", "BPNODE", "-nh", "127.0.0.1", str(port),
                               *map(str, g)], env=node_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for g in groups]
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0, out.decode(errors="replace")
    return time.time()


def _in_receiver(log: Path, study: str) -> int:
    """Associations of ``study`` the receiver process reported as ended (the node logs each)."""
    return len(re.findall(rf"receiver \d+: association \d+ released after \d+ instance\(s\) \(study {re.escape(study)}\)",
                          log.read_text(errors="replace")))


def test_a_study_split_across_processes_completes_once_after_its_last_association(node, tmp_path):
    proc, port, layout, log = node
    split = 0
    for attempt in range(4):  # the kernel picks the process per connection: retry until both got some
        study = make_mr_study(tmp_path / f"in{attempt}", n_slices=12)
        uid = study["study_uid"]
        last_end = _send_split(port, study["files"])
        wait_for(lambda: layout.versions(uid), 60, what="the study completed (release grace)")
        time.sleep(GRACE_S + 1.0)  # a second version would show up by now
        assert layout.versions(uid) == [1]
        manifest = layout.manifest(uid, 1)
        assert len(manifest["instances"]) == len(study["files"]) == 24
        # completed by the release grace after the LAST association, not the quiet period (120 s)
        assert manifest["created"] >= last_end - 0.5
        assert manifest["created"] - last_end < 60
        in_receiver = wait_for(lambda: _in_receiver(log, uid) or None, 10, what="associations logged") if split == 0 \
            else _in_receiver(log, uid)
        if 0 < (in_receiver or 0) < SENDERS:
            split += 1
            break
    assert split, "no study had associations in both processes in 4 attempts (8 connections each)"


def test_a_killed_receiver_process_is_replaced(node, tmp_path):
    proc, port, layout, log = node
    before = _receiver_pids(proc.pid)
    assert before, "no receiver process"
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: (_receiver_pids(proc.pid) - before) or None, 30, what="a new receiver process")
    assert "is dead" in log.read_text(errors="replace")
    study = make_mr_study(tmp_path / "after", n_slices=8)
    _send_split(port, study["files"])
    wait_for(lambda: layout.versions(study["study_uid"]), 60, what="the study completed")
    assert len(layout.manifest(study["study_uid"], 1)["instances"]) == 16
