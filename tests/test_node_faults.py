"""Fault tests with real peers (dcmtk, Orthanc): archive outage, kill -9 of the node during a
transfer / during analysis / with undelivered results, access control, garbage on the port,
Out of Resources. A tiny real analysis keeps these about the service, not the method."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import require_peer
from reliability_trials import acknowledged
from node_helpers import (ORTHANC, STORESCU, Orthanc, free_port, make_mr_study, node_env, start_serve,
                          stop_proc, storescu, wait_for, write_config)
from plugin.service.spool import Spool
from plugin.service.state import StateLayout
from plugin.service.status import collect

pytestmark = pytest.mark.peers
ECHOSCU = "/usr/bin/echoscu"


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_peer(ORTHANC, "orthanc")
    require_peer(STORESCU, "dcmtk")
    require_peer(ECHOSCU, "dcmtk")


def _setup(tmp_path, *, orthanc_up=True, **cfg_kw):
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", node_port)
    if orthanc_up:
        orthanc.start()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", node_port, retry_initial_s=0.5, retry_max_s=1.0,
                       destinations={"orthanc": {"ae_title": "ORTHANC", "host": "127.0.0.1",
                                                 "port": orthanc.dicom_port}}, **cfg_kw)
    return node_port, orthanc, cfg, StateLayout(tmp_path / "state")


def _result_uids(layout: StateLayout) -> set[str]:
    out = set()
    for study in layout.studies():
        for v in layout.versions(study):
            r = layout.result(study, v) or {}
            for f in r.get("result_files", []):
                out.add(str(dcmread(layout.results_dir(study, v) / f, stop_before_pixels=True).SOPInstanceUID))
    return out


def _orthanc_sops(orthanc: Orthanc) -> list[str]:
    return [orthanc.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in orthanc.get("/instances")]


def _all_analysed(layout, n):
    st = collect(layout.root)
    return st if (st["counts"]["analysed"] == n and len(st["studies"]) == n and not st["outbox"]["pending"]) else None


def test_archive_down_then_up_everything_arrives_once(tmp_path):
    node_port, orthanc, cfg, layout = _setup(tmp_path, orthanc_up=False)
    node = start_serve(cfg, node_port, tmp_path / "node.log")
    try:
        for i in range(3):
            make_mr_study(tmp_path / f"in{i}", n_slices=2)
        storescu(node_port, [tmp_path / f"in{i}" for i in range(3)])
        st = wait_for(lambda: (d := collect(layout.root)) and len(d["outbox"]["pending"]) == 3
                      and all(e["attempts"] >= 2 for e in d["outbox"]["pending"]) and d, 60,
                      what="3 deliveries failing while Orthanc is down")
        assert all("ORTHANC" in e["target"] and e["last_error"] for e in st["outbox"]["pending"])
        orthanc.start()
        wait_for(lambda: _all_analysed(layout, 3), 60, what="outbox drained")
        sops = _orthanc_sops(orthanc)
        assert sorted(sops) == sorted(_result_uids(layout)) and len(sops) == len(set(sops)) == 3
    finally:
        stop_proc(node)
        orthanc.stop()


def test_kill_during_transfer_loses_nothing_acknowledged(tmp_path):
    """The promise: every instance the node acknowledged before kill -9 is in the spool, intact,
    and in the analysis after restart. How many were acknowledged is up to the race between the
    kill and the transfer; it only has to be some, and not all."""
    node_port, orthanc, cfg, layout = _setup(tmp_path)
    study = make_mr_study(tmp_path / "in", n_slices=150, rows=512, cols=512)  # ~2.5 s of transfer
    node = start_serve(cfg, node_port, tmp_path / "node.log")
    try:
        log = open(tmp_path / "storescu.log", "w")
        sender = subprocess.Popen([STORESCU, "-v", "-aet", "SCANNER", "-aec", "BPNODE", "-nh", "127.0.0.1",
                                   str(node_port), *[str(f) for f in study["files"]]],
                                  stdout=log, stderr=subprocess.STDOUT, env=node_env())
        spool = Spool(layout.spool)
        wait_for(lambda: len(spool.instances(study["study_uid"])) >= 30, 60, interval_s=0.01,
                 what="transfer under way")
        node.send_signal(signal.SIGKILL)
        node.wait()
        sender.wait(60)
        log.close()
        acked = acknowledged((tmp_path / "storescu.log").read_text())
        # storescu waits for each response before sending the next file, so with 30 spooled at
        # least 29 were acknowledged; the rest of the 300 (~2 s) cannot have gone in a poll interval
        assert 0 < len(acked) < len(study["files"]), f"{len(acked)} acknowledged: the kill missed the transfer"
        spooled = {}
        for f in acked:  # every acknowledged instance is in the spool, intact
            ds = dcmread(f)
            p = spool.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            assert p.exists(), f"acknowledged {Path(f).name} lost"
            assert dcmread(p) == ds
            spooled[f] = p
        node = start_serve(cfg, node_port, tmp_path / "node.log")
        assert list(spool.tmp.iterdir()) == []
        storescu(node_port, [tmp_path / "in"])  # the scanner re-sends the failed transfer
        st = wait_for(lambda: (d := _all_analysed(layout, 1)) and d["studies"][0]["n_spooled"] == 300 and
                      d["studies"][0]["versions"][-1]["n_instances"] == 300 and d, 90, what="study analysed")
        assert st["studies"][0]["state"] == "analysed"
        # ... and every acknowledged instance went into the analysis that was delivered
        (study_dir,) = layout.studies()
        version = layout.versions(study_dir)[-1]
        analysed = set(layout.manifest(study_dir, version)["analyse_instances"])
        assert (layout.result(study_dir, version) or {}).get("state") == "analysed"
        missing = [Path(f).name for f, p in spooled.items()
                   if p.relative_to(layout.spool / study_dir).as_posix() not in analysed]
        assert not missing, f"acknowledged but not analysed: {missing[:5]}"
        assert set(_result_uids(layout)) <= set(_orthanc_sops(orthanc))
    finally:
        stop_proc(node)
        orthanc.stop()


@pytest.mark.parametrize("speculative", [False, True])
def test_kill_during_analysis_reruns_it(tmp_path, speculative):
    """kill -9 while the analysis runs (it sleeps 30 s in the test's analysis function), restart:
    the study is analysed again, once, and its results reach Orthanc. With ``[queue] speculative``
    (the default) the analysis may start at the association release, before completion, and then
    logs its run only when it is adopted: "started" is then its speculation record."""
    node_port, orthanc, cfg, layout = _setup(tmp_path)
    if not speculative:
        cfg.write_text(cfg.read_text().replace("[queue]\n", "[queue]\nspeculative = false\n", 1))
    node = start_serve(cfg, node_port, tmp_path / "node.log", BORDERPHASE_TEST_ANALYSIS_DELAY_S="30")
    try:
        study = make_mr_study(tmp_path / "in", n_slices=3)
        storescu(node_port, [tmp_path / "in"])
        wait_for(lambda: layout.runs() or list(layout.study_dir(study["study_uid"]).glob("spec-*.json")), 30,
                 what="analysis started")
        node.send_signal(signal.SIGKILL)
        node.wait()
        if not speculative:
            assert collect(layout.root)["counts"]["pending"] == 1
        node = start_serve(cfg, node_port, tmp_path / "node.log")
        st = wait_for(lambda: _all_analysed(layout, 1), 60, what="analysis re-run after restart")
        runs = layout.runs()
        if not speculative:
            assert [(r["study"], r["version"]) for r in runs] == [(runs[0]["study"], 1)] * 2
        assert {(r["study"], r["version"]) for r in runs} == {(runs[0]["study"], 1)}
        assert len(st["studies"][0]["versions"]) == 1
        assert _orthanc_sops(orthanc) == sorted(_result_uids(layout))
    finally:
        stop_proc(node)
        orthanc.stop()


def test_kill_with_undelivered_results_resends_after_restart(tmp_path):
    node_port, orthanc, cfg, layout = _setup(tmp_path, orthanc_up=False)
    node = start_serve(cfg, node_port, tmp_path / "node.log")
    try:
        make_mr_study(tmp_path / "in", n_slices=2)
        storescu(node_port, [tmp_path / "in"])
        wait_for(lambda: (d := collect(layout.root)) and d["outbox"]["pending"] and d, 30, what="pending delivery")
        node.send_signal(signal.SIGKILL)
        node.wait()
        orthanc.start()
        node = start_serve(cfg, node_port, tmp_path / "node.log")
        wait_for(lambda: _all_analysed(layout, 1), 60, what="delivery after restart")
        assert _orthanc_sops(orthanc) == sorted(_result_uids(layout))
    finally:
        stop_proc(node)
        orthanc.stop()


def _echo(port: int, aet: str = "SCANNER") -> subprocess.CompletedProcess:
    return subprocess.run([ECHOSCU, "-aet", aet, "-aec", "BPNODE", "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=30, env=node_env())


def test_access_control_garbage_and_out_of_resources(tmp_path):
    node_port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", node_port,
                       extra_node='allowed_calling_ae_titles = ["SCANNER"]\nallowed_networks = ["127.0.0.0/8"]')
    layout = StateLayout(tmp_path / "state")
    node = start_serve(cfg, node_port, tmp_path / "node.log")
    try:
        make_mr_study(tmp_path / "in", n_slices=2)
        # a calling AE not on the whitelist is rejected; nothing spooled
        out = storescu(node_port, [tmp_path / "in"], aet="INTRUDER", check=False)
        assert out.returncode != 0 and "Rejected" in (out.stdout + out.stderr), out.stdout + out.stderr
        assert not Spool(layout.spool).studies()
        # a wrong called AE title is rejected too
        bad = subprocess.run([ECHOSCU, "-aet", "SCANNER", "-aec", "OTHER", "127.0.0.1", str(node_port)],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0
        # garbage and truncated PDUs do not take the node down
        for payload in (os.urandom(5000), b"\x01\x00\x00\x00\x10\x00" + b"\x00\x01" + b"A" * 20,
                        struct.pack(">BBI", 0x04, 0, 0xFFFFFF) + b"\x00" * 10, b"\x01\x00" + b"\xff" * 3, b""):
            with socket.create_connection(("127.0.0.1", node_port), timeout=5) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                try:
                    s.recv(100)
                except OSError:
                    pass
        half = socket.create_connection(("127.0.0.1", node_port), timeout=5)  # left open, truncated
        half.sendall(b"\x01\x00\x00\x00\x01\x00")
        assert node.poll() is None
        assert _echo(node_port).returncode == 0
        storescu(node_port, [tmp_path / "in"])
        wait_for(lambda: collect(layout.root)["counts"]["analysed"] == 1, 30, what="study analysed after garbage")
        half.close()
        log = (tmp_path / "node.log").read_text()
        assert "Test^Patient" not in log and "PID-123" not in log, "no PHI in the node's log"
        assert "INTRUDER" in log or "Rejecting" in log
    finally:
        stop_proc(node)

    # a full spool answers Out of Resources (0xA700): the sender keeps the data
    cfg2 = write_config(tmp_path / "node2.toml", tmp_path / "state2", node_port, extra_node="min_free_mb = 1e12")
    cfg2.write_text(cfg2.read_text().replace("min_free_mb = 0\n", ""))
    node = start_serve(cfg2, node_port, tmp_path / "node2.log")
    try:
        out = subprocess.run([STORESCU, "-v", "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(node_port),
                              *[str(f) for f in sorted((tmp_path / "in").iterdir())]],
                             capture_output=True, text=True, timeout=60, env=node_env())
        text = out.stdout + out.stderr
        assert "Refused: OutOfResources" in text, text
        assert "Received Store Response (Success)" not in text
        assert not Spool(tmp_path / "state2" / "spool").studies()
    finally:
        stop_proc(node)


def test_second_node_on_same_state_dir_refused(tmp_path):
    port1, port2 = free_port(), free_port()
    cfg1 = write_config(tmp_path / "a.toml", tmp_path / "state", port1)
    cfg2 = write_config(tmp_path / "b.toml", tmp_path / "state", port2)
    node = start_serve(cfg1, port1, tmp_path / "a.log")
    try:
        import sys
        out = subprocess.run([sys.executable, "-m", "plugin.cli", "serve", "--config", str(cfg2)], env=node_env(),
                             capture_output=True, text=True, timeout=60, cwd=str(Path(__file__).resolve().parents[1]))
        assert out.returncode == 2 and "already running" in out.stderr, out.stderr
    finally:
        stop_proc(node)
