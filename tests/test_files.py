"""Finding files and reading headers: notes for non-DICOM, problems (naming the file) for damaged
ones, Pixel Data located where pydicom finds it, and the fast value decoding agreeing with pydicom."""
from __future__ import annotations

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from dicom_io.read import files
from dicom_io.errors import FileProblem


def _plain(v):
    """A pydicom value or a :func:`files.raw_value` result in comparable form (None for empty)."""
    if v is None or v == "" or (isinstance(v, (list, MultiValue)) and len(v) == 0):
        return None
    if isinstance(v, (list, MultiValue)):
        return [_plain(x) for x in v]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return str(v).strip()


def _assert_fast_values_agree(ds: Dataset, where: str = "") -> int:
    """Every element :func:`files.raw_value` decodes itself equals pydicom's own conversion."""
    n = 0
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.value is None:
            continue
        fast = files.raw_value(ds, tag)  # before pydicom converts (and replaces) the raw element
        ref_elem = ds[tag]
        vr, ref = raw.VR or ref_elem.VR, ref_elem.value
        if vr in ("SQ", "OB", "OW", "UN"):
            continue
        if vr in ("DS", "IS"):  # raw_value keeps the text; the reader converts it
            fast = [float(x) for x in fast] if isinstance(fast, list) else (None if fast is None else float(fast))
        assert _plain(fast) == _plain(ref), f"{where}{tag} {vr}: {fast!r} != {ref!r}"
        n += 1
    return n


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


@pytest.mark.parametrize("missing", [("Rows",), ("Columns",), ("Rows", "Columns")])
def test_image_without_rows_or_columns_is_a_problem_not_a_note(mr_writer, missing):
    """An MR image whose Rows/Columns were lost (a broken anonymiser, a bad export) is a damaged
    image a tester must see in the errors, not a file 'skipped on purpose' as a non-image."""
    p = mr_writer("norows")
    ds = pydicom.dcmread(p)
    for keyword in missing:
        delattr(ds, keyword)
    ds.save_as(p)
    got = files.read_header(p)
    assert isinstance(got, FileProblem), got
    assert got.path == str(p) and "MR Image Storage" in got.reason
    for keyword in ("Rows", "Columns"):
        assert (keyword in got.reason) == (keyword in missing), got.reason


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



def _element_tell(path, tag: int) -> int:
    """Byte offset of ``tag``'s value in the file, as pydicom reports it."""
    return pydicom.dcmread(path, defer_size=0).get_item(tag, keep_deferred=True).value_tell


@pytest.mark.parametrize("where", ["inside the Rows value", "inside the Rows tag"])
def test_file_cut_inside_an_element_is_truncated_not_a_missing_pixel_data(mr_writer, where):
    p = mr_writer("cut")
    rows_tell = _element_tell(p, 0x00280010)
    cut = rows_tell + 1 if where == "inside the Rows value" else rows_tell - 5
    p.write_bytes(p.read_bytes()[:cut])
    got = files.read_header(p)
    assert isinstance(got, FileProblem), got
    assert got.path == str(p) and "truncated" in got.reason


def test_float_pixel_data_is_named(mr_writer):
    p = mr_writer("float")
    ds = pydicom.dcmread(p)
    del ds.PixelData
    ds.FloatPixelData = bytes(8 * 8 * 4)
    ds.save_as(p)
    got = files.read_header(p)
    assert isinstance(got, FileProblem) and "(7FE0,0008)" in got.reason and "float" in got.reason


def test_large_private_value_is_deferred_and_read_on_access(mr_writer):
    p = mr_writer("csa")
    ds = pydicom.dcmread(p)
    blob = bytes(range(256)) * 64  # 16 KiB, like a Siemens CSA header
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", blob)
    ds.save_as(p)
    got = files.read_header(p)
    assert isinstance(got, files.HeaderRead)
    raw = got.dataset.get_item(0x00291010, keep_deferred=True)
    assert raw.value is None and raw.length == len(blob) > files.DEFER_BYTES  # not read with the header
    assert got.dataset[0x00291010].value == blob


def test_fast_values_agree_with_pydicom_in_implicit_and_explicit_vr(tmp_path, mr_writer):
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
    src.AcquisitionMatrix = [0, 256, 192, 0]          # US, 4 values
    src.SAR = 0.125                                   # DS
    src.LargestImagePixelValue = 4095                 # US or SS
    src.dBdt = 12.5                                   # DS
    for ts, name in ((ImplicitVRLittleEndian, "implicit"), ("1.2.840.10008.1.2.1", "explicit")):
        src.file_meta.TransferSyntaxUID = ts
        p = tmp_path / name
        src.save_as(p, enforce_file_format=True, implicit_vr=(name == "implicit"), little_endian=True)
        got = files.read_header(p)
        assert isinstance(got, files.HeaderRead)
        assert _assert_fast_values_agree(got.dataset, f"{name}: ") > 20
        assert files.kw_value(got.dataset, "AcquisitionMatrix") == [0, 256, 192, 0]
        assert files.kw_value(got.dataset, "ImageType") == ["ORIGINAL", "PRIMARY", "M", "ND"]
        seq_item = got.dataset.ReferencedImageSequence[1]
        assert _assert_fast_values_agree(seq_item, f"{name} item: ") == 2
        assert files.kw_value(seq_item.PurposeOfReferenceCodeSequence[0], "CodeMeaning") == "Localizer"


def test_real_vendor_files_pixel_location_and_values_agree_with_pydicom(vendor_dicom_dir):
    n = 0
    for path in files.iter_files([vendor_dicom_dir]):
        got = files.read_header(path)
        if not isinstance(got, files.HeaderRead):
            continue
        assert "PixelData" not in got.dataset
        n += 1
        if n % 7:  # every 7th file: every plain value, and the pixel bytes at the recorded offset
            continue
        assert _assert_fast_values_agree(got.dataset, f"{path}: ") > 20
        full = pydicom.dcmread(path)
        assert got.pixel_value_length == len(full.PixelData)
        with open(path, "rb") as fh:
            fh.seek(got.pixel_value_offset)
            assert fh.read(got.pixel_value_length) == full.PixelData
    assert n > 300
