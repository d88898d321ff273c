"""Speculative analysis (issue 15, plugin/service/speculation.py) with the real node, dcmtk
storescu and a real Orthanc: the analysis starts at the association release, during the completion
grace; its results leave the node only once completion snapshots the same instances, and are then
reused rather than analysed again; a late instance during the grace discards them unsent."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import require_peer
from node_helpers import ORTHANC, STORESCU, Orthanc, free_port, make_mr_study, storescu, wait_for, write_config
from plugin.service.config import load_config
from plugin.service.node import Node
from plugin.service.status import collect, format_status

pytestmark = pytest.mark.peers

RESULT_DESCRIPTION = "speculation test result"


def recording_analysis(paths, out_dir, *, on_result_file=None, **kwargs) -> dict:
    """A real stand-in analysis (runs in the node's forked worker): records each call (number of
    inputs) in ``$SPECULATION_TEST_RUNS``, writes two derived MR objects that name their number of
    inputs (ImageComments), reporting each as written, ``$SPECULATION_TEST_DELAY_S`` apart."""
    with open(os.environ["SPECULATION_TEST_RUNS"], "a") as fh:
        fh.write(json.dumps({"n_inputs": len(paths), "t": time.time()}) + "\n")
    out = Path(out_dir)
    first = dcmread(paths[0])
    series_uid = generate_uid()
    for k in range(2):
        ds = dcmread(paths[0])
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 990, k + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesDescription, ds.ImageType = RESULT_DESCRIPTION, ["DERIVED", "SECONDARY"]
        ds.ImageComments = f"inputs={len(paths)}"
        p = out / f"result{k}.dcm"
        ds.save_as(p, enforce_file_format=True)
        if on_result_file is not None:
            on_result_file(p)
        if k == 0:
            time.sleep(float(os.environ.get("SPECULATION_TEST_DELAY_S", "0")))
    doc = {"schema": "borderphase.findings/1", "skipped": [], "analyses": [{
        "study_instance_uid": str(first.StudyInstanceUID), "n_inputs": len(paths), "lesions": []}]}
    (out / "findings.json").write_text(json.dumps(doc))
    return doc


def runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def result_comments(orthanc: Orthanc, study_uid: str) -> list[str]:
    """ImageComments of every result object of the study in Orthanc."""
    out = []
    for series in orthanc.series_of(study_uid):
        if series["MainDicomTags"].get("SeriesDescription") != RESULT_DESCRIPTION:
            continue
        for inst in series["Instances"]:
            out.append(orthanc.get(f"/instances/{inst}/simplified-tags").get("ImageComments"))
    return sorted(out)


@pytest.fixture
def node_to_orthanc(tmp_path, monkeypatch):
    """start(delay_s) -> (node, orthanc, port, runs file): the node in this process (one forked
    worker running :func:`recording_analysis`), delivering to a real Orthanc. Its release grace is
    long (the machine may be busy): the test ends it with :func:`complete_now` once the
    speculation has got where the test wants it."""
    require_peer(STORESCU, "dcmtk")
    require_peer(ORTHANC, "orthanc")
    made = []

    def start(delay_s: float, poll_s: float = 0.1):
        runs_file = tmp_path / "runs.jsonl"
        monkeypatch.setenv("SPECULATION_TEST_RUNS", str(runs_file))
        monkeypatch.setenv("SPECULATION_TEST_DELAY_S", str(delay_s))
        orthanc = Orthanc(tmp_path / "orthanc", free_port()).start()
        made.append(orthanc)
        port = free_port()
        cfg = load_config(write_config(
            tmp_path / "node.toml", tmp_path / "state", port, quiet_s=600.0, grace_s=300.0,
            destinations={"orthanc": {"type": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                      "port": orthanc.dicom_port}}))
        assert cfg.queue.speculative   # the default
        node = Node(cfg, analyse=recording_analysis)
        node.start()
        stop = threading.Event()
        t = threading.Thread(target=node.run, args=(stop, poll_s), daemon=True)
        t.start()
        made.append((node, stop, t))
        return node, orthanc, port, runs_file

    yield start
    for m in reversed(made):
        if isinstance(m, tuple):
            node, stop, t = m
            stop.set()
            node._wake.set()   # the loop looks at ``stop`` now, not after its poll_s
            t.join(5)
            node.stop()
        else:
            m.stop()


def complete_now(node: Node) -> None:
    """End the release grace now: the released study completes at the node's next step."""
    node.tracker.release_grace_s = 0.0


