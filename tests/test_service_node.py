"""The node in-process: receive with dcmtk storescu -> durable spool -> completion -> Huey (SQLite)
-> tiny analysis -> delivery to an archive stand-in; versions on reopen; routing ignore; status."""
from __future__ import annotations

import threading

import pytest
from pydicom import dcmread

from conftest import require_peer
from node_helpers import STORESCU, free_port, make_mr_study, storescu, wait_for, write_config
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
    node = Node(cfg)
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
