"""TID 1500 SR: content read back with highdicom matches the analysis."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest

from dicom_io.results import codes
from dicom_io.results import Finding, write_results
from dicom_io.results.sr import read_report, read_spots, spot_name, read_study
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
    assert [tracking[i].identifier for i in sorted(tracking)] == \
        ["CMB 1 microbleed", "Calc 1 calcification", "CMB 2 microbleed", "Indet 1 indeterminate", "Calc 2 calcification"]
    assert len({t.uid for t in tracking.values()}) == len(tracking)


def test_spots_round_trip(classic):
    mag, _, analysis, kinds, _ = classic
    sr = pydicom.dcmread(kinds["sr"][0])
    spots = read_spots(sr)
    assert len(spots) == len(analysis.spots)
    assert [s["label"] for s in spots] == ["CMB 1 microbleed", "Calc 1 calcification", "CMB 2 microbleed",
                                          "Indet 1 indeterminate", "Calc 2 calcification"]
    for s, les in zip(spots, sorted(analysis.spots, key=lambda l: l.id)):
        assert s["class"] == les.finding.value
        assert s["classification_text"] == les.finding.value
        assert s["diameter_mm"] == pytest.approx(les.diameter_mm)
        assert s["certainty_pct"] == pytest.approx(100 * les.confidence)
        assert s["border_pattern"] == (None if les.border_pattern is None else int(les.border_pattern))
        assert s["central_pattern"] == (None if les.central_pattern is None else int(les.central_pattern))
        assert s["convention"] == "left-handed"
        assert s["graphic_type"] == "CIRCLE"
        assert s["reason"] == les.reason
        assert "upper border" in s["evidence"] and "lower border" in s["evidence"]
        # equal discs on every slice: the first slice of largest area carries the circle
        areas = (analysis.label_map == les.id).sum(axis=(1, 2))
        largest = int(areas.argmax())
        assert s["referenced_sop_instance_uid"] == mag.frames[largest].sop_instance_uid
        assert s["referenced_frame_numbers"] == []
        # the circle centre is the label's centroid there (pixel centre = index + 0.5)
        cx, cy = s["graphic_data"][:2]
        rows, cols = (analysis.label_map[largest] == les.id).nonzero()
        assert (cy - 0.5, cx - 0.5) == pytest.approx((rows.mean(), cols.mean()))


def _tapered(tmp_path):
    """A classic pair whose spots are small on their border slices and large in the middle
    (as real spots are): CMB 1 on slices 3-7, radius 1-4-1 px; Calc 1 on slices 1-3."""
    spots = [(3, 7, 24, 24, 4, -1, Finding.MICROBLEED, 1, 4), (1, 3, 44, 40, 3, +1, Finding.CALCIFICATION, 2, 3)]
    mag, ph = classic_pair(tmp_path, shape=(10, 64, 64), spots=spots)
    report = make_analysis(mag, ph, spots)
    lm = np.zeros_like(report.label_map)
    rr, cc = np.mgrid[0:64, 0:64]
    radii = {1: {3: 1, 4: 2, 5: 4, 6: 2, 7: 1}, 2: {1: 1, 2: 3, 3: 1}}
    centres = {1: (24, 24), 2: (44, 40)}
    for sid, by_slice in radii.items():
        r0, c0 = centres[sid]
        for k, rad in by_slice.items():
            lm[k][(rr - r0) ** 2 + (cc - c0) ** 2 <= rad ** 2] = sid
    return mag, ph, replace(report, label_map=lm), {1: 5, 2: 2}


def test_circle_is_on_the_largest_slice_with_the_real_diameter(tmp_path):
    """Issue 13: 1.5 mm circles sat on the border slice of 6 mm spots. The main region is on
    the slice of largest cross-section, with the in-plane diameter there; each border slice read
    is a further region of the same Tracking UID, after the main one (OHIF draws the first)."""
    mag, ph, report, largest = _tapered(tmp_path)
    written = write_results(report, mag, ph, tmp_path / "out", include=("sr",))
    sr = pydicom.dcmread(_by_kind(written)["sr"][0])
    spots = read_spots(sr)
    _, dr, dc = mag.voxel_size_mm
    for s, les in zip(spots, report.spots):
        k = largest[les.id]
        assert s["referenced_sop_instance_uid"] == mag.frames[k].sop_instance_uid
        area_mm2 = float((report.label_map[k] == les.id).sum()) * dr * dc
        diameter_mm = 2 * np.sqrt(area_mm2 / np.pi)
        (cx, _cy, px, _py) = s["graphic_data"]
        assert (px - cx) * dc == pytest.approx(diameter_mm / 2, rel=1e-6)
        assert f"{diameter_mm:.1f} mm" in s["region_shown"]
        roles = {b["role"].split(" (")[0]: b for b in s["border_regions"]}
        assert set(roles) == {"upper border slice read", "lower border slice read"}
        assert roles["upper border slice read"]["referenced_sop_instance_uid"] == \
            mag.frames[les.upper_border_slice].sop_instance_uid
        assert roles["lower border slice read"]["referenced_sop_instance_uid"] == \
            mag.frames[les.lower_border_slice].sop_instance_uid
        assert roles["upper border slice read"]["pattern"] == les.upper_border_pattern
        assert all(b["label"] == s["label"] and b["class"] == s["class"] for b in s["border_regions"])
    # OHIF merges groups by Tracking UID and rehydrates a spot from the image its merged group
    # references first: each spot's Tracking UID is its main group's alone, and every measurement
    # of that group is INFERRED FROM the circle on the largest slice
    groups = _measurement_groups(sr)
    uids = [next(c.UID for c in g.ContentSequence if c.ValueType == "UIDREF") for g in groups]
    assert len(uids) == len(set(uids))
    for g in groups:
        nums = [c for c in g.ContentSequence if c.ValueType == "NUM"]
        refs = {n.ContentSequence[0].ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                for n in nums}
        assert len(refs) <= 1
    main = {next(c.UID for c in g.ContentSequence if c.ValueType == "UIDREF"):
            next(c for c in g.ContentSequence if c.ValueType == "NUM").ContentSequence[0]
            .ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for g in groups if any(c.ValueType == "NUM" for c in g.ContentSequence)}
    assert main == {s["tracking_uid"]: s["referenced_sop_instance_uid"] for s in spots}
    # the reported largest slice and diameter win over the label map's when given
    spot = replace(report.spots[0], largest_slice=4, largest_diameter_mm=3.0)
    written = write_results(replace(report, spots=(spot,) + report.spots[1:]), mag, ph, tmp_path / "out2",
                            include=("sr",))
    s = read_spots(pydicom.dcmread(_by_kind(written)["sr"][0]))[0]
    assert s["referenced_sop_instance_uid"] == mag.frames[4].sop_instance_uid
    assert (s["graphic_data"][2] - s["graphic_data"][0]) * dc == pytest.approx(1.5)


def _measurement_groups(sr) -> list:
    [imaging] = [c for c in sr.ContentSequence if c.ValueType == "CONTAINER"
                 and c.ConceptNameCodeSequence[0].CodeValue == "126010"]
    return [g for g in imaging.ContentSequence if g.ConceptNameCodeSequence[0].CodeValue == "125007"]


def test_every_measurement_group_has_an_image_region_and_names_its_class(classic):
    """Issue 13: OHIF reads an image reference for every measurement group (a study summary
    group without one blacked out the viewport), and labels a spot only with its NUM items'
    concept names (the class never showed). Every group has exactly one SCOORD on a source image
    and a tracking identifier naming the class; the certainty's concept names the class."""
    mag, _, _, kinds, _ = classic
    sr = pydicom.dcmread(kinds["sr"][0])
    groups = _measurement_groups(sr)
    assert len(groups) >= 5
    words = {"CMB": "microbleed", "Calc": "calcification", "Indet": "indeterminate"}
    source_uids = {f.sop_instance_uid for f in mag.frames}
    for g in groups:
        # a TID 1410 border group has one region; a TID 1501 main group has it under every NUM
        scoords = [c for c in g.ContentSequence if c.ValueType == "SCOORD"] or \
            [n.ContentSequence[0] for n in g.ContentSequence if n.ValueType == "NUM"]
        assert scoords and all(sc.ValueType == "SCOORD" for sc in scoords)
        assert {sc.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for sc in scoords} \
            <= source_uids
        ident = next(c.TextValue for c in g.ContentSequence
                     if c.ConceptNameCodeSequence[0].CodeValue == "112039")
        prefix, _, word = spot_name(ident).split(": ")[0].split(" ")
        assert words[prefix] == word
        nums = [c.ConceptNameCodeSequence[0].CodeMeaning for c in g.ContentSequence if c.ValueType == "NUM"]
        assert not nums or any(word.lower() in m.lower() for m in nums), nums
        assert not any(c.ValueType == "CODE" and c.ConceptNameCodeSequence[0].CodeValue == "363698007"
                       for c in g.ContentSequence)  # no "363698007: Brain" line in OHIF


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


