"""The node in-process: receive with dcmtk storescu -> durable spool -> completion -> Huey (SQLite)
-> tiny analysis -> delivery to an archive stand-in; versions on reopen; routing ignore; status."""
from __future__ import annotations

import threading

import pytest
from pydicom import dcmread

from conftest import require_peer
from node_helpers import STORESCU, free_port, make_mr_study, storescu, tiny_analysis, wait_for, write_config
from plugin.service.archive import ArchiveStandIn
from plugin.service.config import load_config
from plugin.service.node import Node
from plugin.service.status import collect

pytestmark = pytest.mark.peers


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_peer(STORESCU, "dcmtk")


@pytest.fixture
def running(tmp_path):
    archive = ArchiveStandIn(tmp_path / "archive").start()
    port = free_port()
    cfg = load_config(write_config(tmp_path / "node.toml", tmp_path / "state", port,
                                   destinations={"archive": {"type": "dicom", "ae_title": "ARCHIVE",
                                                             "host": "127.0.0.1", "port": archive.port}}))
    node = Node(cfg, analyse=tiny_analysis)
    node.start()
    stop = threading.Event()
    t = threading.Thread(target=node.run, args=(stop,), daemon=True)
    t.start()
    yield node, archive, port, tmp_path
    stop.set()
    t.join(5)
    node.stop()
    archive.stop()


def test_receive_analyse_deliver_and_reopen(running):
    node, archive, port, tmp = running
    study = make_mr_study(tmp / "in", n_slices=3)
    storescu(port, [tmp / "in"])
    spooled = node.spool.instances(study["study_uid"])
    assert len(spooled) == 6  # acknowledged => in the spool
    got = wait_for(lambda: archive.files(study["study_uid"]), 30, what="result in archive")
    assert len(got) == 1
    res = dcmread(got[0])
    assert res.StudyInstanceUID == study["study_uid"] and res.SeriesDescription == "borderphase test result"
    s = wait_for(lambda: (d := collect(node.layout.root)) and d["counts"]["analysed"] == 1
                 and not d["outbox"]["pending"] and d, 10)
    assert s["outbox"]["sent"] == 1

    # a late instance reopens the study: a new version, a new result (not a duplicate)
    late = make_mr_study(tmp / "late", n_slices=1, study_uid=study["study_uid"], components=("M",))
    storescu(port, late["files"])
    wait_for(lambda: len(archive.files(study["study_uid"])) == 2, 30, what="second version's result")
    st = collect(node.layout.root)
    versions = st["studies"][0]["versions"]
    assert [v["version"] for v in versions] == [1, 2] and all(v["state"] == "analysed" for v in versions)
    assert versions[1]["n_instances"] == 7

    # resending identical instances does not make a new version
    storescu(port, [tmp / "in"])
    import time
    time.sleep(2.0)
    assert len(collect(node.layout.root)["studies"][0]["versions"]) == 2
    runs = node.layout.runs()
    assert len(runs) == 2


def test_ignored_series_reason_in_status(running):
    node, archive, port, tmp = running
    study = make_mr_study(tmp / "ct", n_slices=2, components=("M",))
    for f in study["files"]:
        ds = dcmread(f)
        ds.Modality = "OT"
        ds.save_as(f)
    storescu(port, study["files"])
    st = wait_for(lambda: (d := collect(node.layout.root)) and d["counts"]["ignored"] == 1 and d, 15)
    assert "not an MR image" in st["studies"][0]["versions"][0]["reason"]
    assert archive.files() == []


def test_failed_analysis_reason_in_status(running):
    import subprocess
    import sys

    from node_helpers import REPO, node_env
    node, archive, port, tmp = running
    make_mr_study(tmp / "bad", n_slices=2, series_description="FAILME gre")
    storescu(port, [tmp / "bad"])
    st = wait_for(lambda: (d := collect(node.layout.root)) and d["counts"]["failed"] == 1 and d, 20)
    assert "ValueError: series asked to fail" in st["studies"][0]["versions"][0]["reason"]
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "status", "--config", str(tmp / "node.toml")],
                         cwd=REPO, env=node_env(), capture_output=True, text=True)
    assert out.returncode == 0 and "failed" in out.stdout and "series asked to fail" in out.stdout, out.stdout
    assert "queue (sqlite)" in out.stdout
    assert archive.files() == []


