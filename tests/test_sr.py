"""TID 1500 SR: content read back with highdicom matches the analysis."""
from __future__ import annotations

from dataclasses import replace

import pydicom
import pytest

from dicom_io.results import codes
from dicom_io.results import Finding, write_results
from dicom_io.results.sr import read_report, read_spots
from dicom_io.vocabulary import Handedness

from results_fixtures import CLASSIC_SPOTS, ENHANCED_SPOTS, classic_pair, enhanced_pair, make_analysis


def _walk(item):
    for child in item.get("ContentSequence", []):
        yield child
        yield from _walk(child)


def _by_kind(written):
    out: dict[str, list] = {}
    for p in written.paths:
        out.setdefault(p.parent.name, []).append(p)
    return out


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sr_classic")
    mag, ph = classic_pair(tmp)
    analysis = make_analysis(mag, ph, CLASSIC_SPOTS)
    written = write_results(analysis, mag, ph, tmp / "out", algorithm_version="9.8.7")
    return mag, ph, analysis, _by_kind(written), written.tracking


def test_the_returned_tracking_identity_is_the_one_written(classic):
    """write_results assigns each spot its identity and returns it: the caller (findings.json)
    names the spot exactly as the SR does; identifiers count per finding in spot-id order."""
    _, _, analysis, kinds, tracking = classic
    assert sorted(tracking) == [s.id for s in analysis.spots]
    spots = read_spots(pydicom.dcmread(kinds["sr"][0]))
    assert [(s["label"], s["tracking_uid"]) for s in spots] == \
        [(tracking[i].identifier, tracking[i].uid) for i in sorted(tracking)]
    assert [tracking[i].identifier for i in sorted(tracking)] == ["CMB 1", "Calc 1", "CMB 2", "Indet 1", "Calc 2"]
    assert len({t.uid for t in tracking.values()}) == len(tracking)


def test_spots_round_trip(classic):
    mag, _, analysis, kinds, _ = classic
    sr = pydicom.dcmread(kinds["sr"][0])
    spots = read_spots(sr)
    assert len(spots) == len(analysis.spots)
    expected_labels = ["CMB 1", "Calc 1", "CMB 2", "Indet 1", "Calc 2"]
    assert [s["label"] for s in spots] == expected_labels
    for s, les in zip(spots, sorted(analysis.spots, key=lambda l: l.id)):
        assert s["class"] == les.finding.value
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
    mag, _, analysis, kinds, _ = classic
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
    _, _, analysis, kinds, _ = classic
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
    for s, les in zip(spots, analysis.spots):
        border = les.upper_border_slice if les.upper_border_pattern is not None else les.lower_border_slice
        assert s["referenced_sop_instance_uid"] == mag.frames[border].sop_instance_uid
        assert s["referenced_frame_numbers"] == [mag.frames[border].frame_index + 1]


def test_bad_analysis_is_refused_clearly(classic):
    mag, ph, analysis, _, _ = classic
    with pytest.raises(ValueError, match="magnitude volume"):
        write_results(analysis, ph, mag, "/nonexistent")


def test_unknown_convention_and_plain_numbers_are_written_as_such(tmp_path):
    """An unknown convention is written as such; a lone indeterminate spot is "Indet 1" with
    its pattern numbers, whatever its id."""
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=CLASSIC_SPOTS[4:5])
    report = make_analysis(mag, ph, CLASSIC_SPOTS[4:5])
    spot = replace(report.spots[0], id=7, finding=Finding.INDETERMINATE, diameter_mm=2.5, border_pattern=2,
                   central_pattern=None, upper_border_pattern=None, lower_border_pattern=None,
                   confidence=0.0, reason="convention unknown")
    report = replace(report, vendor="Unknown", phase_convention=Handedness.UNKNOWN,
                     convention_source="no rule matched Manufacturer 'ACME'", spots=(spot,),
                     label_map=(report.label_map > 0) * 7)
    written = write_results(report, mag, ph, tmp_path / "out", include=("sr",))
    [sr_spot] = read_spots(pydicom.dcmread(_by_kind(written)["sr"][0]))
    assert sr_spot["label"] == "Indet 1" and sr_spot["class"] == "indeterminate"
    assert sr_spot["convention"] == "unknown" and sr_spot["border_pattern"] == 2
    assert sr_spot["central_pattern"] is None and sr_spot["certainty_pct"] == 0.0
    assert written.tracking[7].identifier == "Indet 1"


def test_a_label_map_of_another_shape_is_refused(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=CLASSIC_SPOTS[4:5])
    report = make_analysis(mag, ph, CLASSIC_SPOTS[4:5])
    with pytest.raises(ValueError, match="label map shape"):
        write_results(replace(report, label_map=report.label_map[:-1]), mag, ph, tmp_path / "out")
