"""Several receiving processes on one port ([receive] processes = 2), with real dcmtk storescu
against the real node (``serve`` in a subprocess): a study whose associations land in both the
node's process and its receiver process (the node hands connections round-robin) completes
once, with every instance, only after the last of its associations ended, whichever process held
it; a killed receiver process is started again and the node keeps receiving; inside a receiver
process every instance is fdatasync-ed, linked into the spool and its directory fsync-ed before
its Success status leaves on the socket (strace)."""
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


def _cmdline(pid: int) -> bytes:
    """A process's command line; empty when it has gone between listing and reading (a killed
    receiver is reaped while the test looks for its replacement: CI failed on exactly that)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _receiver_pids(node_pid: int) -> set[int]:
    """Child processes of the node that listen: its receiver processes (not multiprocessing helpers)."""
    return {c for c in child_pids(node_pid)
            if b"receiver" in (cmd := _cmdline(c)) or b"spawn_main" in cmd}


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


# -- durability order inside a receiver process (strace) -------------------------------------------
_SYSCALL = re.compile(r"^(?P<tid>\d+) +(?:\d+:\d+:\d+\.\d+ +)?(?:<\.\.\. (?P<resumed>\w+) resumed>|(?P<name>\w+)\()(?P<rest>.*)$")


def _syscalls(lines: list[str]) -> list[dict]:
    """strace -f lines -> one record per completed call: name, thread, ``text`` (arguments), and
    ``start`` / ``end``, the indices of the lines where it was entered and where it returned (a
    call interrupted by another thread's is split into ``<unfinished ...>`` and ``resumed``)."""
    open_calls: dict[str, dict] = {}
    out = []
    for i, line in enumerate(lines):
        m = _SYSCALL.match(line)
        if not m:
            continue
        tid, rest = m["tid"], m["rest"]
        if m["resumed"]:
            call = open_calls.pop(tid, None)
            if call is None:  # entered before strace attached
                continue
            call["text"] += rest
        else:
            call = {"name": m["name"], "tid": tid, "start": i, "text": rest}
            if rest.endswith("<unfinished ...>"):
                open_calls[tid] = call
                continue
        call["end"] = i
        if not re.search(r"= -1 E", call["text"]):
            out.append(call)
    return out


def durability_problems(lines: list[str], spool: Path) -> tuple[int, list[str]]:
    """(instances answered, problems): for every C-STORE response (a ``sendto`` on a TCP socket
    naming a SOP Instance UID that a ``link`` put into the spool), the received file was
    fdatasync-ed before it was linked into ``spool/<study>/<series>/<sop>.dcm``, and that series
    directory fsync-ed by a call that started after the link returned and returned before the
    response was sent."""
    calls = _syscalls(lines)
    links = {}
    for c in calls:
        if c["name"] in ("link", "linkat"):
            paths = re.findall(r'"([^"]+)"', c["text"])
            if len(paths) == 2 and paths[1].startswith(str(spool) + "/") and "/.tmp/" not in paths[1]:
                sop = Path(paths[1]).name[:-len(".dcm")]
                links[sop] = (c, paths[0], Path(paths[1]))
    answered, problems = 0, []
    for sop, (link, src, target) in links.items():
        sends = [c for c in calls if c["name"] in ("sendto", "sendmsg", "write") and "<TCP" in c["text"]
                 and sop in c["text"]]
        if not sends:
            continue   # answered by another process, or after the trace stopped
        answered += 1
        send = sends[0]
        synced = [c for c in calls if c["name"] == "fdatasync" and f"<{src}>" in c["text"] and c["end"] < link["start"]]
        dir_synced = [c for c in calls if c["name"] == "fsync" and f"<{target.parent}>" in c["text"]
                      and c["start"] > link["end"] and c["end"] < send["start"]]
        if send["start"] < link["end"]:
            problems.append(f"{sop}: answered before it was linked into the spool")
        if not synced:
            problems.append(f"{sop}: {src} not fdatasync-ed before it was linked")
        if not dir_synced:
            problems.append(f"{sop}: {target.parent} not fsync-ed between the link and the answer")
    return answered, problems


def test_a_receiver_process_answers_success_only_once_the_instance_is_durable(node, tmp_path):
    """Inside a receiver process (not the node's own, which tests/test_ack_after_durable.py
    covers in-process): strace on every one of its threads records the file-system calls and the
    C-STORE responses on the socket in one timeline."""
    strace = require_peer("strace", "strace")
    proc, port, layout, log = node
    [rx] = _receiver_pids(proc.pid)
    trace = tmp_path / "strace.txt"
    tids = [p.name for p in Path(f"/proc/{rx}/task").iterdir()]
    tracer = subprocess.Popen([str(strace), "-f", "-qq", "-tt", "-y", "-yy", "-s", "1024", "-o", str(trace),
                               "-e", "trace=fdatasync,fsync,link,linkat,sendto,sendmsg",
                               *[a for t in tids for a in ("-p", t)]], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "TracerPid:\t0" not in Path(f"/proc/{rx}/status").read_text() or None, 30,
                 what="strace attached to the receiver process")
        studies = []
        for i in range(2):   # the node hands connections round-robin: one of two lands in the receiver
            studies.append(make_mr_study(tmp_path / f"s{i}", n_slices=3, rows=128, cols=128))
            out = subprocess.run([STORESCU, "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(port),
                                  *map(str, studies[-1]["files"])], env=node_env(), capture_output=True,
                                 text=True, timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: any(_in_receiver(log, s["study_uid"]) for s in studies) or None, 30,
                 what="an association served by the receiver process")
    finally:
        tracer.terminate()
        tracer.wait(10)
    lines = trace.read_text(errors="replace").splitlines()
    answered, problems = durability_problems(lines, layout.spool)
    assert answered == 6, f"{answered} responses traced in the receiver process (one study of 6 expected)"
    assert not problems, problems
    # the check can fail: the same trace with one response moved before its instance's link
    link_at = next(i for i, ln in enumerate(lines) if re.search(r"\blink(?:at)?\(", ln) and str(layout.spool) in ln
                   and "/.tmp/rx-" in ln)
    sop = Path(re.findall(r'"([^"]+)"', lines[link_at])[1]).name[:-len(".dcm")]
    send_at = next(i for i, ln in enumerate(lines) if "<TCP" in ln and sop in ln)
    moved = lines[:link_at] + [lines[send_at]] + [ln for i, ln in enumerate(lines[link_at:], link_at) if i != send_at]
    _, problems = durability_problems(moved, layout.spool)
    assert any(sop in p and "answered before" in p for p in problems), problems
    # ... and with that instance's fdatasync taken out
    src = re.findall(r'"([^"]+)"', lines[link_at])[0]
    unsynced = [ln for ln in lines if not ("fdatasync(" in ln and f"<{src}>" in ln)]
    assert len(unsynced) == len(lines) - 1
    _, problems = durability_problems(unsynced, layout.spool)
    assert problems == [f"{sop}: {src} not fdatasync-ed before it was linked"], problems
