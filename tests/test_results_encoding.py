"""The result objects are written in one pass over their tree (issue 15): every sequence item is
marked as already in the file's encoding, so pydicom's writer corrects ambiguous VRs once from
the top instead of again under every item. The bytes must be the ones pydicom writes unmarked."""
from __future__ import annotations

import copy
import io

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicom_io.results.context import build_context
from dicom_io.results.seg import build_seg
from dicom_io.results.sr import build_sr
from dicom_io.results.write import mark_items_in_file_encoding

from results_fixtures import CLASSIC_SPOTS, classic_pair, make_analysis, with_qsm


def _bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _marked_and_plain(ds: Dataset) -> tuple[bytes, bytes, int]:
    plain = _bytes(copy.deepcopy(ds))
    n = mark_items_in_file_encoding(ds)
    return plain, _bytes(ds), n


def _nested(transfer_syntax: str) -> Dataset:
    """Three levels of items; the deepest holds an ``US or SS`` element that only the top-level
    Pixel Representation (signed) resolves."""
    deepest = Dataset()
    deepest.SmallestImagePixelValue = -5            # (0028,0106) US or SS
    deepest.CodeMeaning = "deepest"
    middle = Dataset()
    middle.CodeMeaning = "middle"
    middle.ContentSequence = Sequence([deepest])
    top_item = Dataset()
    top_item.CodeMeaning = "top item"
    top_item.ContentSequence = Sequence([middle, Dataset()])
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PixelRepresentation = 1
    ds.ContentSequence = Sequence([top_item])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def test_an_ambiguous_vr_deep_in_the_tree_is_still_resolved_from_the_top():
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds = _nested(ts)
        plain, marked, n = _marked_and_plain(ds)
        assert n == 4, ts                                  # every item, not the data set itself
        assert ds.original_encoding == (None, None)        # the top stays unmarked: corrected once
        assert marked == plain, ts
        back = pydicom.dcmread(io.BytesIO(marked))
        deepest = back.ContentSequence[0].ContentSequence[0].ContentSequence[0]
        assert deepest["SmallestImagePixelValue"].VR == "SS" and deepest.SmallestImagePixelValue == -5


def test_without_a_transfer_syntax_nothing_is_marked():
    ds = _nested(ExplicitVRLittleEndian)
    del ds.file_meta.TransferSyntaxUID
    assert mark_items_in_file_encoding(ds) == 0
    assert ds.ContentSequence[0].original_encoding == (None, None)


def test_the_sr_and_seg_bytes_are_pydicoms_own(tmp_path):
    """The real report (5 spots with QSM values, image library, border groups) and its SEG."""
    mag, ph = classic_pair(tmp_path)
    ctx = build_context(with_qsm(make_analysis(mag, ph, CLASSIC_SPOTS)), mag, ph, algorithm_version="1")
    for ds in (build_sr(ctx), build_seg(ctx)):
        plain, marked, n = _marked_and_plain(ds)
        assert n > 100, ds.Modality
        assert marked == plain, ds.Modality
