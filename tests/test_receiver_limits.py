"""The receiver's C-STORE path inflates a Deflated Explicit VR data set within the reader's bound
(dicom_io.read.limits): a deflate bomb sent by a real dcmtk storescu is refused with 0xA700 and
never reaches the spool callback; an honest deflated instance is stored."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom

from conftest import require_peer
from dicom_io.net.scp import StorageSCP
from dicom_io.read.limits import MAX_INFLATED_BYTES_ENV, decode_dataset, LimitExceeded
from fuzz_mutations import deflate_bomb_bytes
from node_helpers import make_mr_study, node_env

STORESCU = "/usr/bin/storescu"
DCMCONV = "/usr/bin/dcmconv"


def _send_deflated(port: int, path: Path) -> subprocess.CompletedProcess:
    # -xd: propose Deflated Explicit VR Little Endian first, so the file goes as it is stored
    return subprocess.run([str(require_peer(STORESCU, "dcmtk")), "-v", "-xd", "-aet", "SCANNER", "-aec", "NODE",
                           "127.0.0.1", str(port), str(path)], capture_output=True, text=True, timeout=120,
                          env=node_env())


def test_deflate_bomb_refused_honest_deflated_stored(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(MAX_INFLATED_BYTES_ENV, str(16 * 1024**2))
    study = make_mr_study(tmp_path / "in", n_slices=1, components=("M",))
    good_plain = Path(study["files"][0])
    honest = tmp_path / "honest.dcm"
    subprocess.run([str(require_peer(DCMCONV, "dcmtk")), "+td", str(good_plain), str(honest)], check=True,
                   capture_output=True)
    assert str(pydicom.dcmread(honest).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1.99"
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(deflate_bomb_bytes(good_plain.read_bytes(), inflated_bytes=160 * 1024**2))
    assert bomb.stat().st_size < 400 * 1024

    got = []
    scp = StorageSCP("NODE", "127.0.0.1", 0, lambda inst: got.append(inst) or 0)
    scp.start()
    try:
        out = _send_deflated(scp.port, bomb)
        assert "refused: outofresources" in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
        assert got == [] and scp.counters["failed_stores"] == 1
        assert any("refused (0xA700)" in r.getMessage() and "inflates to more than" in r.getMessage()
                   for r in caplog.records)

        out = _send_deflated(scp.port, honest)
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(got) == 1 and got[0].transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
        assert got[0].sop_instance_uid == str(pydicom.dcmread(good_plain).SOPInstanceUID)
        assert got[0].study_instance_uid == str(pydicom.dcmread(good_plain).StudyInstanceUID)
    finally:
        scp.stop()


def test_decode_dataset_bound_is_the_one_limit(tmp_path):
    """The function both the reader and the receiver use: refuses past ``limit``, not below."""
    study = make_mr_study(tmp_path / "in", n_slices=1, components=("M",))
    data = deflate_bomb_bytes(Path(study["files"][0]).read_bytes(), inflated_bytes=8 * 1024**2)
    body = data[144 + int.from_bytes(data[140:144], "little"):]   # the deflated data set after File Meta
    try:
        decode_dataset(body, implicit_vr=False, little_endian=True, deflated=True, limit=4 * 1024**2)
    except LimitExceeded as exc:
        assert "inflates to more than 4.0 MiB" in exc.problem
    else:
        raise AssertionError("an 8 MiB data set passed a 4 MiB bound")
    ds = decode_dataset(body, implicit_vr=False, little_endian=True, deflated=True, limit=9 * 1024**2)
    assert ds.get_item(0x7FE00010).length == 8 * 1024**2
