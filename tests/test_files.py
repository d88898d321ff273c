"""Finding files and reading headers: notes for non-DICOM, problems for damaged files, and the
fast header parser agreeing element by element with pydicom."""
from __future__ import annotations

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from dicom_io.read import files
from dicom_io.errors import FileProblem


def _same(a: Dataset, b: Dataset, where: str = "", deep: bool = True) -> None:
    """Element-by-element equality; raw (unconverted) values are compared as bytes, so this stays
    fast on headers with thousands of private elements."""
    assert set(a.keys()) == set(b.keys()), where
    for tag in a.keys():
        ra, rb = a.get_item(tag), b.get_item(tag)
        vr_a = ra.VR if ra.VR is not None else a[tag].VR
        vr_b = rb.VR if rb.VR is not None else b[tag].VR
        if "SQ" in (vr_a, vr_b) or not deep:
            if not deep or tag.is_private:
                continue
            ea, eb = a[tag], b[tag]
            assert len(ea.value) == len(eb.value), f"{where}{tag}"
            n = len(ea.value)
            for i in (range(n) if n <= 8 else (0, n // 2, n - 1)):  # long per-frame sequences: sample
                _same(ea.value[i], eb.value[i], f"{where}{tag}[{i}]/")
        elif isinstance(ra, RawDataElement) and ra.value is None and ra.length:
            assert ra.length >= files.DEFER_BYTES  # deferred: read from the file on access
            assert a[tag].value == b[tag].value, f"{where}{tag}"
        elif isinstance(ra, RawDataElement) and isinstance(rb, RawDataElement):
            assert vr_a == vr_b and ra.value == rb.value, f"{where}{tag}"
        else:
            assert str(a[tag].value) == str(b[tag].value), f"{where}{tag}"


def test_any_file_name_and_notes_for_non_dicom(mr_writer, tmp_path):
    p = mr_writer("no_extension_at_all")
    (mr_writer.root / "README.txt").write_text("not dicom")
    (mr_writer.root / "image.png").write_bytes(b"\x89PNG\r\n" + bytes(300))
    scan = files.scan_files([mr_writer.root])
    assert [h.path for h in scan.headers] == [p]
    assert scan.problems == []
    assert len(scan.notes) == 2 and all("not a DICOM file" in n for n in scan.notes)


def test_pixel_offset_points_at_the_pixel_bytes(mr_writer):
    p = mr_writer("a")
    h = files.read_header(p)
    assert isinstance(h, files.HeaderRead)
    raw = p.read_bytes()
    ref = pydicom.dcmread(p)
    assert h.pixel_value_length == len(ref.PixelData)
    assert raw[h.pixel_value_offset:h.pixel_value_offset + h.pixel_value_length] == ref.PixelData
    assert "PixelData" not in h.dataset


def test_zero_byte_file_is_a_problem(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    got = files.read_header(p)
    assert isinstance(got, FileProblem) and "zero-byte" in got.reason and got.path == str(p)


def test_wrong_preamble_is_a_problem_naming_the_file(mr_writer):
    p = mr_writer("bad_preamble")
    raw = bytearray(p.read_bytes())
    raw[128:132] = b"XXXX"
    p.write_bytes(bytes(raw))
    got = files.read_header(p)
    assert isinstance(got, FileProblem)
    assert got.path == str(p) and "DICM" in got.reason


def test_data_set_without_preamble_is_still_read(mr_writer, tmp_path):
    src = mr_writer("with_preamble")
    ds = pydicom.dcmread(src)
    raw = src.read_bytes()
    meta_len = int.from_bytes(raw[140:144], "little")  # (0002,0000) group length value
    out = tmp_path / "raw_dataset"
    out.write_bytes(raw[144 + meta_len:])  # the data set alone: no preamble, no 'DICM', no meta
    assert out.read_bytes()[128:132] != b"DICM"
    got = files.read_header(out)
    assert isinstance(got, files.HeaderRead), got
    assert got.pixel_value_length == len(ds.PixelData)


@pytest.mark.parametrize("cut", [200, 600])
def test_truncated_header_is_a_problem(mr_writer, cut):
    p = mr_writer("t")
    p.write_bytes(p.read_bytes()[:cut])
    got = files.read_header(p)
    assert isinstance(got, FileProblem), got
    assert got.path == str(p)


def test_truncated_pixel_data_is_a_problem(mr_writer):
    p = mr_writer("t", rows=32, columns=32)
    p.write_bytes(p.read_bytes()[:-100])
    got = files.read_header(p)
    assert isinstance(got, FileProblem)
    assert "truncated" in got.reason and "2048 bytes" in got.reason


def test_image_without_pixel_data_is_a_problem(mr_writer):
    p = mr_writer("nopix")
    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.save_as(p)
    got = files.read_header(p)
    assert isinstance(got, FileProblem) and "without Pixel Data" in got.reason


def test_non_image_dicom_and_dicomdir_are_notes(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    p = tmp_path / "sr"
    pydicom.dcmwrite(p, ds, enforce_file_format=True)
    got = files.read_header(p)
    assert isinstance(got, str) and "not an image" in got and "Enhanced SR" in got

    ds.file_meta.MediaStorageSOPClassUID = files.DICOMDIR_SOP_CLASS
    del ds.SOPClassUID
    p2 = tmp_path / "DICOMDIR"
    pydicom.dcmwrite(p2, ds, enforce_file_format=True)
    got2 = files.read_header(p2)
    assert isinstance(got2, str) and "DICOMDIR" in got2


def test_size_limit_refuses_before_reading(mr_writer):
    p = mr_writer("huge")
    ds = pydicom.dcmread(p)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.save_as(p)
    got = files.read_header(p)
    assert isinstance(got, FileProblem)
    assert "refused before reading" in got.reason and "65535" in got.reason and "GiB" in got.reason
    # a tiny explicit limit refuses a normal file too; a generous one accepts it
    assert isinstance(files.read_header(mr_writer("small"), limit_bytes=10), FileProblem)
    assert isinstance(files.read_header(mr_writer("small2"), limit_bytes=10**6), files.HeaderRead)


def test_fast_parser_matches_pydicom_with_implicit_vr_and_nested_sequences(tmp_path, mr_writer):
    src = pydicom.dcmread(mr_writer("x"))
    item = Dataset()
    item.ReferencedSOPClassUID = src.SOPClassUID
    item.ReferencedSOPInstanceUID = generate_uid()
    inner = Dataset()
    inner.CodeValue = "121311"
    inner.CodingSchemeDesignator = "DCM"
    inner.CodeMeaning = "Localizer"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    src.ReferencedImageSequence = Sequence([item, item])
    src.add_new(0x00291010, "OB", bytes(3000))
    src.add_new(0x00290010, "LO", "TEST PRIVATE")
    for ts, name in ((ImplicitVRLittleEndian, "implicit"), ("1.2.840.10008.1.2.1", "explicit")):
        src.file_meta.TransferSyntaxUID = ts
        p = tmp_path / name
        src.save_as(p, enforce_file_format=True, implicit_vr=(name == "implicit"), little_endian=True)
        got = files.read_header(p)
        assert isinstance(got, files.HeaderRead)
        ref = pydicom.dcmread(p, stop_before_pixels=True)
        _same(got.dataset, ref)
        _same(got.dataset.file_meta, ref.file_meta)
        assert got.dataset.ReferencedImageSequence[1].PurposeOfReferenceCodeSequence[0].CodeMeaning == "Localizer"


def test_fast_parser_matches_pydicom_on_real_vendor_files(vendor_dicom_dir):
    n = 0
    for path in files.iter_files([vendor_dicom_dir]):
        got = files.read_header(path)
        if not isinstance(got, files.HeaderRead):
            continue
        ref = pydicom.dcmread(path, stop_before_pixels=True)
        _same(got.dataset, ref, f"{path}: ")
        n += 1
        if n % 7:  # every file's header, every 7th file's pixel bytes too
            continue
        full = pydicom.dcmread(path)
        with open(path, "rb") as fh:
            fh.seek(got.pixel_value_offset)
            assert fh.read(got.pixel_value_length) == full.PixelData
    assert n > 300
