"""TID 1500 SR: content read back with highdicom matches the analysis."""
from __future__ import annotations

import pydicom
import pytest

from dicom_io.results import codes
from dicom_io.results import write_results
from dicom_io.results.context import PairAnalysisLike, LesionLike
from dicom_io.results.sr import read_report, read_spots
from plugin.model import PairAnalysis

from results_fixtures import CLASSIC_SPOTS, ENHANCED_SPOTS, classic_pair, enhanced_pair, make_analysis


def _walk(item):
    for child in item.get("ContentSequence", []):
        yield child
        yield from _walk(child)


def _by_kind(paths):
    out: dict[str, list] = {}
    for p in paths:
        out.setdefault(p.parent.name, []).append(p)
    return out


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sr_classic")
    mag, ph = classic_pair(tmp)
    analysis = make_analysis(mag, ph, CLASSIC_SPOTS)
    paths = write_results(analysis, mag, ph, tmp / "out", algorithm_version="9.8.7")
    return mag, ph, analysis, _by_kind(paths)


def test_plugin_model_satisfies_the_protocols(classic):
    _, _, analysis, _ = classic
    assert isinstance(analysis, PairAnalysisLike)
    assert all(isinstance(les, LesionLike) for les in analysis.lesions)
    assert PairAnalysis.__module__ == "plugin.model"


def test_spots_round_trip(classic):
    mag, _, analysis, kinds = classic
    sr = pydicom.dcmread(kinds["sr"][0])
    spots = read_spots(sr)
    assert len(spots) == len(analysis.lesions)
    expected_labels = ["CMB 1", "Calc 1", "CMB 2", "Indet 1", "Calc 2"]
    assert [s["label"] for s in spots] == expected_labels
    for s, les in zip(spots, sorted(analysis.lesions, key=lambda l: l.id)):
        assert s["class"] == les.classification.value
        assert s["diameter_mm"] == pytest.approx(les.diameter_mm)
        assert s["certainty_pct"] == pytest.approx(100 * les.confidence)
        assert s["border_pattern"] == (None if les.border_pattern is None else int(les.border_pattern))
        assert s["central_pattern"] == (None if les.central_pattern is None else int(les.central_pattern))
        assert s["convention"] == "left-handed"
        assert s["graphic_type"] == "CIRCLE"
        # the region is on the border slice used (upper unless only the lower one had a pattern)
        border = les.upper_border_slice if les.upper_border_pattern is not None else les.lower_border_slice
        assert s["referenced_sop_instance_uid"] == mag.frames[border].sop_instance_uid
        assert s["referenced_frame_numbers"] == []
        # the circle centre is the label's centroid (pixel centre = index + 0.5)
        cx, cy = s["graphic_data"][:2]
        rows, cols = (analysis.label_map[border] == les.id).nonzero()
        assert (cy - 0.5, cx - 0.5) == pytest.approx((rows.mean(), cols.mean()))