def test_report_context_algorithm_and_study_evaluations(classic):
    _, _, analysis, kinds, _ = classic
    sr = pydicom.dcmread(kinds["sr"][0])
    report = read_report(sr)
    assert report.get_observer_contexts()[0].observer_type.value == "121007"   # Device
    procedure = [c for c in report[0].ContentSequence
                 if c.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure[0].ConceptCodeSequence[0].CodeValue == "25056-3"
    # algorithm identification carries the convention and its source
    group = report.get_image_measurement_groups()[0]
    texts = [c.TextValue for c in _walk(group[0]) if c.ValueType == "TEXT"]
    assert "borderphase" in texts
    assert "phase convention: left-handed" in texts
    assert f"convention source: {analysis.convention_source}" in texts
    # one TID 1501 group per spot (its measurements), one TID 1410 group per border slice read;
    # the study-level results are report-level qualitative evaluations, not a group
    assert len(report.get_image_measurement_groups()) == len(analysis.spots)
    study = read_study(sr)
    assert study[codes.NUMBER_OF_LESIONS.value] == "5"
    assert study[codes.NUMBER_OF_MICROBLEEDS.value] == "2"
    assert study[codes.NUMBER_OF_CALCIFICATIONS.value] == "2"
    assert study[codes.NUMBER_OF_INDETERMINATE.value] == "1"
    assert study[codes.MICROBLEED.value] == codes.PRESENT.value
    assert study[codes.CALCIFICATION.value] == codes.PRESENT.value
    assert study[codes.PHASE_CONVENTION.value] == codes.convention_code("left-handed").value
    assert study[codes.DISCLAIMER_TEXT.value] == "DERIVED RESULT - NOT FOR PRIMARY DIAGNOSIS"
    assert "not a medical device" in study[codes.INTENDED_USE_TEXT.value]
    assert "radiologist" in study[codes.INTENDED_USE_TEXT.value]


def test_study_counts_mean_what_they_say(tmp_path):
    """Issue 13: "Lesion of brain = Absent" was written in studies with six lesions (it meant no
    indeterminate spot). Every study-level item says what it names: with spots but no
    indeterminate one, the lesion count is the spot count and nothing reads "absent" for lesions."""
    spots = [s for s in CLASSIC_SPOTS if s[6] != Finding.INDETERMINATE]
    mag, ph = classic_pair(tmp_path, spots=spots)
    report = make_analysis(mag, ph, spots)
    sr = pydicom.dcmread(_by_kind(write_results(report, mag, ph, tmp_path / "out", include=("sr",)))["sr"][0])
    study = read_study(sr)
    assert study[codes.NUMBER_OF_LESIONS.value] == str(len(spots)) == "4"
    assert study[codes.NUMBER_OF_INDETERMINATE.value] == "0"
    assert codes.LESION_OF_BRAIN.value not in study
    container = next(c for c in sr.ContentSequence if c.ValueType == "CONTAINER"
                     and c.ConceptNameCodeSequence[0].CodeValue == codes.QUALITATIVE_EVALUATIONS.value)
    absent = [c.ConceptNameCodeSequence[0].CodeMeaning for c in container.ContentSequence
              if c.ValueType == "CODE" and c.ConceptCodeSequence[0].CodeValue == codes.ABSENT.value]
    assert absent == []   # microbleeds and calcifications are both present
    assert {c.ValueType for c in container.ContentSequence} == {"CODE", "TEXT"}   # TID 1500 rows 13/14


def test_empty_study_gets_an_sr_saying_absent(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=[])
    analysis = make_analysis(mag, ph, [])
    kinds = _by_kind(write_results(analysis, mag, ph, tmp_path / "out"))
    assert set(kinds) == {"sr", "summary"}          # no SEG or KOS without a spot
    sr = pydicom.dcmread(kinds["sr"][0])
    assert read_spots(sr) == []
    # no measurement group at all (not an empty container, not a group without a region)
    assert not [c for c in sr.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "126010"]
    study = read_study(sr)
    assert study[codes.NUMBER_OF_LESIONS.value] == "0"
    assert study[codes.MICROBLEED.value] == codes.ABSENT.value
    assert study[codes.CALCIFICATION.value] == codes.ABSENT.value
    assert study[codes.DISCLAIMER_TEXT.value] == "DERIVED RESULT - NOT FOR PRIMARY DIAGNOSIS"


def test_enhanced_source_region_references_the_frame(tmp_path):
    pair = enhanced_pair()
    if pair is None:
        pytest.skip("../shared/vendor_dicom (Siemens XA30 enhanced files) not found")
    mag, ph = pair
    analysis = make_analysis(mag, ph, ENHANCED_SPOTS)
    kinds = _by_kind(write_results(analysis, mag, ph, tmp_path / "out"))
    spots = read_spots(pydicom.dcmread(kinds["sr"][0]))
    for s, les in zip(spots, analysis.spots):
        largest = int((analysis.label_map == les.id).sum(axis=(1, 2)).argmax())
        assert s["referenced_sop_instance_uid"] == mag.frames[largest].sop_instance_uid
        assert s["referenced_frame_numbers"] == [mag.frames[largest].frame_index + 1]
        for b in s["border_regions"]:
            k = les.upper_border_slice if b["role"].startswith("upper") else les.lower_border_slice
            assert b["referenced_frame_numbers"] == [mag.frames[k].frame_index + 1]


def test_bad_analysis_is_refused_clearly(classic):
    mag, ph, analysis, _, _ = classic
    with pytest.raises(ValueError, match="magnitude volume"):
        write_results(analysis, ph, mag, "/nonexistent")


def test_unknown_convention_and_plain_numbers_are_written_as_such(tmp_path):
    """An unknown convention is written as such; a lone indeterminate spot is "Indet 1 indeterminate" with
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
    assert sr_spot["label"] == "Indet 1 indeterminate" and sr_spot["class"] == "indeterminate"
    assert sr_spot["convention"] == "unknown" and sr_spot["border_pattern"] == 2
    assert sr_spot["central_pattern"] is None and sr_spot["certainty_pct"] == 0.0
    assert written.tracking[7].identifier == "Indet 1 indeterminate"


def test_a_label_map_of_another_shape_is_refused(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=CLASSIC_SPOTS[4:5])
    report = make_analysis(mag, ph, CLASSIC_SPOTS[4:5])
    with pytest.raises(ValueError, match="label map shape"):
        write_results(replace(report, label_map=report.label_map[:-1]), mag, ph, tmp_path / "out")


def test_pipeline_reports_the_slice_where_each_spot_is_largest():
    """plugin.pipeline.report_input gives the result writers the slice of largest footprint and
    the in-plane diameter there: the detector's diameter when that is the central slice, scaled
    by the area ratio when the label map is larger elsewhere (spots that touch share pixels)."""
    from plugin.model import Classification, Lesion, PairAnalysis, PhasePattern
    from plugin.pipeline import report_input

    lm = np.zeros((8, 32, 32), np.uint16)
    rr, cc = np.mgrid[0:32, 0:32]
    for k, rad in {2: 1, 3: 3, 4: 1}.items():       # lesion 1: largest on its central slice 3
        lm[k][(rr - 10) ** 2 + (cc - 10) ** 2 <= rad ** 2] = 1
    for k, rad in {4: 1, 5: 2, 6: 4}.items():       # lesion 2: central slice 5, larger on 6
        lm[k][(rr - 22) ** 2 + (cc - 22) ** 2 <= rad ** 2] = 2

    def lesion(i, slices, central, diameter):
        return Lesion(id=i, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=diameter, slice_indices=slices,
                      upper_border_slice=slices[0], lower_border_slice=slices[-1], central_slice=central,
                      border_pattern=PhasePattern.TOTALLY_BLACK, central_pattern=None,
                      classification=Classification.MICROBLEED, confidence=0.8)

    analysis = PairAnalysis(study_instance_uid="1.2", magnitude_series_uid="1.2.3", phase_series_uid="1.2.4",
                            vendor="GE", phase_convention=Handedness.RIGHT, convention_source="table",
                            label_map=lm, lesions=[lesion(1, [2, 3, 4], 3, 6.2), lesion(2, [4, 5, 6], 5, 2.0)])
    spots = {s.id: s for s in report_input(analysis).spots}
    assert (spots[1].largest_slice, spots[1].largest_diameter_mm) == (3, 6.2)
    area = lambda k, i: float((lm[k] == i).sum())  # noqa: E731
    assert spots[2].largest_slice == 6
    assert spots[2].largest_diameter_mm == pytest.approx(2.0 * np.sqrt(area(6, 2) / area(5, 2)), abs=0.01)


def test_a_largest_slice_outside_the_volume_is_refused(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=CLASSIC_SPOTS[4:5])
    report = make_analysis(mag, ph, CLASSIC_SPOTS[4:5])
    bad = replace(report, spots=(replace(report.spots[0], largest_slice=6),))
    with pytest.raises(ValueError, match="largest slice 6 outside the volume"):
        write_results(bad, mag, ph, tmp_path / "out", include=("sr",))


def test_each_spot_carries_its_qsm_susceptibility(tmp_path):
    """Magnetic susceptibility (DCM 126396, UCUM [ppm]) per spot, the value of the report, with
    the QSM method as its algorithm identification; a spot without a QSM value has no NUM and
    says so in its QSM reading."""
    from results_fixtures import QSM_DESCRIPTION, with_qsm
    mag, ph = classic_pair(tmp_path)
    report = with_qsm(make_analysis(mag, ph, CLASSIC_SPOTS), missing=(4,))
    sr = pydicom.dcmread(_by_kind(write_results(report, mag, ph, tmp_path / "out", include=("sr",)))["sr"][0])
    spots = read_spots(sr)
    facts = sorted(report.spots, key=lambda s: s.id)
    assert [s["qsm_chi_ppm"] for s in spots] == [f.qsm_chi_ppm for f in facts]
    assert spots[3]["qsm_chi_ppm"] is None and "not measured" in spots[3]["qsm_reading"]
    assert spots[0]["qsm_reading"].startswith("chi +0.310 ppm (95 % interval +0.260 to +0.360 ppm)")
    assert spots[0]["qsm_reading"].endswith("paramagnetic")
    nums = [c for c in _walk(sr) if c.ValueType == "NUM"
            and c.ConceptNameCodeSequence[0].CodeValue == "126396"]
    assert len(nums) == 4
    for num in nums:
        name = num.ConceptNameCodeSequence[0]
        assert (name.CodingSchemeDesignator, name.CodeMeaning) == ("DCM", "Magnetic Susceptibility")
        unit = num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
        assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("[ppm]", "UCUM")
        texts = [c.TextValue for c in num.ContentSequence if c.ValueType == "TEXT"]
        assert texts[0] == "borderphase QSM"                            # TID 4019 Algorithm Name
        assert QSM_DESCRIPTION.split("; ")[0] in texts and any("per spot" in t for t in texts)


def test_the_label_a_viewer_lists_carries_the_qsm_chi(tmp_path):
    """OHIF lists each spot by its TEXT "Comment": name, diameter, certainty and, where the map gave
    the spot a value, its QSM chi (the second opinion in the viewer the radiologist already has);
    a spot without a value has no QSM words in its label."""
    from results_fixtures import with_qsm
    mag, ph = classic_pair(tmp_path)
    report = with_qsm(make_analysis(mag, ph, CLASSIC_SPOTS), missing=(4,))
    sr = pydicom.dcmread(_by_kind(write_results(report, mag, ph, tmp_path / "out", include=("sr",)))["sr"][0])
    comments = [c.TextValue for c in _walk(sr) if c.ValueType == "TEXT"
                and c.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]
    facts = sorted(report.spots, key=lambda s: s.id)
    assert len(comments) == len(facts)
    for text, f in zip(comments, facts):
        if f.qsm_chi_ppm is None:
            assert "QSM" not in text, text
        else:
            assert text.endswith(f" mm, QSM {f.qsm_chi_ppm:+.2f} ppm"), text
        # the certainty follows the class (none for an indeterminate spot), the diameter after it
        assert ("indeterminate," in text) == (f.finding.value == "indeterminate"), text
        assert f.finding.value == "indeterminate" or " %, " in text.split(" mm")[0], text


def test_a_core_reading_is_named_as_such_in_the_sr(tmp_path):
    """A spot whose reported chi is the map's core: the SR's TID 4019 parameters and its QSM
    reading say so, the other spots keep the total-over-volume wording."""
    from dataclasses import replace as _replace
    from dicom_io.results.report import QSM_CHI_CORE, QSM_CHI_TOTAL
    from results_fixtures import with_qsm
    mag, ph = classic_pair(tmp_path)
    report = with_qsm(make_analysis(mag, ph, CLASSIC_SPOTS[:2]))
    spots = sorted(report.spots, key=lambda s: s.id)
    report = _replace(report, spots=(_replace(spots[0], qsm_chi_basis=QSM_CHI_CORE), _replace(spots[1], qsm_chi_basis=QSM_CHI_TOTAL)))
    sr = pydicom.dcmread(_by_kind(write_results(report, mag, ph, tmp_path / "out", include=("sr",)))["sr"][0])
    read = read_spots(sr)
    assert "(the map's core)" in read[0]["qsm_reading"] and "(total over the source's volume)" in read[1]["qsm_reading"]
    nums = [c for c in _walk(sr) if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeValue == "126396"]
    params = [[c.TextValue for c in num.ContentSequence if c.ValueType == "TEXT"] for num in nums]
    assert f"per spot: {QSM_CHI_CORE}" in params[0] and f"per spot: {QSM_CHI_TOTAL}" in params[1]


def test_a_wrong_qsm_unit_is_not_read_as_ppm(tmp_path):
    from results_fixtures import with_qsm
    mag, ph = classic_pair(tmp_path)
    report = with_qsm(make_analysis(mag, ph, CLASSIC_SPOTS[:1]))
    sr = pydicom.dcmread(_by_kind(write_results(report, mag, ph, tmp_path / "out", include=("sr",)))["sr"][0])
    num = next(c for c in _walk(sr) if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeValue == "126396")
    num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "ppb"
    with pytest.raises(ValueError, match="ppm"):
        read_spots(sr)


def _content_without_uids_and_times(ds: pydicom.Dataset) -> dict:
    """The data set as DICOM JSON, without the values that differ between two builds of the same
    report anyway (UIDs made fresh per build, content and series date/time)."""
    def strip(node):
        if isinstance(node, dict):
            if node.get("vr") in ("UI", "DA", "TM", "DT"):
                return {"vr": node["vr"]}
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return strip(ds.to_json_dict())


def test_the_sr_is_the_same_whether_the_largest_section_is_given_or_read_from_the_label_map(tmp_path):
    """Issue 15: the SR skips its passes over the whole label map when the pipeline gives each
    spot's largest slice and diameter (as it does); the SR content is the one the label map gives."""
    from dicom_io.results.context import build_context
    from dicom_io.results.sr import build_sr, largest_section
    mag, ph, report, largest = _tapered(tmp_path)
    from_map = build_context(report, mag, ph, algorithm_version="1")
    derived = {s.reported.id: largest_section(from_map, s) for s in from_map.spots}
    assert {k: v.slice_index for k, v in derived.items()} == largest
    given = replace(report, spots=tuple(replace(s, largest_slice=derived[s.id].slice_index,
                                                largest_diameter_mm=derived[s.id].diameter_mm)
                                        for s in report.spots))
    from_pipeline = build_context(given, mag, ph, algorithm_version="1")
    a = _content_without_uids_and_times(build_sr(from_map, sop_instance_uid="1.2.3.4"))
    b = _content_without_uids_and_times(build_sr(from_pipeline, sop_instance_uid="1.2.3.4"))
    assert a == b
    # and given facts are taken as they are, without the label map (here: one that shows nothing)
    blank = build_context(replace(given, label_map=np.zeros_like(report.label_map)), mag, ph, algorithm_version="1")
    assert [largest_section(blank, s) for s in blank.spots] == [derived[s.reported.id] for s in blank.spots]


def test_a_spots_region_found_inside_its_box_is_the_one_found_on_the_whole_slice():
    """The SR's circles and the summary's regions look for a spot's label inside its bounding box
    (found once for the label map) instead of over the whole slice on every call (a 182-spot study:
    build_sr 2.9-3.7 -> 1.9-2.3 s): centroid, radius and the fallback where the label map does not
    show the spot are the same to the bit, including odd shapes, ids with no label and slices off it."""
    from types import SimpleNamespace

    from dicom_io.results.context import _region_on_slice, label_boxes
    rng = np.random.default_rng(7)
    lm = np.zeros((6, 64, 80), np.uint16)
    for sid in (1, 2, 3, 5):   # id 4 has no label
        k0, r0, c0 = rng.integers(0, 4), rng.integers(0, 50), rng.integers(0, 66)
        lm[k0:k0 + 2, r0:r0 + 13, c0:c0 + 13][rng.random((2, 13, 13)) < 0.6] = sid
    vol = SimpleNamespace(voxel_size_mm=(2.5, 0.9, 0.9),
                          lps_mm_to_index=lambda p: np.asarray([[1.0, 30.25, 40.5]]))
    boxes = label_boxes(lm)
    for sid in range(1, 7):
        spot = SimpleNamespace(id=sid, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=3.0)
        for k in range(lm.shape[0]):
            assert _region_on_slice(lm, spot, k, vol, boxes) == _region_on_slice(lm, spot, k, vol), (sid, k)
