"""Operations of the real node (issue 14): a full disk, retention, Prometheus metrics, status --json,
stale claims. The node runs as ``borderphase serve`` in a subprocess with the tiny real analysis
(these are about the service, not the method); senders and the archive are real dcmtk (storescu,
storescp).

A full disk is a real one: the node's state_dir is on a small tmpfs. As root the test mounts it
directly; otherwise (or with BORDERPHASE_TEST_USERNS=1) in a user + mount namespace of its own
(``unshare --user --map-root-user --mount``), the node started inside it with ``nsenter`` and the
test reading the files through ``/proc/<holder>/root``. Where neither works the test skips saying
why (and fails under CI=true).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import in_ci, require_peer
from node_helpers import (REPO, STORESCU, child_pids, free_port, make_mr_study, node_env, stop_proc, storescu, wait_for,
                          wait_port, write_config)
from plugin.service.state import Claim, StateLayout, _proc_start_ticks
from plugin.service.status import collect, format_status

pytestmark = pytest.mark.peers
STORESCP = "/usr/bin/storescp"


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_peer(STORESCU, "dcmtk")
    require_peer(STORESCP, "dcmtk")


# -- a small real file system -------------------------------------------------------------------
class SmallDisk:
    """A tmpfs of ``size_mb``: ``inner`` is where the node sees it, ``outer`` where this process does;
    ``prefix`` is the command prefix that starts a process seeing it."""

    def __init__(self, where: Path, size_mb: int):
        self.inner = where / "disk"
        self.inner.mkdir(parents=True)
        self.holder: subprocess.Popen | None = None
        self.prefix: list[str] = []
        errors = []
        if os.geteuid() == 0 and os.environ.get("BORDERPHASE_TEST_USERNS") != "1":
            out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(self.inner)],
                                 capture_output=True, text=True)
            if out.returncode == 0:
                self.outer = self.inner
                return
            errors.append(f"mount -t tmpfs: {out.stderr.strip()}")
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if unshare and nsenter:
            self.holder = subprocess.Popen(
                [unshare, "--user", "--map-root-user", "--mount", "sh", "-c",
                 f"mount -t tmpfs -o size={size_mb}m tmpfs '{self.inner}' && echo ready && exec sleep 100000"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = self.holder.stdout.readline().strip()
            if line == "ready":
                pid = self.holder.pid
                self.prefix = [nsenter, "-t", str(pid), "-U", "-m", "--preserve-credentials"]
                self.outer = Path(f"/proc/{pid}/root") / str(self.inner).lstrip("/")
                return
            errors.append(f"unshare: {self.holder.stderr.read().strip()}")
            self.holder.kill()
            self.holder.wait()
            self.holder = None
        reason = "no small file system for the disk-full test: " + ("; ".join(errors) or "unshare/nsenter missing")
        if in_ci():
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)

    def fill(self, leave_bytes: int = 0) -> Path:
        """Fill the file system (up to ``leave_bytes`` free) with one file; returns it."""
        filler = self.outer / "filler.bin"
        with open(filler, "wb") as fh:
            try:
                while True:
                    st = os.statvfs(self.outer)
                    room = st.f_bavail * st.f_frsize - leave_bytes
                    if room <= 0:
                        break
                    fh.write(b"\0" * min(room, 1 << 20))
                    fh.flush()
            except OSError:
                pass
        return filler

    def free_bytes(self) -> int:
        st = os.statvfs(self.outer)
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
        else:
            subprocess.run(["umount", "-l", str(self.inner)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def make(size_mb: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path, size_mb))
        return disks[-1]

    yield make
    for d in disks:
        d.close()


def serve(config: Path, port: int, log: Path, prefix: list[str] = (), **env) -> subprocess.Popen:
    """``borderphase serve`` with the tiny analysis (tests/node_helpers.py), optionally via ``prefix``."""
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "node_helpers", "serve", "--config", str(config)],
                            cwd=REPO, env=node_env(**env), stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    wait_port(port, proc=proc)
    return proc


def start_storescp(out_dir: Path, attempts: int = 3) -> tuple[subprocess.Popen, int]:
    """dcmtk storescp on a free port. The port is free when chosen but another process (a test run
    beside this one) may take it before storescp binds it: storescp then exits at once and is
    started again on another port; its own words are in the error when every attempt failed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        port = free_port()
        log = out_dir.parent / f"{out_dir.name}-storescp-{port}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([STORESCP, "-aet", "ARCHIVE", "-od", str(out_dir), "+xa", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=err, env=node_env())
        try:
            wait_port(port, proc=proc)
        except RuntimeError as exc:
            if proc.poll() is None or attempt == attempts - 1:
                raise RuntimeError(f"{exc}: storescp said {log.read_text(errors='replace').strip()!r}") from exc
            continue
        return proc, port
    raise AssertionError("unreachable")