def test_sr_header_and_private_scheme(classic):
    mag, _, analysis, kinds = classic
    sr = pydicom.dcmread(kinds["sr"][0])
    src = mag.frames[0].dataset
    assert sr.SOPClassUID == pydicom.uid.Comprehensive3DSRStorage
    assert sr.StudyInstanceUID == src.StudyInstanceUID
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
               "StudyID", "StudyDate", "StudyDescription"):
        assert sr.get(kw) == src.get(kw), kw
    assert sr.SeriesInstanceUID not in (mag.series_instance_uid, analysis.phase_series_uid)
    assert sr.SeriesDescription == "borderphase SR"
    assert sr.SeriesNumber == 501          # source series 5 -> 5xx
    assert sr.SoftwareVersions == "9.8.7"
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    schemes = {i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence}
    assert codes.PRIVATE_SCHEME in schemes
    # all source instances are evidence
    evidence = {i.ReferencedSOPInstanceUID
                for s in sr.CurrentRequestedProcedureEvidenceSequence
                for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert {f.sop_instance_uid for f in mag.frames} <= evidence


def test_report_context_algorithm_and_study_group(classic):
    _, _, analysis, kinds = classic
    report = read_report(pydicom.dcmread(kinds["sr"][0]))
    assert report.get_observer_contexts()[0].observer_type.value == "121007"   # Device
    procedure = [c for c in report[0].ContentSequence
                 if c.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure[0].ConceptCodeSequence[0].CodeValue == "25056-3"
    # algorithm identification carries the convention and its source
    group = report.get_planar_roi_measurement_groups()[0]
    texts = [c.TextValue for c in _walk(group[0]) if c.ValueType == "TEXT"]
    assert "borderphase" in texts
    assert "phase convention: left-handed" in texts
    assert f"convention source: {analysis.convention_source}" in texts
    # study-level group: counts and present/absent
    study = report.get_image_measurement_groups()[0]
    counts = {m.name.value: m.value for m in study.get_measurements()}
    assert counts[codes.NUMBER_OF_LESIONS.value] == 5
    assert counts[codes.NUMBER_OF_MICROBLEEDS.value] == 2
    assert counts[codes.NUMBER_OF_CALCIFICATIONS.value] == 2
    assert counts[codes.NUMBER_OF_INDETERMINATE.value] == 1
    ev = {q.name.value: q.value.value for q in study.get_qualitative_evaluations()}
    assert ev[codes.MICROBLEED.value] == codes.PRESENT.value
    assert ev[codes.CALCIFICATION.value] == codes.PRESENT.value


def test_empty_study_gets_an_sr_saying_absent(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=[])
    analysis = make_analysis(mag, ph, [])
    kinds = _by_kind(write_results(analysis, mag, ph, tmp_path / "out"))
    assert set(kinds) == {"sr", "summary"}          # no SEG or KOS without a spot
    sr = pydicom.dcmread(kinds["sr"][0])
    assert read_spots(sr) == []
    study = read_report(sr).get_image_measurement_groups()[0]
    counts = {m.name.value: m.value for m in study.get_measurements()}
    assert counts[codes.NUMBER_OF_LESIONS.value] == 0
    ev = {q.name.value: q.value.value for q in study.get_qualitative_evaluations()}
    assert ev[codes.MICROBLEED.value] == codes.ABSENT.value
    assert ev[codes.CALCIFICATION.value] == codes.ABSENT.value


def test_enhanced_source_region_references_the_frame(tmp_path):
    pair = enhanced_pair()
    if pair is None:
        pytest.skip("../shared/vendor_dicom (Siemens XA30 enhanced files) not found")
    mag, ph = pair
    analysis = make_analysis(mag, ph, ENHANCED_SPOTS)
    kinds = _by_kind(write_results(analysis, mag, ph, tmp_path / "out"))
    spots = read_spots(pydicom.dcmread(kinds["sr"][0]))
    for s, les in zip(spots, analysis.lesions):
        border = les.upper_border_slice if les.upper_border_pattern is not None else les.lower_border_slice
        assert s["referenced_sop_instance_uid"] == mag.frames[border].sop_instance_uid
        assert s["referenced_frame_numbers"] == [mag.frames[border].frame_index + 1]


def test_bad_analysis_is_refused_clearly(classic):
    mag, ph, analysis, _ = classic
    with pytest.raises(ValueError, match="magnitude volume"):
        write_results(analysis, ph, mag, "/nonexistent")


def test_any_object_with_the_fields_works_and_unknown_convention(tmp_path):
    """Structural typing: plain objects (str classification, int patterns) are accepted;
    an unknown convention is written as such."""
    from types import SimpleNamespace
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=CLASSIC_SPOTS[4:5])
    model = make_analysis(mag, ph, CLASSIC_SPOTS[4:5])
    les = model.lesions[0]
    plain = SimpleNamespace(
        study_instance_uid=model.study_instance_uid, magnitude_series_uid=model.magnitude_series_uid,
        phase_series_uid=model.phase_series_uid, vendor="Unknown", phase_convention="unknown",
        convention_source="no rule matched Manufacturer 'ACME'", label_map=model.label_map,
        lesions=[SimpleNamespace(
            id=7, center_lps_mm=les.center_lps_mm, diameter_mm=2.5, slice_indices=les.slice_indices,
            upper_border_slice=les.upper_border_slice, lower_border_slice=les.lower_border_slice,
            central_slice=les.central_slice, border_pattern=2, central_pattern=None,
            classification="indeterminate", confidence=0.0, reason="convention unknown")],
    )
    plain.label_map = (model.label_map > 0) * 7
    kinds = _by_kind(write_results(plain, mag, ph, tmp_path / "out", include=("sr",)))
    [spot] = read_spots(pydicom.dcmread(kinds["sr"][0]))
    assert spot["label"] == "Indet 1" and spot["class"] == "indeterminate"
    assert spot["convention"] == "unknown" and spot["border_pattern"] == 2
    assert spot["central_pattern"] is None and spot["certainty_pct"] == 0.0
