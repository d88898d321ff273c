"""Transport options: DICOM TLS on the receiver, STOW-RS delivery to a real Orthanc (DICOMweb plugin)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_io.net.scp import StorageSCP, client_ssl_context, server_ssl_context
from dicom_io.net.scu import DicomDestination, SendError, echo, send_files
from dicom_io.net.stow import StowDestination, build_multipart, stow_files
from conftest import require_peer
from node_helpers import DICOMWEB_PLUGIN, ORTHANC, Orthanc, free_port, make_mr_study

OPENSSL = "/usr/bin/openssl"


def _self_signed(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "node.crt", tmp / "node.key"
    subprocess.run([str(require_peer(OPENSSL, "openssl")), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_receiver(tmp_path):
    cert, key = _self_signed(tmp_path)
    got = []
    scp = StorageSCP("NODE", "127.0.0.1", 0, lambda inst: got.append(inst.sop_instance_uid) or 0,
                     ssl_context=server_ssl_context(cert, key))
    scp.start()
    try:
        ctx = client_ssl_context(ca_file=cert)
        study = make_mr_study(tmp_path / "in", n_slices=2, components=("M",))
        send_files(DicomDestination("NODE", "127.0.0.1", scp.port, ssl_context=ctx, timeout_s=10), study["files"])
        assert sorted(got) == sorted(str(dcmread(f).SOPInstanceUID) for f in study["files"])
        # a client speaking clear DICOM to the TLS port gets nowhere
        assert echo(DicomDestination("NODE", "127.0.0.1", scp.port, timeout_s=3)) is False
    finally:
        scp.stop()


def test_multipart_body_is_parseable(tmp_path):
    import email
    study = make_mr_study(tmp_path / "in", n_slices=2, components=("M",))
    body, ctype = build_multipart(study["files"])
    msg = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    parts = msg.get_payload()
    assert msg.get_content_type() == "multipart/related" and len(parts) == 2
    assert [p.get_content_type() for p in parts] == ["application/dicom"] * 2
    assert parts[0].get_payload(decode=True) == study["files"][0].read_bytes()


@pytest.mark.peers
def test_stow_rs_to_orthanc(tmp_path):
    require_peer(ORTHANC, "orthanc")
    require_peer(DICOMWEB_PLUGIN, "orthanc-dicomweb")
    orthanc = Orthanc(tmp_path / "orthanc", free_port(), dicomweb=True).start()
    try:
        study = make_mr_study(tmp_path / "in", n_slices=3, components=("M",))
        url = f"http://127.0.0.1:{orthanc.http_port}/dicom-web/studies"
        stow_files(StowDestination(url, timeout_s=20), study["files"])
        oid = orthanc.find_study(study["study_uid"])
        assert oid and len(orthanc.get(f"/studies/{oid}/instances")) == 3
        with pytest.raises(SendError):
            stow_files(StowDestination(f"http://127.0.0.1:{free_port()}/dicom-web/studies", timeout_s=3),
                       study["files"])
    finally:
        orthanc.stop()


def test_dispatch_over_tls(tmp_path):
    from plugin.service.config import parse_config
    from plugin.service.dispatch import send
    cert, key = _self_signed(tmp_path)
    got = []
    scp = StorageSCP("PACS", "127.0.0.1", 0, lambda inst: got.append(inst.sop_instance_uid) or 0,
                     ssl_context=server_ssl_context(cert, key))
    scp.start()
    try:
        cfg = parse_config({"state_dir": str(tmp_path / "s"), "destinations": {"pacs": {
            "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port, "tls_ca_file": cert}}})
        study = make_mr_study(tmp_path / "in", n_slices=2, components=("M",))
        send(cfg, cfg.destinations["pacs"], study["files"])
        assert len(got) == 2
    finally:
        scp.stop()
