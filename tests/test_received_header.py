"""The C-STORE handler reads only the header of what pynetdicom wrote (the first 64 KiB, parsed in
memory, values over 1 KiB deferred) and still sees every attribute: a real dcmtk storescu sends
instances whose header is short, whose large private value sits in the middle of the header, and
whose header runs past the 64 KiB prefix; the callback must see the attributes after the large
values and the Pixel Data length, and the spooled file must be the sent data set, byte for byte."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import require_peer
from dicom_io.net.instance_check import instance_problems, value_length
from dicom_io.net.scp import HEADER_READ_BYTES, StorageSCP
from node_helpers import STORESCU, make_mr_study, node_env
from plugin.service.spool import Spool

pytestmark = pytest.mark.peers


def _variant(src: Path, dst: Path, private_bytes: int) -> Path:
    """``src`` with a private OB value of ``private_bytes`` in the middle of the header (group 0019,
    before Rows/Columns and the Pixel Data)."""
    ds = pydicom.dcmread(src)
    if private_bytes:
        block = ds.private_block(0x0019, "BORDERPHASE TEST", create=True)
        block.add_new(0x01, "OB", bytes(np.arange(private_bytes, dtype=np.uint8)))
    ds.SeriesDescription = f"after {private_bytes} private bytes"
    ds.save_as(dst, enforce_file_format=True)
    return dst


@pytest.mark.parametrize("private_bytes", [0, 4000, HEADER_READ_BYTES + 10_000])
def test_header_facts_after_large_values_are_seen(tmp_path, private_bytes):
    require_peer(STORESCU, "dcmtk")
    study = make_mr_study(tmp_path / "in", n_slices=1, components=("M",), rows=64, cols=64)
    sent = _variant(Path(study["files"][0]), tmp_path / "sent.dcm", private_bytes)
    spool = Spool(tmp_path / "spool")
    seen = {}

    def on_instance(inst) -> int:
        ds = inst.dataset
        seen.update(description=str(ds.SeriesDescription), rows=int(ds.Rows), columns=int(ds.Columns),
                    pixel_bytes=value_length(ds, "PixelData"),
                    problems=instance_problems(ds, inst.sop_class_uid, inst.transfer_syntax_uid),
                    path=spool.store_file(inst.study_instance_uid, inst.series_instance_uid,
                                          inst.sop_instance_uid, inst.path).path)
        return 0

    scp = StorageSCP("NODE", "127.0.0.1", 0, on_instance)
    scp.start()
    try:
        out = subprocess.run([STORESCU, "-aet", "SCANNER", "-aec", "NODE", "127.0.0.1", str(scp.port), str(sent)],
                             capture_output=True, text=True, timeout=60, env=node_env())
    finally:
        scp.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    assert seen["description"] == f"after {private_bytes} private bytes"
    assert (seen["rows"], seen["columns"], seen["pixel_bytes"]) == (64, 64, 64 * 64 * 2)
    assert seen["problems"] == []
    stored, original = pydicom.dcmread(seen["path"]), pydicom.dcmread(sent)
    assert stored == original  # every element, the private value and the pixels included
    assert stored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