def staged_file(node: Node, study_uid: str, name: str) -> list[Path]:
    return list((node.layout.root / "results" / study_uid).glob(f"spec-*/{name}"))


def _finished(node: Node, n: int):
    st = collect(node.layout.root)
    done = [s for s in st["studies"] if s["state"] in ("analysed", "failed")]
    return st if len(done) == n and not st["outbox"]["pending"] else None


def _accepted_times(node: Node, study_uid: str) -> list[float]:
    """When Orthanc accepted each result object (the early stream's times, else the delivery)."""
    out = []
    for p in node.layout.outbox_sent.glob(f"{study_uid}-v*.json"):
        entry = json.loads(p.read_text())
        early = entry.get("accepted_early") or {}
        out += [early.get(f, entry["delivered"]) for f in entry["files"]]
    return out


def test_the_speculation_is_queued_at_the_association_release_not_at_the_next_poll(tmp_path, node_to_orthanc):
    """The node's loop wakes at an association end (issue 15: the release -> speculation start
    was up to a poll interval, directly on the way to the SR). With a 60 s poll interval the
    speculation's record must still appear within seconds of storescu's release."""
    node, orthanc, port, runs_file = node_to_orthanc(delay_s=0.0, poll_s=60.0)
    study = make_mr_study(tmp_path / "in", n_slices=2)
    time.sleep(0.5)                  # the loop's first step is done: it waits its 60 s now
    storescu(port, study["files"])
    released = time.time()
    wait_for(lambda: list(node.layout.study_dir(study["study_uid"]).glob("spec-*.json")), 20, interval_s=0.02,
             what="speculation recorded after the release")
    assert time.time() - released < 20
    wait_for(lambda: runs(runs_file), 30, interval_s=0.05, what="speculative analysis started")
    assert [r["n_inputs"] for r in runs(runs_file)] == [4]


def test_a_late_instance_during_the_grace_discards_the_speculation_unsent(tmp_path, node_to_orthanc):
    node, orthanc, port, runs_file = node_to_orthanc(delay_s=6.0)
    study = make_mr_study(tmp_path / "in", n_slices=3)          # 6 instances
    files = sorted(study["files"])
    storescu(port, files[:5])                                    # released: the speculation starts
    # its first result file is written (staged) before the late instance comes
    wait_for(lambda: staged_file(node, study["study_uid"], "result0.dcm"), 60, interval_s=0.05,
             what="speculative analysis wrote its first result")
    storescu(port, files[5:])                                    # a late instance within the grace
    complete_now(node)               # and completion while the 5-instance speculation still runs
    wait_for(lambda: node.layout.versions(study["study_uid"]), 20, interval_s=0.05, what="completion")
    assert staged_file(node, study["study_uid"], "result0.dcm"), "the speculation ended before completion"
    wait_for(lambda: _finished(node, 1), 60, what="study analysed and delivered")

    layout = node.layout
    versions = layout.versions(study["study_uid"])
    assert versions == [1], "the late instance came after completion: this test needs it within the grace"
    assert len(layout.manifest(study["study_uid"], 1)["instances"]) == 6
    # the speculation of 5 instances did run (and wrote a result file before the late instance came) ...
    assert [r["n_inputs"] for r in runs(runs_file)] == [5, 6]
    # ... and none of its objects reached the archive: only the 6-instance results did
    assert result_comments(orthanc, study["study_uid"]) == ["inputs=6", "inputs=6"]
    result = layout.result(study["study_uid"], 1)
    assert result["state"] == "analysed"
    assert not list(layout.study_dir(study["study_uid"]).glob("spec-*")), "staging records left behind"
    assert not list((layout.root / "results" / study["study_uid"]).glob("spec-*")), "staging folder left behind"


@pytest.mark.parametrize("how", ["confirmed", "adopted"],
                         ids=["completion-while-it-runs", "finished-before-completion"])
