"""FrameHeader from classic, Enhanced MR and Legacy Converted Enhanced MR data sets."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_io.read import files
from dicom_io.errors import DicomInputError
from dicom_io.read.headers import ECHO_FROM_TIME_RULE, assign_echo_numbers, frames_from_header

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"


def _item(**kw) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def enhanced(tmp_path, name="enh", *, sop_class=ENHANCED_MR, frames=None, shared=None, top=None, rows=4, cols=5):
    """Write an enhanced object; ``frames`` is a list of dicts of functional group items per frame."""
    frames = frames or []
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.1"
    ds.SeriesInstanceUID = "1.2.3.2"
    ds.Modality = "MR"
    ds.Manufacturer = "Philips"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "MIXED", "NONE"]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = len(frames)
    for k, v in (top or {}).items():
        setattr(ds, k, v)
    ds.SharedFunctionalGroupsSequence = Sequence([_groups(shared or {})])
    ds.PerFrameFunctionalGroupsSequence = Sequence([_groups(f) for f in frames])
    ds.PixelData = np.arange(rows * cols * len(frames), dtype=np.uint16).tobytes()
    p = tmp_path / name
    pydicom.dcmwrite(p, ds, enforce_file_format=True)
    return p


def _groups(spec: dict) -> Dataset:
    g = Dataset()
    for seq_kw, attrs in spec.items():
        setattr(g, seq_kw, Sequence([_item(**attrs)]))
    return g


def _frames(p):
    h = files.read_header(p)
    assert isinstance(h, files.HeaderRead), h
    return frames_from_header(h)


def test_classic_frame_facts(mr_writer):
    p = mr_writer("c", position=(1, 2, 3), orientation=(0, 1, 0, 0, 0, -1), pixel_spacing=(0.5, 0.7),
                  image_type=("ORIGINAL", "PRIMARY", "P", "ND"), echo_number=2, echo_time_ms=7.65,
                  rescale=(2, -4096))
    (f,) = _frames(p)
    assert f.frame_index is None and f.number_of_frames == 1
    assert f.position_lps_mm == (1.0, 2.0, 3.0)
    assert f.orientation == (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    assert f.pixel_spacing_mm == (0.5, 0.7)
    assert f.image_type == ("ORIGINAL", "PRIMARY", "P", "ND")
    assert (f.echo_number, f.echo_time_ms, f.echo_number_source) == (2, 7.65, "EchoNumbers")
    assert (f.rescale_slope, f.rescale_intercept) == (2.0, -4096.0)
    assert f.manufacturer == "SIEMENS" and f.modality == "MR" and f.rows == 8 and f.columns == 8
    raw = p.read_bytes()
    assert raw[f.pixel_data_offset:f.pixel_data_offset + 128] == pydicom.dcmread(p).PixelData


def test_enhanced_per_frame_overrides_shared(tmp_path):
    frames = []
    for k, (comp, te) in enumerate([("MAGNITUDE", 2.3), ("PHASE", 2.3), ("MAGNITUDE", 4.6), ("PHASE", 4.6)]):
        frames.append({
            "PlanePositionSequence": {"ImagePositionPatient": [0.0, 0.0, float(k)]},
            "MREchoSequence": {"EffectiveEchoTime": te},
            "MRImageFrameTypeSequence": {"FrameType": ["ORIGINAL", "PRIMARY", "P" if comp == "PHASE" else "M", "NONE"],
                                         "ComplexImageComponent": comp},
            "FrameContentSequence": {"StackID": "1", "InStackPositionNumber": k + 1},
            "PixelValueTransformationSequence": {"RescaleSlope": 1.5 if comp == "PHASE" else 1.0,
                                                 "RescaleIntercept": -3142 if comp == "PHASE" else 0,
                                                 "RescaleType": "mrad" if comp == "PHASE" else "normalized"},
        })
    shared = {"PlaneOrientationSequence": {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
              "PixelMeasuresSequence": {"PixelSpacing": [0.9, 0.8], "SliceThickness": 2.0, "SpacingBetweenSlices": 2.0},
              # per-frame values win over a (contradictory) shared one
              "MRImageFrameTypeSequence": {"ComplexImageComponent": "REAL"}}
    p = enhanced(tmp_path, frames=frames, shared=shared)
    fs = _frames(p)
    assert [f.frame_index for f in fs] == [0, 1, 2, 3]
    assert [f.complex_component for f in fs] == ["MAGNITUDE", "PHASE", "MAGNITUDE", "PHASE"]
    assert [f.echo_time_ms for f in fs] == [2.3, 2.3, 4.6, 4.6]
    assert [f.position_lps_mm[2] for f in fs] == [0.0, 1.0, 2.0, 3.0]
    assert all(f.orientation == (1, 0, 0, 0, 1, 0) and f.pixel_spacing_mm == (0.9, 0.8) for f in fs)
    assert fs[1].rescale_slope == 1.5 and fs[1].rescale_intercept == -3142 and fs[1].rescale_type == "mrad"
    assert fs[1].frame_type[2] == "P" and fs[0].frame_type[2] == "M"
    assert fs[0].spacing_between_slices_mm == 2.0
    # frame k's pixel bytes start k frames after the first
    step = fs[1].pixel_data_offset - fs[0].pixel_data_offset
    assert step == 4 * 5 * 2
    assert all(f.echo_number is None for f in fs)
    assign_echo_numbers(fs)
    assert [f.echo_number for f in fs] == [1, 1, 2, 2]
    assert fs[0].echo_number_source == ECHO_FROM_TIME_RULE


def test_shared_only_component_and_rescale(tmp_path):
    """Canon-style: ComplexImageComponent only in the shared groups."""
    frames = [{"PlanePositionSequence": {"ImagePositionPatient": [0.0, 0.0, float(k)]}} for k in range(3)]
    shared = {"MRImageFrameTypeSequence": {"ComplexImageComponent": "MAGNITUDE"},
              "PlaneOrientationSequence": {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
              "MREchoSequence": {"EffectiveEchoTime": 20.0},
              "PixelValueTransformationSequence": {"RescaleSlope": 2.0, "RescaleIntercept": -4096.0}}
    fs = _frames(enhanced(tmp_path, frames=frames, shared=shared))
    assert all(f.complex_component == "MAGNITUDE" and f.echo_time_ms == 20.0 and f.rescale_slope == 2.0 for f in fs)


def test_legacy_converted_enhanced_reads_unassigned_attributes(tmp_path):
    frames = [{"PlanePositionSequence": {"ImagePositionPatient": [0.0, 0.0, float(k)]},
               "UnassignedPerFrameConvertedAttributesSequence": {"EchoTime": 5.19 if k < 2 else 7.65,
                                                                 "EchoNumbers": 1 if k < 2 else 2}}
              for k in range(4)]
    shared = {"PlaneOrientationSequence": {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
              "PixelMeasuresSequence": {"PixelSpacing": [1.0, 1.0]}}
    fs = _frames(enhanced(tmp_path, sop_class=LEGACY_ENHANCED_MR, frames=frames, shared=shared,
                          top={"ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}))
    assert [f.echo_time_ms for f in fs] == [5.19, 5.19, 7.65, 7.65]
    assert [f.echo_number for f in fs] == [1, 1, 2, 2]
    assert fs[0].image_type[2] == "M" and fs[0].sop_class_uid == LEGACY_ENHANCED_MR


def test_echo_numbers_derived_by_echo_time_within_a_series(mr_writer):
    fs = []
    for k, te in enumerate([12.46, 10.0, 12.46, 10.0]):
        fs += _frames(mr_writer(f"e{k}", echo_number=None, echo_time_ms=te))
    assign_echo_numbers(fs)
    assert [f.echo_number for f in fs] == [2, 1, 2, 1]


def test_frame_count_mismatch_and_short_pixel_data_name_the_file(tmp_path, mr_writer):
    frames = [{"PlanePositionSequence": {"ImagePositionPatient": [0.0, 0.0, 0.0]}}] * 2
    p = enhanced(tmp_path, frames=frames)
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData + bytes(40)
    ds.save_as(p)
    with pytest.raises(DicomInputError) as e:
        _frames(p)
    assert str(p) in str(e.value) and "NumberOfFrames is 3" in str(e.value)

    q = mr_writer("short", rows=8, columns=8)
    ds = pydicom.dcmread(q)
    ds.PixelData = ds.PixelData[:64]
    ds.save_as(q)
    with pytest.raises(DicomInputError) as e:
        _frames(q)
    assert "holds 64 bytes" in str(e.value) and str(q) in str(e.value)
