"""Binary SEG: read back with highdicom, pixel-aligned with the magnitude series, one segment per
spot with the SR's tracking UIDs, phase instances referenced."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_io.results import codes
from dicom_io.results import write_results
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
        assert desc.tracking_id == spot["label"] == desc.segment_label
        assert desc.segmented_property_category == codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE
        assert desc.segmented_property_type == codes.FINDING_BY_CLASS[les.finding]
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
    # phase instances are referenced too (further source images)
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                  for i in s.ReferencedInstanceSequence}
    derivation = {s.ReferencedSOPInstanceUID for pf in seg.PerFrameFunctionalGroupsSequence
                  for d in pf.DerivationImageSequence for s in d.SourceImageSequence}
    phase_uids = {f.sop_instance_uid for f in ph.frames}
    assert phase_uids & referenced and phase_uids & derivation


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