def test_routing_uses_the_series_facts_recorded_on_receipt(tmp_path):
    """The facts of each series are recorded from its first instance as received, and completion
    routes by them: with the spooled files' headers destroyed after receipt, the study still
    completes with the right facts and is routed to analysis (reading the files would fail)."""
    from plugin.service.spool import safe_uid
    port = free_port()
    cfg = load_config(write_config(tmp_path / "node.toml", tmp_path / "state", port, workers=0))
    node = Node(cfg, analyse=tiny_analysis)
    node.start()
    try:
        study = make_mr_study(tmp_path / "in", n_slices=2, manufacturer="GE MEDICAL SYSTEMS")
        storescu(port, [tmp_path / "in"])
        sdir = safe_uid(study["study_uid"])
        for comp, series_uid in study["series_uids"].items():
            rec = node.spool.series_record(sdir, safe_uid(series_uid))
            assert rec is not None, f"no series record for component {comp}"
            assert (rec["study_instance_uid"], rec["series_instance_uid"]) == (study["study_uid"], series_uid)
            assert (rec["modality"], rec["manufacturer"], rec["series_description"]) == (
                "MR", "GE MEDICAL SYSTEMS", f"swi gre {comp}")
            assert rec["image_type"] == ["ORIGINAL", "PRIMARY", comp, "ND"]
            assert (rec["calling_ae"], rec["called_ae"]) == ("SCANNER", "BPNODE")
        spooled = node.spool.instances(sdir)
        assert len(spooled) == 4
        for rel in spooled:
            (node.layout.spool / sdir / rel).write_bytes(b"no longer DICOM")
        assert wait_for(lambda: node.step(), 10, what="study complete") == [1]
        manifest = node.layout.manifest(sdir, 1)
        assert manifest["study_instance_uid"] == study["study_uid"]
        assert sorted(manifest["analyse_instances"]) == spooled
        assert {(s["series_instance_uid"], s["action"], s["rule"], s["manufacturer"]) for s in manifest["series"]} == {
            (uid, "analyse", "mr", "GE MEDICAL SYSTEMS") for uid in study["series_uids"].values()}
        assert collect(node.layout.root)["counts"]["pending"] == 1
    finally:
        node.stop()


def test_a_series_without_recorded_facts_is_ignored_with_the_reason(tmp_path):
    from plugin.service.node import route_series
    cfg = load_config(write_config(tmp_path / "node.toml", tmp_path / "state", free_port()))
    facts, decision = route_series(cfg, "1.2.3", None)
    assert facts.series_instance_uid == "1.2.3" and decision.action == "ignore"
    assert "no series facts were recorded" in decision.reason
    record = {"study_instance_uid": "1.2", "series_instance_uid": "1.2.3", "calling_ae": "SCANNER",
              "called_ae": "BPNODE", "address": "127.0.0.1", "received": 0.0, "modality": "MR",
              "manufacturer": "", "series_description": "", "image_type": [], "unreadable": "cannot decode ImageType (ValueError)"}
    assert route_series(cfg, "1.2.3", record)[1].reason == "cannot decode ImageType (ValueError)"
    del record["unreadable"]
    assert route_series(cfg, "1.2.3", record)[1].action == "analyse"


def test_a_series_record_without_instances_is_no_study(tmp_path):
    """A crash between writing a series record and storing its first instance (never acknowledged)
    leaves a record alone: status shows no study and restart does not make one due."""
    cfg = load_config(write_config(tmp_path / "node.toml", tmp_path / "state", free_port(), workers=0))
    node = Node(cfg, analyse=tiny_analysis)
    node.spool.write_series_record("1.2.3", "1.2.3.4", {"series_instance_uid": "1.2.3.4"})
    assert node.spool.studies() == ["1.2.3"] and node.spool.instances("1.2.3") == []
    assert collect(node.layout.root)["studies"] == []
    assert node.reconcile()["studies_due"] == 0 and node.tracker.pending() == []
