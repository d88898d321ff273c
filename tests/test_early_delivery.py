"""Result files delivered as they are written (issue 15): dicom_io.net.scu.StoreStream sends each
file over one association while the producer goes on, to a real Orthanc; the outbox then sends
only what the destination did not already accept early (plugin.service.dispatch)."""
from __future__ import annotations

import json
import time

import pytest
from pydicom import dcmread
from pydicom.uid import MRImageStorage, generate_uid

from conftest import require_peer
from dicom_io.net.scu import DicomDestination, StoreStream
from node_helpers import ORTHANC, Orthanc, free_port, make_mr_study, wait_for

pytestmark = [pytest.mark.peers]


def _orthanc_has(orthanc: Orthanc, sop_uid: str) -> bool:
    hits = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}})
    return bool(hits)


def test_stream_sends_each_file_before_the_next_is_given_and_stops_at_a_refused_class(tmp_path):
    require_peer(ORTHANC, "orthanc")
    study = make_mr_study(tmp_path / "in", n_slices=3, components=("M",))
    files = study["files"]
    private = tmp_path / "private.dcm"
    ds = dcmread(files[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.3.12.2.1107.5.9.1"   # not proposed below
    ds.save_as(private, enforce_file_format=True)
    orthanc = Orthanc(tmp_path / "orthanc", free_port()).start()
    try:
        stream = StoreStream(DicomDestination("ORTHANC", "127.0.0.1", orthanc.dicom_port, timeout_s=10),
                             {MRImageStorage: ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]})
        for p in files[:2]:
            stream.put(p)
            uid = str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            # in the archive while the producer still holds the stream open
            wait_for(lambda: _orthanc_has(orthanc, uid), 20, what="early C-STORE")
        stream.put(private)
        stream.put(files[2])   # after the refusal: left for the ordinary delivery
        accepted = stream.close()
        assert accepted == [str(p) for p in files[:2]] and set(stream.accepted_at) == set(accepted)
        assert stream.error and "private.dcm" in stream.error
        assert not _orthanc_has(orthanc, str(dcmread(files[2]).SOPInstanceUID))
    finally:
        orthanc.stop()


def test_stream_reopens_an_association_the_archive_closed_while_idle(tmp_path):
    require_peer(ORTHANC, "orthanc")
    files = make_mr_study(tmp_path / "in", n_slices=2, components=("M",))["files"]
    orthanc = Orthanc(tmp_path / "orthanc", free_port())
    cfg = json.loads(orthanc.config_path.read_text())
    cfg["DicomScpTimeout"] = 1          # closes an association idle for 1 s (default 30)
    orthanc.config_path.write_text(json.dumps(cfg))
    orthanc.start()
    try:
        stream = StoreStream(DicomDestination("ORTHANC", "127.0.0.1", orthanc.dicom_port, timeout_s=10),
                             {MRImageStorage: ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]})
        stream.put(files[0])
        uid = str(dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
        wait_for(lambda: _orthanc_has(orthanc, uid), 20, what="first C-STORE")
        time.sleep(4)                   # the producer busy: Orthanc drops the idle association
        stream.put(files[1])
        assert stream.close() == [str(p) for p in files] and stream.error is None
        assert _orthanc_has(orthanc, str(dcmread(files[1], stop_before_pixels=True).SOPInstanceUID))
    finally:
        orthanc.stop()


def test_outbox_sends_only_what_was_not_accepted_early(tmp_path):
    from plugin.service.archive import ArchiveStandIn
    from plugin.service.config import parse_config
    from plugin.service.dispatch import create_outbox_entries, deliver_entry, entry_id
    from plugin.service.state import StateLayout
    study = make_mr_study(tmp_path / "in", n_slices=3, components=("M",))
    files = study["files"]
    archive = ArchiveStandIn(tmp_path / "archive").start()
    try:
        cfg = parse_config({"state_dir": str(tmp_path / "state"), "node": {"port": free_port()},
                            "queue": {"workers": 0},
                            "destinations": {"arch": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.port}}})
        layout = StateLayout(cfg.state_dir)
        layout.create()
        manifest = {"study_instance_uid": study["study_uid"], "destinations": ["arch"]}
        t_early = time.time()
        ids = create_outbox_entries(cfg, layout, "s1", 1, manifest, files, {"arch": {str(files[0]): t_early}})
        assert ids == [entry_id("s1", 1, "arch")]
        assert deliver_entry(cfg, ids[0]) is None
        sent = json.loads((layout.outbox_sent / f"{ids[0]}.json").read_text())
        assert sent["accepted_early"] == {str(files[0]): t_early} and t_early <= sent["delivered"] <= time.time()
        got = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in archive.files()}
        want = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files[1:]}
        assert got == want   # the early one was not sent twice
    finally:
        archive.stop()
