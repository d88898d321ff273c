"""Hostile input through the whole reader (``inspect_paths`` and the CLI): every case is reported
with the file and the problem, never a traceback, and the good series beside it still reads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.inspect import has_problems, inspect_paths

ROOT = Path(__file__).resolve().parents[1]


def good_series(mr_writer, prefix="good", n=3, series_uid="1.2.826.0.1.3680043.8.498.100"):
    return [mr_writer(f"{prefix}{k}", position=(0, 0, 2.0 * k), series_uid=series_uid) for k in range(n)]


def _error_for(doc, path):
    hits = [e for e in doc["errors"] if e["path"] == str(path)]
    assert hits, f"no error reported for {path}: {doc['errors']}"
    return hits[0]["reason"]


def _series(doc, uid):
    hits = [s for s in doc["series"] if s["series_instance_uid"] == uid]
    assert hits, [s["series_instance_uid"] for s in doc["series"]]
    return hits[0]


def _assert_good_series_still_reads(doc):
    s = _series(doc, "1.2.826.0.1.3680043.8.498.100")
    assert s["problems"] == [] and s["stacks"][0]["n_slices"] == 3 and s["stacks"][0]["volume"] is True


def test_truncated_file(mr_writer):
    good_series(mr_writer)
    bad = mr_writer("truncated", rows=32, columns=32, series_uid="1.2.9")
    bad.write_bytes(bad.read_bytes()[:-500])
    doc = inspect_paths([mr_writer.root])
    assert "truncated" in _error_for(doc, bad)
    _assert_good_series_still_reads(doc)
    assert has_problems(doc)


def test_zero_byte_file(mr_writer):
    good_series(mr_writer)
    bad = mr_writer.root / "zero"
    bad.write_bytes(b"")
    doc = inspect_paths([mr_writer.root])
    assert "zero-byte" in _error_for(doc, bad)
    _assert_good_series_still_reads(doc)


def test_wrong_preamble(mr_writer):
    good_series(mr_writer)
    bad = mr_writer("preamble", series_uid="1.2.9")
    raw = bytearray(bad.read_bytes())
    raw[128:132] = b"DICX"
    bad.write_bytes(bytes(raw))
    doc = inspect_paths([mr_writer.root])
    assert "DICM" in _error_for(doc, bad)
    _assert_good_series_still_reads(doc)


def test_missing_pixel_data(mr_writer):
    good_series(mr_writer)
    bad = mr_writer("nopixels", series_uid="1.2.9")
    ds = pydicom.dcmread(bad)
    del ds.PixelData
    ds.save_as(bad)
    doc = inspect_paths([mr_writer.root])
    assert "without Pixel Data" in _error_for(doc, bad)
    _assert_good_series_still_reads(doc)


def test_missing_image_position(mr_writer):
    good_series(mr_writer)
    for k in range(2):
        mr_writer(f"pos{k}", position=(0, 0, k), series_uid="1.2.9")
    mr_writer("nopos", position=None, series_uid="1.2.9")
    doc = inspect_paths([mr_writer.root])
    s = _series(doc, "1.2.9")
    assert len(s["problems"]) == 1
    assert "Image Position (Patient)" in s["problems"][0] and "nopos" in s["problems"][0]
    assert s["stacks"][0]["volume"] is False and s["vendor"] == "Siemens"  # header facts still reported
    _assert_good_series_still_reads(doc)


def test_mixed_orientations_in_one_series(mr_writer):
    good_series(mr_writer)
    for k in range(3):
        mr_writer(f"ax{k}", position=(0, 0, k), series_uid="1.2.9")
    mr_writer("cor", position=(0, 5, 0), orientation=(1, 0, 0, 0, 0, -1), series_uid="1.2.9")
    doc = inspect_paths([mr_writer.root])
    (p,) = _series(doc, "1.2.9")["problems"]
    assert "mixed orientations" in p and "cor" in p


def test_duplicate_slices(mr_writer):
    good_series(mr_writer)
    for k in range(4):
        mr_writer(f"dup{k}", position=(0, 0, k // 2), series_uid="1.2.9")
    doc = inspect_paths([mr_writer.root])
    (p,) = _series(doc, "1.2.9")["problems"]
    assert "repeated slice positions: 4 frames at 2 distinct positions" in p and "dup" in p


def test_gigabyte_claim_refused_before_allocating(mr_writer):
    good_series(mr_writer)
    bad = mr_writer("huge", series_uid="1.2.9")
    ds = pydicom.dcmread(bad)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 500
    ds.save_as(bad)
    doc = inspect_paths([mr_writer.root])
    reason = _error_for(doc, bad)
    assert "refused before reading" in reason and "GiB" in reason and "60000" in reason
    _assert_good_series_still_reads(doc)


def test_garbage_and_text_beside_dicom(mr_writer):
    good_series(mr_writer)
    (mr_writer.root / "notes.txt").write_text("hello")
    (mr_writer.root / "noise").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    doc = inspect_paths([mr_writer.root])
    assert doc["errors"] == [] and len(doc["notes"]) == 2
    _assert_good_series_still_reads(doc)
    assert not has_problems(doc)


def test_cli_reports_all_hostile_files_without_traceback(mr_writer):
    good_series(mr_writer)
    t = mr_writer("truncated", rows=32, columns=32, series_uid="1.2.9")
    t.write_bytes(t.read_bytes()[:-500])
    (mr_writer.root / "zero").write_bytes(b"")
    for k in range(2):
        mr_writer(f"dup{k}", position=(0, 0, 0), series_uid="1.2.10")
    for as_json in (True, False):
        cmd = [sys.executable, "-m", "plugin.cli", "inspect", str(mr_writer.root)] + (["--json"] if as_json else [])
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert out.returncode == 1, out.stderr
        assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
        if as_json:
            doc = json.loads(out.stdout)
            assert {Path(e["path"]).name for e in doc["errors"]} == {"truncated", "zero"}
        else:
            assert "ERROR" in out.stdout and "truncated" in out.stdout and "repeated slice positions" in out.stdout


@pytest.mark.filterwarnings("ignore")  # pydicom warns about every invalid value it meets: expected here
def test_random_header_corruption_never_raises(mr_writer, tmp_path):
    """Deterministic fuzz: bytes flipped and files cut at random places in the header region;
    every outcome is a reported problem, a note or a usable header, never an exception."""
    from dicom_io.read.files import read_header
    from dicom_io.read.series import scan

    src = mr_writer("src", rows=16, columns=16).read_bytes()
    rng = np.random.default_rng(42)
    out = tmp_path / "fuzz"
    out.mkdir()
    for i in range(120):
        b = bytearray(src)
        if i % 3 == 0:
            b = b[: int(rng.integers(1, len(src) - 1))]
        else:
            for pos in rng.integers(0, min(len(b), 900), size=int(rng.integers(1, 6))):
                b[pos] = int(rng.integers(0, 256))
        (out / f"f{i:03d}").write_bytes(bytes(b))
    for p in sorted(out.iterdir()):
        read_header(p)  # must not raise
    res = scan([out])  # nor the whole scan
    doc = inspect_paths([out])
    assert len(doc["errors"]) == len(res.problems) and len(res.problems) > 10


def test_read_tags_names_the_file_that_is_not_dicom(tmp_path):
    """dicom_io.read.files.read_tags (the node's and demo's header look-up) on garbage and on a
    truncated file: the project's error naming the file, not a pydicom traceback."""
    from dicom_io.errors import DicomInputError
    from dicom_io.read.files import read_tags

    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 64 + b"not dicom at all")
    with pytest.raises(DicomInputError) as err:
        read_tags(garbage, ["StudyInstanceUID"])
    assert err.value.path == str(garbage) and "not readable as DICOM" in err.value.problem