def test_the_speculative_result_is_delivered_once_completion_confirms_it_and_not_redone(
        tmp_path, node_to_orthanc, how):
    node, orthanc, port, runs_file = node_to_orthanc(delay_s=3.0 if how == "confirmed" else 0.0)
    study = make_mr_study(tmp_path / "in", n_slices=3)
    storescu(port, [tmp_path / "in"])
    uid = study["study_uid"]
    if how == "confirmed":   # completion while the analysis runs, its first result file staged
        wait_for(lambda: staged_file(node, uid, "result0.dcm"), 60, interval_s=0.05, what="first result staged")
    else:                    # completion after the speculation finished and was staged
        wait_for(lambda: list(node.layout.study_dir(uid).glob("spec-*.staged.json")), 60, interval_s=0.05,
                 what="speculation staged")
    time.sleep(0.5)
    assert not orthanc.series_of(uid), "something was delivered before completion"
    complete_now(node)
    wait_for(lambda: _finished(node, 1), 60, what="study analysed and delivered")

    manifest, result = node.layout.manifest(uid, 1), node.layout.result(uid, 1)
    assert [r["n_inputs"] for r in runs(runs_file)] == [6], "analysed again instead of reusing the speculation"
    spec = result["speculative"]
    assert how in spec, spec
    # it ran during the grace: started before completion snapshotted the study
    assert spec["started"] < manifest["created"] and runs(runs_file)[0]["t"] < manifest["created"]
    # nothing reached the archive before completion confirmed the instance set
    accepted = _accepted_times(node, uid)
    assert len(accepted) == 2 and min(accepted) >= manifest["created"]
    assert result_comments(orthanc, uid) == ["inputs=6", "inputs=6"]
    assert sorted(result["result_files"]) == ["result0.dcm", "result1.dcm"]
    assert (node.layout.results_dir(uid, 1) / "result0.dcm").exists()
    findings = json.loads((node.layout.results_dir(uid, 1) / "findings.json").read_text())
    assert findings["analyses"][0]["n_inputs"] == 6
    assert [r.get("speculative") for r in node.layout.runs()] == [True]


def _status(node: Node, *options: str) -> str:
    """``borderphase status`` as an administrator runs it, in its own process."""
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "status", "--state-dir", str(node.layout.root), *options],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_status_shows_a_speculation_running_then_staged_then_gone(tmp_path, node_to_orthanc):
    """``borderphase status`` (text and --json) shows a study analysed speculatively during the
    grace: running (with its instance count and age), then staged, then nothing once adopted."""
    node, orthanc, port, runs_file = node_to_orthanc(delay_s=4.0)
    study = make_mr_study(tmp_path / "in", n_slices=3)          # 6 instances
    uid = study["study_uid"]
    t_release = time.time()
    storescu(port, [tmp_path / "in"])
    wait_for(lambda: staged_file(node, uid, "result0.dcm"), 60, interval_s=0.05, what="speculation running")
    # while it runs (read in this process: the CLI's start-up may outlast the analysis on a busy machine)
    doc = collect(node.layout.root)
    [spec] = doc["speculations"]
    assert spec["study_instance_uid"] == uid and spec["state"] == "running", spec
    assert spec["n_instances"] == 6 and spec["n_analyse_instances"] == 6 and spec["base_version"] == 0
    assert 0 <= spec["age_s"] <= time.time() - t_release + 1 and spec["running_s"] <= spec["age_s"] + 1
    [s] = doc["studies"]
    assert s["state"] == "receiving" and s["speculations"] == [spec]
    text = format_status(doc)
    assert "speculations: 1 (running 1)" in text, text
    assert re.search(rf"speculating +{re.escape(uid)} instances=6 \(analysed 6\) as v1, released \d+\.\d s ago, "
                     r"running \d+\.\d s", text), text

    # staged until completion: the CLI, text and --json
    wait_for(lambda: list(node.layout.study_dir(uid).glob("spec-*.staged.json")), 60, interval_s=0.05,
             what="speculation staged")
    doc = json.loads(_status(node, "--json"))
    [spec] = doc["speculations"]
    assert spec["study_instance_uid"] == uid and spec["n_instances"] == 6, spec
    assert spec["state"] == "staged" and spec["staged_s"] >= 0 and spec["running_s"] is None, spec
    text = _status(node)
    assert "speculations: 1 (staged 1)" in text, text
    assert re.search(rf"staged +{re.escape(uid)} instances=6 .* staged \d+\.\d s ago", text), text

    complete_now(node)
    wait_for(lambda: _finished(node, 1), 60, what="study analysed and delivered")
    doc = json.loads(_status(node, "--json"))
    assert doc["speculations"] == [] and doc["studies"][0]["state"] == "analysed"
    assert "speculations:" not in _status(node)
