"""Key Object Selection: points at the SR, SEG and summary of the same analysis and at the
magnitude and phase images of every spot's border slices; says it is not for primary diagnosis."""
from __future__ import annotations

import pydicom
import pytest

from dicom_io.results import write_results
from dicom_io.results.kos import build_kos
from dicom_io.results.context import NOT_FOR_DIAGNOSIS, build_context

from results_fixtures import CLASSIC_SPOTS, ENHANCED_SPOTS, classic_pair, enhanced_pair, make_analysis


def _image_items(kos):
    return [c for c in kos.ContentSequence if c.ValueType == "IMAGE"]


def _referenced(kos) -> dict[str, str]:
    """SOP Instance UID -> value type of every reference in the selection."""
    return {c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID: c.ValueType
            for c in kos.ContentSequence if c.ValueType in ("IMAGE", "COMPOSITE")}


def _evidence(kos) -> set[str]:
    return {i.ReferencedSOPInstanceUID for s in kos.CurrentRequestedProcedureEvidenceSequence
            for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}


def _description(kos) -> str:
    return [c.TextValue for c in kos.ContentSequence if c.ValueType == "TEXT"
            and c.ConceptNameCodeSequence[0].CodeValue == "113012"][0]


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
    description = _description(kos)
    assert "CMB 1 microbleed" in description and "Calc 2 calcification" in description
    assert description.startswith(NOT_FOR_DIAGNOSIS)
    assert _evidence(kos) == want
    assert len(kos.SeriesDate) == 8 and len(kos.SeriesTime) >= 6


def test_written_kos_references_sr_seg_and_summary(tmp_path):
    """write_results builds the KOS last and gives it the other objects: the SR as a COMPOSITE
    item (no pixels), the SEG and every summary image as IMAGE items, all in the evidence, beside
    the key images; and every result series has the same series date/time."""
    mag, ph = classic_pair(tmp_path)
    analysis = make_analysis(mag, ph, CLASSIC_SPOTS)
    written = write_results(analysis, mag, ph, tmp_path / "out")
    by_kind: dict[str, list[pydicom.Dataset]] = {}
    for p in written.paths:
        by_kind.setdefault(p.parent.name, []).append(pydicom.dcmread(p))
    assert set(by_kind) == {"sr", "seg", "summary", "kos"}
    (kos,) = by_kind["kos"]
    refs = _referenced(kos)
    (sr,) = by_kind["sr"]
    (seg,) = by_kind["seg"]
    assert refs[sr.SOPInstanceUID] == "COMPOSITE"
    assert refs[seg.SOPInstanceUID] == "IMAGE"
    assert by_kind["summary"] and all(refs[ds.SOPInstanceUID] == "IMAGE" for ds in by_kind["summary"])
    results = {ds.SOPInstanceUID for kind in ("sr", "seg", "summary") for ds in by_kind[kind]}
    key_images = {f.sop_instance_uid for les in analysis.spots
                  for k in (les.upper_border_slice, les.lower_border_slice)
                  for f in (mag.frames[k], ph.frames[k])}
    assert set(refs) == results | key_images
    assert _evidence(kos) == results | key_images
    description = _description(kos)
    assert description.startswith(NOT_FOR_DIAGNOSIS) and "borderphase SR" in description
    # one series date/time on every result series (Orthanc Explorer files a series without it under "?")
    stamps = {(ds.SeriesDate, ds.SeriesTime) for objs in by_kind.values() for ds in objs}
    assert len(stamps) == 1 and all(stamps.pop())
    for objs in by_kind.values():
        assert all(ds.get("ContentDate") and ds.get("ContentTime") for ds in objs)


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
