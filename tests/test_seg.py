"""Binary SEG: read back with highdicom, pixel-aligned with the magnitude series, one segment per
spot with the SR's tracking UIDs, phase instances referenced; what a viewer shows of it: a label
and description that say the class, one distinct display colour per class, the disclaimer, and a
series date/time."""
from __future__ import annotations

import itertools

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_io.results import Finding, codes
from dicom_io.results import write_results
from dicom_io.results.context import NOT_FOR_DIAGNOSIS
from dicom_io.results.sr import read_spots

from results_fixtures import (CLASSIC_SPOTS, ENHANCED_SPOTS, VENDORS, classic_pair, enhanced_pair,
                              make_analysis, analysis_from_truth, sample_pair)


def _write(analysis, mag, ph, out):
    kinds: dict[str, list] = {}
    for p in write_results(analysis, mag, ph, out, include=("sr", "seg")).paths:
        kinds.setdefault(p.parent.name, []).append(p)
    return hd.seg.segread(kinds["seg"][0]), pydicom.dcmread(kinds["sr"][0])


def _check_seg_matches(seg, sr, analysis, mag, ph):
    lesions = sorted(analysis.spots, key=lambda l: l.id)
    assert seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription == "borderphase SEG"
    assert seg.StudyInstanceUID == mag.study_instance_uid
    assert seg.FrameOfReferenceUID == mag.frame_of_reference_uid
    assert seg.number_of_segments == len(lesions)
    sr_spots = read_spots(sr)
    for n, (les, spot) in enumerate(zip(lesions, sr_spots), start=1):
        desc = seg.get_segment_description(n)
        assert desc.tracking_uid == spot["tracking_uid"]
        assert desc.tracking_id == spot["label"]
        # the label a viewer lists says the class in words: "CMB 1 microbleed"
        assert desc.segment_label == spot["label"] and desc.segment_label.endswith(les.finding.value)
        assert desc.SegmentDescription.startswith(desc.segment_label)
        assert f"{les.diameter_mm:.1f} mm" in desc.SegmentDescription
        assert desc.segmented_property_category == codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
        assert desc.segmented_property_type == codes.FINDING_BY_CLASS[les.finding]
        assert "RecommendedDisplayCIELabValue" in desc, f"segment {n} has no display colour"
    _check_colours(seg, lesions)
    # what the object says it is, and when it was made
    assert NOT_FOR_DIAGNOSIS in seg.ContentDescription and NOT_FOR_DIAGNOSIS in seg.ImageComments
    assert "microbleed" in seg.ImageComments and "calcification" in seg.ImageComments
    assert seg.SeriesDate == sr.SeriesDate and seg.SeriesTime == sr.SeriesTime
    assert len(seg.SeriesDate) == 8 and len(seg.SeriesTime) >= 6
    # empty frames are omitted: one frame per (segment, slice showing it)
    expected_frames = sum(int(np.any(analysis.label_map[k] == les.id))
                          for les in lesions for k in range(mag.shape[0]))
    assert int(seg.NumberOfFrames) == expected_frames
    # pixel-aligned with the magnitude slices
    for k, fh in enumerate(mag.frames):
        if not np.any(analysis.label_map[k]):
            continue
        if fh.frame_index is None:
            pix = seg.get_pixels_by_source_instance([fh.sop_instance_uid])[0]
        else:
            pix = seg.get_pixels_by_source_frame(fh.sop_instance_uid, [fh.frame_index + 1])[0]
        for n, les in enumerate(lesions):
            np.testing.assert_array_equal(pix[..., n], analysis.label_map[k] == les.id)
    # one referenced series, the magnitude's (OHIF draws a SEG on the one series it references);
    # phase instances of that same series are referenced too (further source images)
    assert [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence] == [mag.series_instance_uid]
    if ph.series_instance_uid == mag.series_instance_uid:
        referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                      for i in s.ReferencedInstanceSequence}
        derivation = {s.ReferencedSOPInstanceUID for pf in seg.PerFrameFunctionalGroupsSequence
                      for d in pf.DerivationImageSequence for s in d.SourceImageSequence}
        phase_uids = {f.sop_instance_uid for f in ph.frames}
        assert phase_uids & referenced and phase_uids & derivation


def _lab(seg, n: int) -> np.ndarray:
    return np.array(hd.color.CIELabColor.from_dicom_value(
        seg.get_segment_description(n).RecommendedDisplayCIELabValue).lab)


def _check_colours(seg, lesions) -> None:
    """One colour per class: the same for every segment of a class, far from every other class's
    (CIE76 delta E >= 40) and far from grey (chroma >= 30), so it reads on a grey MR."""
    by_class: dict[Finding, set[tuple]] = {}
    for n, les in enumerate(lesions, start=1):
        by_class.setdefault(les.finding, set()).add(tuple(np.round(_lab(seg, n), 3)))
    assert all(len(colours) == 1 for colours in by_class.values()), by_class
    labs = {f: np.array(next(iter(c))) for f, c in by_class.items()}
    for f, lab in labs.items():
        assert np.hypot(lab[1], lab[2]) >= 30, f"{f}: colour {lab} is nearly grey"
    for (f1, l1), (f2, l2) in itertools.combinations(labs.items(), 2):
        assert np.linalg.norm(l1 - l2) >= 40, f"{f1} and {f2} have similar colours {l1}, {l2}"


def test_every_class_has_its_own_colour():
    """All three classes, not only those a fixture happens to hold: distinct and not grey."""
    from dicom_io.results.context import CLASS_DISPLAY_RGB
    assert set(CLASS_DISPLAY_RGB) == set(Finding)
    labs = {f: np.array(hd.color.CIELabColor.from_rgb(*rgb).lab) for f, rgb in CLASS_DISPLAY_RGB.items()}
    for f, lab in labs.items():
        assert np.hypot(lab[1], lab[2]) >= 30, f
    for (f1, l1), (f2, l2) in itertools.combinations(labs.items(), 2):
        assert np.linalg.norm(l1 - l2) >= 40, (f1, f2)


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg_classic")
    mag, ph = classic_pair(tmp)
    analysis = make_analysis(mag, ph, CLASSIC_SPOTS)
    seg, sr = _write(analysis, mag, ph, tmp / "out")
    return seg, sr, analysis, mag, ph


def test_classic_seg_matches_analysis_and_sr(classic):
    seg, sr, analysis, mag, ph = classic
    _check_seg_matches(seg, sr, analysis, mag, ph)
    assert seg.SeriesNumber == 502


def test_enhanced_seg(tmp_path):
    pair = enhanced_pair()
    if pair is None:
        pytest.skip("../shared/vendor_dicom (Siemens XA30 enhanced files) not found")
    mag, ph = pair
    analysis = make_analysis(mag, ph, ENHANCED_SPOTS)
    seg, sr = _write(analysis, mag, ph, tmp_path / "out")
    _check_seg_matches(seg, sr, analysis, mag, ph)
    frames = {s.ReferencedFrameNumber for pf in seg.PerFrameFunctionalGroupsSequence
              for d in pf.DerivationImageSequence for s in d.SourceImageSequence}
    assert frames                             # per-frame references into the multi-frame sources


@pytest.mark.parametrize("vendor", VENDORS)
def test_sample_study_seg(vendor, tmp_path):
    mag, ph, truth = sample_pair(vendor)
    analysis = analysis_from_truth(mag, ph, truth)
    seg, sr = _write(analysis, mag, ph, tmp_path / "out")
    _check_seg_matches(seg, sr, analysis, mag, ph)
