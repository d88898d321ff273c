"""A node an administrator can leave alone (issue 14, network and spool), with real dcmtk senders:
duplicate SOP Instance UIDs, idle connections, file modes, refusals and TLS failures in the log,
client certificates tied to calling AE titles, warning status for broken instances, kill -9 under
two concurrent senders."""
from __future__ import annotations

import grp
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from conftest import require_peer
from node_helpers import (STORESCU, free_port, make_mr_study, node_env, start_serve, stop_proc, storescu,
                          wait_for, write_config)
from reliability_trials import CountingArchive, idle_trial, kill_trial
from plugin.service.spool import Spool
from plugin.service.state import StateLayout
from plugin.service.status import collect

pytestmark = pytest.mark.peers
ECHOSCU = "/usr/bin/echoscu"
OPENSSL = "/usr/bin/openssl"


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_peer(STORESCU, "dcmtk")
    require_peer(ECHOSCU, "dcmtk")


def _versions(layout: StateLayout) -> list[tuple[int, str]]:
    (study,) = layout.studies()
    return [(v, (layout.result(study, v) or {}).get("state")) for v in layout.versions(study)]


def test_duplicate_sop_identical_is_noop_different_is_new_version(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port)
    layout = StateLayout(tmp_path / "state")
    study = make_mr_study(tmp_path / "in", n_slices=3)
    node = start_serve(cfg, port, tmp_path / "node.log")
    try:
        storescu(port, [tmp_path / "in"])
        wait_for(lambda: layout.studies() and _versions(layout) == [(1, "analysed")], 30, what="v1 analysed")
        # the same bytes again: no new version, nothing above DEBUG
        storescu(port, [tmp_path / "in"])
        time.sleep(3.0)  # three quiet periods: a new version would have been made by now
        assert _versions(layout) == [(1, "analysed")]
        assert "different content" not in (tmp_path / "node.log").read_text()

        # one instance changed under the same SOP Instance UID
        changed = study["files"][0]
        original = dcmread(changed)
        ds = dcmread(changed)
        ds.WindowCenter, ds.WindowWidth = 1000, 2000
        ds.PixelData = bytes(len(ds.PixelData))
        ds.save_as(tmp_path / "changed.dcm", enforce_file_format=True)
        storescu(port, [tmp_path / "changed.dcm"])
        wait_for(lambda: _versions(layout) == [(1, "analysed"), (2, "analysed")], 30, what="v2 analysed")
        (study_dir,) = layout.studies()
        first = Spool(layout.spool).path_for(original.StudyInstanceUID, original.SeriesInstanceUID,
                                             original.SOPInstanceUID)
        second = first.with_name(first.name[:-4] + ".v2.dcm")
        assert dcmread(first) == original, "the earlier bytes are kept"
        assert dcmread(second).PixelData == bytes(len(original.PixelData))
        v1, v2 = (set(layout.manifest(study_dir, v)["analyse_instances"]) for v in (1, 2))
        rel = lambda p: p.relative_to(layout.spool / study_dir).as_posix()  # noqa: E731
        assert rel(first) in v1 and rel(second) in v2 and rel(first) not in v2
        assert len(v2) == len(v1) == 6
        log = (tmp_path / "node.log").read_text()
        line = next(l for l in log.splitlines() if "different content" in l)
        assert "WARNING" in line and original.SOPInstanceUID in line and "version 2" in line
        assert "Test^Patient" not in log and "PID-123" not in log
    finally:
        stop_proc(node)


def test_fifty_idle_connections_do_not_lock_out_a_sender(tmp_path):
    """Before: 15 silent sockets answered every sender "Local Limit Exceeded" for about 60 s.
    storescu here gives up after 5 s (connection, ACSE and DIMSE timeouts)."""
    out = idle_trial(tmp_path / "same", n_idle=50, timeout_s=5)
    assert out["stored"], out["output"]
    assert "Local Limit Exceeded" not in out["output"] and "Traceback" not in out["log"]
    # silent peers on another address do not even have to be evicted: they time out
    out = idle_trial(tmp_path / "other", n_idle=50, timeout_s=5, idle_from="127.0.0.2")
    assert out["stored"], out["output"]


