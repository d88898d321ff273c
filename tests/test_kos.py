"""Key Object Selection: points at the magnitude and phase images of every spot's border slices."""
from __future__ import annotations

import pydicom
import pytest

from dicom_io.results.kos import build_kos
from dicom_io.results.context import build_context

from results_fixtures import CLASSIC_SPOTS, ENHANCED_SPOTS, classic_pair, enhanced_pair, make_analysis


def _image_items(kos):
    return [c for c in kos.ContentSequence if c.ValueType == "IMAGE"]


def test_classic_kos_references_border_slices(tmp_path):
    mag, ph = classic_pair(tmp_path)
    analysis = make_analysis(mag, ph, CLASSIC_SPOTS)
    kos = build_kos(build_context(analysis, mag, ph, algorithm_version="1"))
    assert kos.SOPClassUID == pydicom.uid.KeyObjectSelectionDocumentStorage
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"      # Of Interest
    assert kos.SeriesDescription == "borderphase key images" and kos.SeriesNumber == 504
    assert kos.PatientID == mag.frames[0].dataset.PatientID
    got = {c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for c in _image_items(kos)}
    want = set()
    for les in analysis.spots:
        for k in (les.upper_border_slice, les.lower_border_slice):
            want |= {mag.frames[k].sop_instance_uid, ph.frames[k].sop_instance_uid}
    assert got == want
    description = [c.TextValue for c in kos.ContentSequence if c.ValueType == "TEXT"
                   and c.ConceptNameCodeSequence[0].CodeValue == "113012"][0]
    assert "CMB 1" in description and "Calc 2" in description
    evidence = {i.ReferencedSOPInstanceUID for s in kos.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert evidence == want


def test_enhanced_kos_names_the_frames():
    pair = enhanced_pair()
    if pair is None:
        pytest.skip("../shared/vendor_dicom (Siemens XA30 enhanced files) not found")
    mag, ph = pair
    analysis = make_analysis(mag, ph, ENHANCED_SPOTS)
    kos = build_kos(build_context(analysis, mag, ph, algorithm_version="1"))
    items = {c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID: c.ReferencedSOPSequence[0]
             for c in _image_items(kos)}
    ref = items[mag.frames[0].sop_instance_uid]
    frames = ref.ReferencedFrameNumber
    frames = [int(f) for f in (frames if isinstance(frames, (list, pydicom.multival.MultiValue)) else [frames])]
    want = sorted({mag.frames[k].frame_index + 1 for les in analysis.spots
                   for k in (les.upper_border_slice, les.lower_border_slice)})
    assert frames == want