def ops_config(path: Path, state_dir: Path, port: int, archive_port: int, *, extra_node: str = "",
               sections: str = "", rules: str | None = None, hold_port: int | None = None,
               speculative: bool = True, receive_processes: int = 1) -> Path:
    dests = {"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive_port}}
    if hold_port is not None:
        dests["hold"] = {"ae_title": "HOLD", "host": "127.0.0.1", "port": hold_port}
    cfg = write_config(path, state_dir, port, destinations=dests, extra_node=extra_node, rules=rules,
                       retry_initial_s=1.0, retry_max_s=2.0, receive_processes=receive_processes)
    text = cfg.read_text()
    if "min_free_mb" in extra_node:
        text = text.replace("min_free_mb = 0\n", "")
    if not speculative:
        text = text.replace("[queue]\n", "[queue]\nspeculative = false\n", 1)
    cfg.write_text(text + "\n" + sections + "\n")
    return cfg


def storescu_verbose(port: int, files, *options: str) -> str:
    out = subprocess.run([STORESCU, "-v", *options, "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(port),
                          *[str(f) for f in files]], capture_output=True, text=True, timeout=120, env=node_env())
    return out.stdout + out.stderr


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


# -- disk full --------------------------------------------------------------------------------------
def test_disk_full_refuses_with_a700_and_recovers_without_restart(tmp_path, small_disk):
    disk = small_disk(24)
    archive, aport = start_storescp(tmp_path / "archive")
    port = free_port()
    cfg = ops_config(tmp_path / "node.toml", disk.inner / "state", port, aport,
                     extra_node="min_free_mb = 4\nreserve_mb = 2\nreconcile_interval_s = 1",
                     sections="[retention]\nfree_space_watermark_percent = 0\ninterval_s = 1\n\n[metrics]\nport = 0",
                     # the disk must fill while A's analysis runs: a speculative start at the release
                     # would have finished it (and delivered) during the completion grace
                     speculative=False)
    state = disk.outer / "state"
    layout = StateLayout(state)
    node = serve(cfg, port, tmp_path / "node.log", disk.prefix, BORDERPHASE_TEST_ANALYSIS_DELAY_S="2")
    try:
        metrics_port = wait_for(lambda: (json.loads((state / "node.json").read_text()) or {}).get("metrics_port")
                                if (state / "node.json").exists() else None, 20, what="node.json")
        a = make_mr_study(tmp_path / "a", n_slices=3)
        storescu(port, [tmp_path / "a"])
        wait_for(lambda: layout.runs(), 30, what="analysis of A started")
        filler = disk.fill()  # the disk fills up while A is being analysed
        assert disk.free_bytes() < 64 * 1024
        # A's analysis hits ENOSPC: nothing recorded as failed, A stays pending (not lost)
        wait_for(lambda: "disk full during analysis" in (tmp_path / "node.log").read_text(), 30,
                 what="the analysis of A to meet the full disk")
        assert collect(state)["counts"]["pending"] == 1
        # B is refused with Out of Resources: the sender keeps it
        b = make_mr_study(tmp_path / "b", n_slices=3)
        text = storescu_verbose(port, sorted((tmp_path / "b").iterdir()))
        assert "Refused: OutOfResources" in text and "Received Store Response (Success)" not in text, text
        m = scrape(metrics_port)
        assert m['borderphase_instances_refused_total{reason="disk_full"}'] >= 1
        assert m["borderphase_disk_free_bytes"] < 4e6
        # space returns (the admin removes something): no restart, A is analysed and delivered, B is accepted
        os.unlink(filler)
        text = storescu_verbose(port, sorted((tmp_path / "b").iterdir()))
        assert text.count("Received Store Response (Success)") == 6, text
        st = wait_for(lambda: (d := collect(state))["counts"]["analysed"] == 2 and not d["outbox"]["pending"] and d,
                      60, what="A and B analysed and delivered without a restart")
        assert node.poll() is None, "the node kept running"
        assert {s["study_instance_uid"] for s in st["studies"]} == {a["study_uid"], b["study_uid"]}
        assert len([p for p in (tmp_path / "archive").rglob("*") if p.is_file()]) == 2, "one result each, delivered once"
        log = (tmp_path / "node.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "periodic reconciliation requeued" in log
        assert not any(layout.result(s, 1).get("state") == "failed" for s in layout.studies())
    finally:
        stop_proc(node)
        stop_proc(archive)


@pytest.mark.parametrize("min_free_mb,processes,speculative", [
    (0, 1, True),   # no floor: the disk fills under the data set as it arrives (ENOSPC mid-write)
    (0, 2, False),  # the same in a receiver process and in the node's own, no speculation
    (3, 2, True),   # the free-space floor refuses before a byte is written
], ids=["enospc-1proc-spec", "enospc-2proc-nospec", "floor-2proc-spec"])
def test_disk_full_while_receiving_answers_a700_never_aborts(tmp_path, small_disk, min_free_mb, processes,
                                                             speculative):
    """pynetdicom writes each received data set to a file as it arrives; a full file system there
    used to raise inside its state machine (association aborted, reactor thread dead). Every
    C-STORE must get 0xA700 instead, on the same association, and the node take the study once
    space is back, without a restart."""
    disk = small_disk(16)
    archive, aport = start_storescp(tmp_path / "archive")
    port = free_port()
    cfg = ops_config(tmp_path / "node.toml", disk.inner / "state", port, aport,
                     extra_node=f"min_free_mb = {float(min_free_mb)}\nreserve_mb = 0\nreconcile_interval_s = 1",
                     sections="[retention]\nfree_space_watermark_percent = 0\ninterval_s = 1\n\n[metrics]\nport = 0",
                     speculative=speculative, receive_processes=processes)
    state = disk.outer / "state"
    (disk.outer / "tmp").mkdir()  # the default temporary directory on the disk that fills, too
    node = serve(cfg, port, tmp_path / "node.log", disk.prefix, TMPDIR=str(disk.inner / "tmp"))
    try:
        metrics_port = wait_for(lambda: (json.loads((state / "node.json").read_text()) or {}).get("metrics_port")
                                if (state / "node.json").exists() else None, 20, what="node.json")
        b = make_mr_study(tmp_path / "b", n_slices=3, rows=256, cols=256)  # 6 x 131 kB
        files = sorted((tmp_path / "b").iterdir())
        filler = disk.fill(leave_bytes=40_000)  # less than one instance
        assert disk.free_bytes() < 131_000
        # one association per receiving process (the node hands them round-robin)
        for _ in range(processes):
            text = storescu_verbose(port, files, "--no-halt")  # every instance tried on the one association
            assert text.count("Refused: OutOfResources") == len(files), text
            assert "Success" not in text and "abort" not in text.lower(), text
        log = (tmp_path / "node.log").read_text()
        refusals = [ln for ln in log.splitlines() if "refused (0xA700 Out of Resources)" in ln]
        assert len(refusals) == processes * len(files), log[-3000:]
        assert all(f"{disk.inner}/state/spool/.tmp/rx-" in ln and "bytes free" in ln for ln in refusals), refusals
        why = "free-space floor" if min_free_mb else "disk full: write"
        assert all(why in ln for ln in refusals), refusals
        assert scrape(metrics_port)['borderphase_instances_refused_total{reason="disk_full"}'] == processes * len(files)
        # nothing half-received left behind to fill the disk further
        assert not [p for p in (state / "spool" / ".tmp").iterdir() if p.stat().st_size], "partial files kept"
        assert not list((state / "spool").glob("*/*/*.dcm")), "nothing spooled"
        # space returns: the same study is accepted by every process, analysed and delivered
        os.unlink(filler)
        for _ in range(processes):
            text = storescu_verbose(port, files)
            assert text.count("Received Store Response (Success)") == len(files), text
        st = wait_for(lambda: (d := collect(state))["counts"]["analysed"] == 1 and not d["outbox"]["pending"] and d,
                      60, what="B analysed and delivered without a restart")
        assert {s["study_instance_uid"] for s in st["studies"]} == {b["study_uid"]}
        assert node.poll() is None, "the node kept running"
        log = (tmp_path / "node.log").read_text()
        for bad in ("Traceback", "Exception in DUL", "State Machine received an exception", "aborting association"):
            assert bad not in log, log[-3000:]
    finally:
        stop_proc(node)
        stop_proc(archive)


def test_a_transfer_cut_mid_instance_leaves_no_file_behind(tmp_path):
    """A sender killed while an instance arrives: pynetdicom never answers that C-STORE, so it never
    removes the file it was received into (in the spool's .tmp since the full-disk gate); the
    periodic pass removes it once idle past the network timeout, the node receiving meanwhile."""
    archive, aport = start_storescp(tmp_path / "archive")
    port = free_port()
    cfg = ops_config(tmp_path / "node.toml", tmp_path / "state", port, aport,
                     extra_node="network_timeout_s = 2.0\nreconcile_interval_s = 1")
    rx_dir = tmp_path / "state" / "spool" / ".tmp"
    node = serve(cfg, port, tmp_path / "node.log")
    try:
        big = make_mr_study(tmp_path / "big", n_slices=1, rows=4096, cols=4096, components=("M",))  # 32 MB
        sender = subprocess.Popen([STORESCU, "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(port),
                                   *map(str, big["files"])], env=node_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        partial = wait_for(lambda: [p for p in rx_dir.glob("rx-*.dcm") if p.stat().st_size > 0], 60, interval_s=0.005,
                           what="the instance arriving")
        sender.kill()
        sender.wait()
        assert partial[0].exists() and partial[0].stat().st_size < 32e6, "the cut file should still be there"
        wait_for(lambda: not partial[0].exists(), 30, what="the abandoned receive file removed")
        assert not list((tmp_path / "state" / "spool").glob("*/*/*.dcm")), "nothing half-received spooled"
        small = make_mr_study(tmp_path / "small", n_slices=2)
        storescu(port, [tmp_path / "small"])
        wait_for(lambda: StateLayout(tmp_path / "state").versions(small["study_uid"]), 30, what="receiving goes on")
        assert not list(rx_dir.glob("rx-*.dcm"))
        assert node.poll() is None
    finally:
        stop_proc(node)
        stop_proc(archive)


# -- retention --------------------------------------------------------------------------------------
HOLD_RULES = ("[[rules]]\nname = \"hold\"\naction = \"analyse\"\nmatch.series_description = \"HOLD\"\n"
              "destinations = [\"hold\"]\n\n"
              "[[rules]]\nname = \"mr\"\naction = \"analyse\"\nmatch.modality = \"MR\"\ndestinations = [\"archive\"]\n")


def test_retention_keeps_undelivered_and_the_disk_above_its_watermark(tmp_path, small_disk):
    disk = small_disk(16)
    archive, aport = start_storescp(tmp_path / "archive")
    port, hold_port = free_port(), free_port()  # nothing listens on hold_port: those results stay undelivered
    watermark = 55.0
    cfg = ops_config(tmp_path / "node.toml", disk.inner / "state", port, aport, hold_port=hold_port, rules=HOLD_RULES,
                     extra_node="min_free_mb = 1\nreserve_mb = 0.5\nreconcile_interval_s = 1",
                     sections=f"[retention]\nfree_space_watermark_percent = {watermark}\ninterval_s = 1")
    state = disk.outer / "state"
    layout = StateLayout(state)
    node = serve(cfg, port, tmp_path / "node.log", disk.prefix)
    try:
        held = [make_mr_study(tmp_path / f"h{i}", n_slices=2, rows=256, cols=256, series_description="HOLD gre")
                for i in range(2)]
        for i in range(2):
            storescu(port, [tmp_path / f"h{i}"])
        sent = []
        for i in range(14):  # ~0.6 MB each with its result: well past the watermark without retention
            sent.append(make_mr_study(tmp_path / f"s{i}", n_slices=2, rows=256, cols=256))
            storescu(port, [tmp_path / f"s{i}"])
            for h in held:  # at every step the undelivered studies are all there
                assert len(list((layout.spool / h["study_uid"]).rglob("*.dcm"))) == 4

        caught_up_at: list[float] = []   # when the node first had only the held results left to deliver

        def settled():
            d = collect(state)
            r = d.get("retention") or {}
            idle = len(d["outbox"]["pending"]) == 2 and d["counts"]["pending"] == 0 and d["counts"]["receiving"] == 0
            if idle and not caught_up_at:
                caught_up_at.append(time.time())
            # judge a retention pass that ran after the node caught up: one that ran while the last
            # delivery was still under way rightly kept that study as undelivered too
            return d if (idle and r.get("time", 0) > caught_up_at[0] and not r.get("below_watermark")
                         and d["disk"]["free_percent"] >= watermark) else None

        # (300 s: 16 studies analysed and delivered first; on a 2-core machine loaded by other jobs that
        # took more than 90 s and failed as "still pending"; the wait ends as soon as it settles)
        st = wait_for(settled, 300, interval_s=0.5, what="retention to bring free space above the watermark")
        assert st["disk"]["free_percent"] >= watermark
        removed = [json.loads(line) for line in (state / "retention.jsonl").read_text().splitlines()]
        assert removed, "retention removed nothing: the test did not put the disk under pressure"
        held_uids = {h["study_uid"] for h in held}
        for r in removed:
            assert r["study_instance_uid"] not in held_uids, "an undelivered study was removed"
            assert r["reason"] == "watermark"
        for h in held:  # undelivered: spool, results and outbox entry all kept
            study = h["study_uid"]
            assert len(list((layout.spool / study).rglob("*.dcm"))) == 4
            assert layout.result(study, 1)["state"] == "analysed"
            assert list(layout.outbox_pending.glob(f"{study}-v*.json"))
        assert st["retention"]["kept"].get("undelivered") == 2
        # every removed study had been delivered: its result is in the archive (storescp +xa: by study)
        n_archived = sum(1 for p in (tmp_path / "archive").rglob("*") if p.is_file())
        assert n_archived == 14, n_archived
        text = subprocess.run([sys.executable, "-m", "plugin.cli", "status", "--config", str(cfg)], cwd=REPO,
                              env=node_env(), capture_output=True, text=True, timeout=60).stdout
        if disk.prefix:  # the state_dir is inside the namespace
            text = format_status(collect(state))
        assert re.search(r"retention \(no max age, watermark 55%\): last pass .* removed \d+, kept undelivered 2", text), text
    finally:
        stop_proc(node)
        stop_proc(archive)


# -- metrics and status --json -----------------------------------------------------------------------
def test_metrics_endpoint_moves_after_a_real_store_and_status_json(tmp_path):
    archive, aport = start_storescp(tmp_path / "archive")
    port, mport = free_port(), free_port()
    cfg = ops_config(tmp_path / "node.toml", tmp_path / "state", port, aport,
                     sections=f"[metrics]\nport = {mport}")
    node = serve(cfg, port, tmp_path / "node.log")
    try:
        before = scrape(mport)
        assert before["borderphase_instances_received_total"] == 0
        assert before['borderphase_studies{state="analysed"}'] == 0
        assert before["borderphase_disk_free_bytes"] > 0
        make_mr_study(tmp_path / "in", n_slices=3)
        storescu(port, [tmp_path / "in"])
        # the queue drained too: the version's own task, queued at completion while its speculative
        # analysis ran, may still be waiting for a worker (or for its retry) when the study is
        # recorded; it then finds the version analysed (seen on a slower 2-core machine). And the
        # outbox emptied: a delivery's "sent" record is written before its pending entry is removed
        # (never lose one), so a scrape between the two sees both (seen once in a fresh-clone CI)
        m = wait_for(lambda: (m := scrape(mport))['borderphase_studies{state="analysed"}'] == 1
                     and m["borderphase_delivery_latency_seconds_count"] == 1
                     and m["borderphase_outbox_pending"] == 0
                     and m['borderphase_queue_depth{kind="ready"}'] == 0
                     and m['borderphase_queue_depth{kind="scheduled"}'] == 0 and m, 60,
                     what="the study analysed and delivered and the queue drained, as the metrics see it")
        assert m["borderphase_instances_received_total"] == 6
        assert m['borderphase_instances_refused_total{reason="disk_full"}'] == 0
        assert m["borderphase_analysis_duration_seconds_count"] == 1
        assert m["borderphase_analysis_latency_seconds_count"] == 1
        assert m["borderphase_outbox_pending"] == 0 and m["borderphase_outbox_oldest_age_seconds"] == 0
        assert m['borderphase_queue_depth{kind="ready"}'] == 0
        out = subprocess.run([sys.executable, "-m", "plugin.cli", "status", "--config", str(cfg), "--json"], cwd=REPO,
                             env=node_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["counts"]["analysed"] == 1 and doc["studies"][0]["state"] == "analysed"
        assert doc["queue"] == {"backend": "sqlite", "ready": 0, "scheduled": 0}
        assert doc["disk"]["free_bytes"] > 0 and doc["disk"]["reserve_present"] is True
        assert doc["retention"]["policy"]["free_space_watermark_percent"] == 10.0
        assert doc["node"]["metrics_port"] == mport and doc["node"]["running"] is True
    finally:
        stop_proc(node)
        stop_proc(archive)
    with pytest.raises(OSError):  # the endpoint goes with the node
        scrape(mport)


def test_status_says_no_analysable_pair_not_analysed(tmp_path):
    layout = StateLayout(tmp_path / "state")
    layout.create()
    study = "1.2.3"
    (layout.study_dir(study)).mkdir(parents=True)
    (layout.manifest_path(study, 1)).write_text(json.dumps({"study_instance_uid": study, "instances": [], "series": []}))
    layout.write_result(study, 1, {"state": "analysed", "n_analyses": 0, "n_lesions": 0, "finished": 1.0,
                                   "skipped": [{"series_instance_uid": "1.2.3.4", "reason": "no phase series"}]})
    doc = collect(layout.root)
    assert doc["counts"]["analysed"] == 0 and doc["counts"]["no_analysable_pair"] == 1
    text = format_status(doc)
    assert "no analysable pair 1.2.3" in text and "1.2.3.4: no phase series" in text, text
    assert "  analysed" not in text


def test_claim_of_a_zombie_worker_is_stale(tmp_path):
    """A worker killed with its node stays a zombie where nothing reaps it; its claim must not hold
    the study for a whole lease after the restart."""
    import socket
    child = subprocess.Popen(["sleep", "0.2"])
    start = _proc_start_ticks(child.pid)
    assert start is not None
    path = tmp_path / "v0001.claim"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": child.pid, "start": start, "time": time.time()}))
    assert not Claim(path, lease_s=3600).acquire(), "a live holder keeps its claim"
    wait_for(lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 10,
             what="the child to be a zombie (not reaped)")
    try:
        assert Claim(path, lease_s=3600).acquire(), "a zombie's claim is stale"
    finally:
        child.wait()


def _environ(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


@pytest.mark.parametrize("setting, site_value, expected", [
    (None, None, "glibc.malloc.hugetlb=1"),                     # the default: restarted with it
    ("false", None, None),                                       # switched off in the config
    (None, "glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # the site's own tunable stands
])
def test_serve_backs_the_workers_malloc_with_huge_pages(tmp_path, setting, site_value, expected):
    """``borderphase serve`` execs itself with GLIBC_TUNABLES glibc.malloc.hugetlb=1 (glibc >= 2.35)
    before it starts anything, so its forked analysis workers' arrays get transparent huge pages
    (plugin/service/memory.py: half the page faults of a study, benchmarks/load.md); the same process
    (PID) then listens and its worker inherits the setting. ``[queue] malloc_hugepages = false``
    leaves malloc alone, and a site's own ``glibc.malloc.hugetlb`` value is kept."""
    from plugin.service.memory import glibc_version
    version = glibc_version()
    if version is None or version < (2, 35):
        pytest.skip(f"glibc.malloc.hugetlb needs glibc >= 2.35 (this C library: {version or 'not glibc'})")
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port)
    if setting is not None:
        cfg.write_text(cfg.read_text().replace("[queue]\n", f"[queue]\nmalloc_hugepages = {setting}\n", 1))
    env = node_env()
    env.pop("GLIBC_TUNABLES", None)
    if site_value:
        env["GLIBC_TUNABLES"] = site_value
    with open(tmp_path / "node.log", "ab") as log:   # the node with the tests' stand-in analysis
        proc = subprocess.Popen([sys.executable, "-m", "node_helpers", "serve", "--config", str(cfg)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, proc=proc)
    try:
        assert _environ(proc.pid).get("GLIBC_TUNABLES") == expected, (tmp_path / "node.log").read_text()
        workers = wait_for(lambda: [p for p in child_pids(proc.pid)
                                    if b"multiprocessing" not in Path(f"/proc/{p}/cmdline").read_bytes()], 20,
                           what="the analysis worker process")
        assert all(_environ(p).get("GLIBC_TUNABLES") == expected for p in workers)
    finally:
        stop_proc(proc)