def test_a_silent_connection_is_closed_after_the_request_timeout(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port,
                       extra_node="association_request_timeout_s = 1.0")
    node = start_serve(cfg, port, tmp_path / "node.log")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            assert s.recv(10) == b""  # closed by the node (a timeout here would raise)
        wait_for(lambda: "no A-ASSOCIATE-RQ within 1 s" in (tmp_path / "node.log").read_text(), 10,
                 what="the close logged")
    finally:
        stop_proc(node)


def _walk_modes(root: Path) -> tuple[set[int], set[int], set[int]]:
    files, dirs, gids = set(), set(), set()
    for dirpath, dirnames, filenames in os.walk(root):
        st = os.stat(dirpath)
        dirs.add(stat.S_IMODE(st.st_mode))
        gids.add(st.st_gid)
        for name in filenames:
            st = os.stat(Path(dirpath) / name)
            files.add(stat.S_IMODE(st.st_mode))
            gids.add(st.st_gid)
    return files, dirs, gids


@pytest.mark.parametrize("group", [None, "primary"])
def test_file_modes_after_a_real_store(tmp_path, group):
    port = free_port()
    archive = CountingArchive().start()  # a destination, so the outbox is written too
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port, destinations={
        "archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.scp.port}})
    gname = grp.getgrgid(os.getgid()).gr_name if group else None
    if gname:
        cfg.write_text(cfg.read_text() + f'\n[storage]\ngroup = "{gname}"\n')
    layout = StateLayout(tmp_path / "state")
    make_mr_study(tmp_path / "in", n_slices=2)
    node = start_serve(cfg, port, tmp_path / "node.log")
    try:
        storescu(port, [tmp_path / "in"])
        wait_for(lambda: (st := collect(layout.root))["counts"]["analysed"] == 1 and st["outbox"]["sent"] == 1,
                 30, what="study analysed and delivered")
    finally:
        stop_proc(node)
        archive.stop()
    files, dirs, gids = _walk_modes(layout.root)
    names = {p.name for p in layout.root.rglob("*")}
    assert {"findings.json", "queue.sqlite3", "series.json", "analysis_runs.jsonl", "node.json"} <= names
    assert list((layout.outbox_sent).glob("*.json")) and list(layout.root.glob("results/*/v0001/*.dcm"))
    assert any(n.endswith(".dcm") for n in names)
    if gname is None:
        assert files == {0o600} and dirs == {0o700}
    else:
        assert files == {0o640} and dirs == {0o750 | stat.S_ISGID}
        assert gids == {grp.getgrnam(gname).gr_gid}


def test_refused_associations_and_connections_are_logged(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port,
                       extra_node='allowed_calling_ae_titles = ["SCANNER"]\nallowed_networks = ["127.0.0.1/32"]')
    node = start_serve(cfg, port, tmp_path / "node.log")
    try:
        bad = subprocess.run([ECHOSCU, "-aet", "INTRUDER", "-aec", "BPNODE", "127.0.0.1", str(port)],
                             capture_output=True, text=True, timeout=30, env=node_env())
        assert bad.returncode != 0
        wrong_called = subprocess.run([ECHOSCU, "-aet", "SCANNER", "-aec", "NOTUS", "127.0.0.1", str(port)],
                                      capture_output=True, text=True, timeout=30, env=node_env())
        assert wrong_called.returncode != 0
        with socket.socket() as s:  # an address outside the allowed networks: closed at accept
            s.bind(("127.0.0.2", 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            assert s.recv(10) == b""
        ok = subprocess.run([ECHOSCU, "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(port)],
                            capture_output=True, text=True, timeout=30, env=node_env())
        assert ok.returncode == 0, ok.stdout + ok.stderr
        log = wait_for(lambda: (t := (tmp_path / "node.log").read_text()).count("refused") >= 3 and t, 10,
                       what="three refusals logged")
        lines = [l for l in log.splitlines() if "refused" in l]
        assert any("127.0.0.1" in l and "INTRUDER" in l and "not allowed" in l and "WARNING" in l for l in lines)
        assert any("NOTUS" in l and "is not ours" in l for l in lines)
        assert any("127.0.0.2" in l and "before association" in l and "not allowed" in l for l in lines)
    finally:
        stop_proc(node)


def test_a_broken_image_gets_a_warning_status_with_the_reason_logged(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port)
    study = make_mr_study(tmp_path / "in", n_slices=2, components=("M",))
    ds = dcmread(study["files"][0])
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm", enforce_file_format=True)
    node = start_serve(cfg, port, tmp_path / "node.log")
    try:
        out = subprocess.run([STORESCU, "-v", "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(port),
                              str(tmp_path / "nopixels.dcm"), str(study["files"][1])],
                             capture_output=True, text=True, timeout=30, env=node_env())
        text = out.stdout + out.stderr
        responses = [l for l in text.splitlines() if "Received Store Response" in l]
        assert len(responses) == 2 and "Warning" in responses[0] and "Success" in responses[1], text
        assert len(Spool(tmp_path / "state" / "spool").instances(str(ds.StudyInstanceUID))) == 2  # both stored
        log = (tmp_path / "node.log").read_text()
        assert any("0xB007" in l and "no Pixel Data" in l and ds.SOPInstanceUID in l for l in log.splitlines()), log
    finally:
        stop_proc(node)


# -- TLS: failed handshakes logged; a client certificate tied to the calling AE title ---------------
def _openssl(*args: str) -> None:
    subprocess.run([str(require_peer(OPENSSL, "openssl")), *args], check=True, capture_output=True)


def _pki(tmp: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and two client certificates (CN scanner, CN other)."""
    p = {n: tmp / n for n in ("ca.key", "ca.crt")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p["ca.key"]), "-out", str(p["ca.crt"]),
             "-days", "1", "-subj", "/CN=test ca")
    for name, extra in (("server", ["-addext", "subjectAltName=IP:127.0.0.1"]), ("scanner", []), ("other", [])):
        key, csr, crt = tmp / f"{name}.key", tmp / f"{name}.csr", tmp / f"{name}.crt"
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/CN={name}", *extra)
        ext = tmp / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(p["ca.crt"]), "-CAkey", str(p["ca.key"]),
                 "-CAcreateserial", "-out", str(crt), "-days", "1", "-extfile", str(ext))
        p[f"{name}.key"], p[f"{name}.crt"] = key, crt
    return p


def test_tls_failures_logged_and_client_certificate_tied_to_calling_ae(tmp_path):
    import hashlib
    import ssl

    from dicom_io.net.scp import client_ssl_context
    from dicom_io.net.scu import DicomDestination, echo
    pki = _pki(tmp_path)
    other_fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pki["other.crt"].read_text())).hexdigest()
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port,
                       extra_node="association_request_timeout_s = 2.0")
    cfg.write_text(cfg.read_text() + "\n[node.tls]\n" + "\n".join([
        f'cert_file = "{pki["server.crt"]}"', f'key_file = "{pki["server.key"]}"', f'ca_file = "{pki["ca.crt"]}"',
        "require_client_cert = true", "[node.tls.calling_ae_certificates]", 'SCANNER = "CN=scanner"',
        f'OTHERAE = "sha256:{other_fp}"']) + "\n")
    node = start_serve(cfg, port, tmp_path / "node.log")
    log = lambda: (tmp_path / "node.log").read_text()  # noqa: E731

    def over_tls(cert: str, aet: str) -> bool:
        ctx = client_ssl_context(ca_file=str(pki["ca.crt"]), cert_file=str(pki[f"{cert}.crt"]),
                                 key_file=str(pki[f"{cert}.key"]))
        return echo(DicomDestination("BPNODE", "127.0.0.1", port, calling_ae_title=aet, ssl_context=ctx,
                                     timeout_s=10))
    try:
        silent = socket.create_connection(("127.0.0.1", port))  # a silent peer does not block the others
        assert over_tls("scanner", "SCANNER") is True
        assert over_tls("other", "OTHERAE") is True
        assert over_tls("other", "SCANNER") is False   # the wrong certificate for this AE title
        assert over_tls("scanner", "OTHERAE") is False  # the fingerprint pins one certificate
        assert over_tls("scanner", "NOBODY") is False   # an AE title without a certificate
        plain = subprocess.run([ECHOSCU, "-aet", "SCANNER", "-aec", "BPNODE", "127.0.0.1", str(port)],
                               capture_output=True, text=True, timeout=30, env=node_env())
        assert plain.returncode != 0
        wait_for(lambda: "no handshake within 2 s" in log(), 15, what="the silent peer logged as a TLS failure")
        silent.close()
        assert log().count("TLS handshake with 127.0.0.1 failed") == 2, log()  # the clear-text peer and the silent one
        lines = log().splitlines()
        assert any("refused" in l and "SCANNER" in l and "does not match" in l for l in lines)
        assert any("refused" in l and "OTHERAE" in l and "does not match" in l for l in lines)
        assert any("refused" in l and "NOBODY" in l and "no client certificate configured" in l for l in lines)
        assert any("TLS handshake" in l and "no handshake within 2 s" in l for l in lines)
        assert "Traceback" not in log()
    finally:
        stop_proc(node)


def test_kill_9_under_two_concurrent_senders_loses_nothing_acknowledged(tmp_path):
    """Two kill -9 trials (the benchmark runs >= 20): every acknowledged instance is spooled and
    analysed, every result delivered, none twice."""
    for trial, kill_at in enumerate((15, 45)):
        r = kill_trial(tmp_path / f"t{trial}", trial=trial, n_slices=30, kill_at=kill_at)
        assert 0 < r["acknowledged"] < r["instances"], r
        assert r["lost"] == 0 and r["spooled"] == r["acknowledged"], r
        assert r["undelivered"] == 0 and r["duplicate_deliveries"] == 0, r


# -- units: configuration and the connection table ------------------------------------------------
@pytest.mark.parametrize("tls, storage, problem", [
    ({"calling_ae_certificates": {"SCANNER": "md5:00"}}, {}, "node.tls.calling_ae_certificates.SCANNER"),
    ({"calling_ae_certificates": {"SCANNER": "CN=scanner"}, "require_client_cert": False}, {},
     "needs require_client_cert = true and ca_file"),
    ({}, {"group": "no-such-group-here"}, "no such group"),
])
def test_config_refuses_bad_pins_and_groups(tls, storage, problem):
    from plugin.service.config import ConfigError, parse_config
    node_tls = {"cert_file": "c", "key_file": "k", "ca_file": "ca", "require_client_cert": True, **tls}
    with pytest.raises(ConfigError, match=problem):
        parse_config({"state_dir": "/x", "node": {"tls": node_tls}, "storage": storage})


def test_connection_table_evicts_silent_connections_first():
    from dicom_io.net.gate import ConnectionLimits, ConnectionTable
    table = ConnectionTable(ConnectionLimits(max_per_address=2, max_pending=3))
    socks = [socket.socket() for _ in range(7)]
    try:
        a, _, _ = table.admit(socks[0], "10.0.0.1")
        table.associating(a, socks[0])                       # an association: never evicted
        b, _, ev = table.admit(socks[1], "10.0.0.1")
        assert b and not ev
        c, _, ev = table.admit(socks[2], "10.0.0.1")          # over the per-address limit: b goes
        assert c and [e.id for e in ev] == [b.id] and b.evicted
        table.associating(c, socks[2])
        none, reason, _ = table.admit(socks[3], "10.0.0.1")   # two associations: refused
        assert none is None and "limit 2 per address" in reason
        d, _, _ = table.admit(socks[3], "10.0.0.2")
        e, _, _ = table.admit(socks[4], "10.0.0.3")
        f, _, _ = table.admit(socks[5], "10.0.0.4")
        assert table.counts() == {"pending": 3, "associating": 2}
        g, _, ev = table.admit(socks[6], "10.0.0.5")   # over max_pending: the oldest silent one
        assert g and [x.id for x in ev] == [d.id]
    finally:
        for s in socks:
            s.close()


def test_local_limit_refusal_is_logged_with_reason_address_and_ae(caplog):
    """pynetdicom's own refusals (here: maximum_associations reached) are logged like ours."""
    import logging

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from dicom_io.net.scp import StorageSCP
    scp = StorageSCP("NODE", "127.0.0.1", 0, lambda inst: 0, maximum_associations=1)
    scp.start()
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    try:
        held = ae.associate("127.0.0.1", scp.port, ae_title="NODE")
        assert held.is_established
        with caplog.at_level(logging.WARNING, logger="dicom_io.net.scp"):
            second = AE(ae_title="LATECOMER")
            second.add_requested_context(Verification)
            refused = second.associate("127.0.0.1", scp.port, ae_title="NODE")
            assert refused.is_rejected
            wait_for(lambda: scp.counters["refused_associations"] == 1, 10, what="the refusal counted")
        held.release()
        assert any("127.0.0.1" in r.getMessage() and "LATECOMER" in r.getMessage()
                   and "local limit exceeded" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        scp.stop()
