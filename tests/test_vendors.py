"""Vendor codecs: vendor identification, component rules, phase scaling, magnitude rescale, and
the write layouts (the write direction must agree with the read direction).

Small synthetic headers (built in memory, read through the project's own FrameHeader builder)
plus the real scanner files in ../shared/vendor_dicom (skipped when absent).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_io.errors import DicomInputError
from dicom_io.read.files import HeaderRead
from dicom_io.read.headers import frames_from_header
from dicom_io.vendors import (VENDORS, WRITE_STYLES, codec_for, component_from_pixels, normalise_manufacturer,
                              writing_codec)
from dicom_io.vendors.philips import private_scale
from dicom_io.vocabulary import Component

VENDOR_DICOM = Path(os.environ.get("BORDERPHASE_VENDOR_DICOM",
                                   Path(__file__).resolve().parents[2] / "shared" / "vendor_dicom"))


def make_ds(manufacturer=None, image_type=("ORIGINAL", "PRIMARY", "OTHER"), enhanced=False, **attrs) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4" + (".1" if enhanced else "")
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "MR"
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    ds.ImageType = list(image_type)
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def frames_of(ds: Dataset):
    return frames_from_header(HeaderRead(Path("mem.dcm"), ds, 0, ExplicitVRLittleEndian, None, None))


def frame_of(ds: Dataset):
    return frames_of(ds)[0]


# ---------------------------------------------------------------------------------------------
# Vendor identification
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,vendor", [
    ("GE MEDICAL SYSTEMS", "GE"), ("GE Healthcare", "GE"), ("GE", "GE"),
    ("Philips", "Philips"), ("Philips Medical Systems", "Philips"), ("Philips Healthcare", "Philips"),
    ("SIEMENS", "Siemens"), ("Siemens Healthineers", "Siemens"),
    ("CANON_MEC", "Canon"), ("TOSHIBA_MEC", "Canon"), ("Canon Medical Systems", "Canon"),
    ("HITACHI", None), ("GENERIC CORP", None), ("", None), (None, None),
])
def test_manufacturer_spellings(text, vendor):
    assert normalise_manufacturer(text) == vendor


def test_vendor_from_manufacturer_records_it():
    codec, src = codec_for(frame_of(make_ds("Philips Healthcare")))
    assert codec.vendor == "Philips" and src == "Manufacturer='Philips Healthcare'"


@pytest.mark.parametrize("group,creator,vendor", [
    (0x0043, "GEMS_PARM_01", "GE"),
    (0x2005, "Philips MR Imaging DD 001", "Philips"),
    (0x2001, "Philips Imaging DD 001", "Philips"),
    (0x0029, "SIEMENS CSA HEADER", "Siemens"),
    (0x0019, "SIEMENS MR HEADER", "Siemens"),
    (0x700D, "TOSHIBA_MEC_MR3", "Canon"),
    (0x700D, "CANON_MEC_MR3", "Canon"),
])
def test_vendor_from_private_creator_when_manufacturer_missing(group, creator, vendor):
    ds = make_ds(None)
    ds.private_block(group, creator, create=True)
    codec, src = codec_for(frame_of(ds))
    assert codec.vendor == vendor
    assert src.startswith("Manufacturer missing; private creator") and creator in src


def test_vendor_from_model_then_uid_root_then_unknown():
    codec, src = codec_for(frame_of(make_ds(None, ManufacturerModelName="MAGNETOM Vida")))
    assert codec.vendor == "Siemens" and "ManufacturerModelName" in src
    ds = make_ds(None)
    ds.SOPInstanceUID = "1.2.840.113619.2.1.2.3"
    codec, src = codec_for(frame_of(ds))
    assert codec.vendor == "GE" and "SOPInstanceUID root 1.2.840.113619" in src
    codec, src = codec_for(frame_of(make_ds(None)))
    assert codec.vendor == "unknown" and "Manufacturer missing" in src


def test_unlisted_manufacturer_is_generic_not_guessed():
    codec, src = codec_for(frame_of(make_ds("HITACHI")))
    assert codec.vendor == "HITACHI" and "not in vendor table" in src


# ---------------------------------------------------------------------------------------------
# Component
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code,comp", [(0, "magnitude"), (1, "phase"), (2, "real"), (3, "imaginary")])
def test_ge_private_component(code, comp):
    ds = make_ds("GE MEDICAL SYSTEMS")
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x2F, "SS", code)
    codec, _ = codec_for(frame_of(ds))
    assert codec.component(frame_of(ds)) == (comp, f"GE private (0043,102F)={code} (GEMS_PARM_01)")


def test_ge_without_private_is_unknown_then_pixels():
    codec, _ = codec_for(frame_of(make_ds("GE MEDICAL SYSTEMS")))
    comp, src = codec.component(frame_of(make_ds("GE MEDICAL SYSTEMS")))
    assert comp == "unknown" and "pixel statistics" in src


@pytest.mark.parametrize("mark,comp", [("M", "magnitude"), ("P", "phase"), ("R", "real"), ("I", "imaginary")])
def test_philips_private_component_beats_image_type(mark, comp):
    ds = make_ds("Philips", image_type=("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"))
    ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(0x11, "CS", mark)
    f = frame_of(ds)
    assert codec_for(f)[0].component(f) == (comp, f"Philips private (2005,1011)={mark}")


@pytest.mark.parametrize("image_type,comp,src", [
    (("ORIGINAL", "PRIMARY", "P", "ND"), "phase", "ImageType[2]=P"),
    (("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), "magnitude", "ImageType[2]=M"),
    (("ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"), "phase", "ImageType[3]=P"),
    (("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"), "magnitude", "ImageType[3]=M"),
    (("DERIVED", "SECONDARY", "PHASE"), "phase", "ImageType[2]=PHASE"),
    (("ORIGINAL", "PRIMARY", "REAL"), "real", "ImageType[2]=REAL"),
    (("ORIGINAL", "PRIMARY", "IMAGINARY"), "imaginary", "ImageType[2]=IMAGINARY"),
])
def test_image_type_component(image_type, comp, src):
    f = frame_of(make_ds("SIEMENS", image_type=image_type))
    assert codec_for(f)[0].component(f) == (comp, src)


def test_conflicting_image_type_decides_nothing_and_p_in_first_two_values_ignored():
    f = frame_of(make_ds("SIEMENS", image_type=("ORIGINAL", "PRIMARY", "M", "P")))
    assert codec_for(f)[0].component(f)[0] == "unknown"
    f = frame_of(make_ds("SIEMENS", image_type=("P", "M")))   # malformed: value 1/2 are not markers
    assert codec_for(f)[0].component(f)[0] == "unknown"


def _enhanced(manufacturer, per_frame_cc=None, shared_cc=None, n=2):
    ds = make_ds(manufacturer, enhanced=True, NumberOfFrames=n)
    shared = Dataset()
    if shared_cc:
        it = Dataset(); it.ComplexImageComponent = shared_cc; it.FrameType = ["ORIGINAL", "PRIMARY", "OTHER", "NONE"]
        shared.MRImageFrameTypeSequence = [it]
    ds.SharedFunctionalGroupsSequence = [shared]
    items = []
    for k in range(n):
        item = Dataset()
        if per_frame_cc:
            it = Dataset(); it.ComplexImageComponent = per_frame_cc[k]
            it.FrameType = ["ORIGINAL", "PRIMARY", per_frame_cc[k][0], "NONE"]
            item.MRImageFrameTypeSequence = [it]
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    return ds


def test_enhanced_per_frame_and_shared_complex_component():
    frames = frames_of(_enhanced("Philips", per_frame_cc=["MAGNITUDE", "PHASE"]))
    codec = codec_for(frames[0])[0]
    assert [codec.component(f) for f in frames] == [("magnitude", "ComplexImageComponent=MAGNITUDE"),
                                                  ("phase", "ComplexImageComponent=PHASE")]
    frames = frames_of(_enhanced("CANON_MEC", shared_cc="PHASE"))
    assert {codec_for(f)[0].component(f) for f in frames} == {("phase", "ComplexImageComponent=PHASE")}


def test_description_is_the_weakest_public_rule():
    f = frame_of(make_ds("CANON_MEC", SeriesDescription="SWI PHASE"))
    assert codec_for(f)[0].component(f) == ("phase", "SeriesDescription word (phase)")
    f = frame_of(make_ds("CANON_MEC", SeriesDescription="SWI Mag"))
    assert codec_for(f)[0].component(f)[0] == "magnitude"
    f = frame_of(make_ds("CANON_MEC", SeriesDescription="Graphene"))   # 'ph' inside a word: no
    assert codec_for(f)[0].component(f)[0] == "unknown"


def _head_like(rng, phase: bool) -> np.ndarray:
    z, y, x = np.mgrid[0:4, 0:96, 0:96]
    inside = (y - 48) ** 2 + (x - 48) ** 2 < 36 ** 2
    if phase:
        ph = np.where(inside, 0.8 * np.sin(x / 9.0) + 0.3 * rng.standard_normal(inside.shape),
                      rng.uniform(-np.pi, np.pi, inside.shape))
        ph = (ph + np.pi) % (2 * np.pi) - np.pi
        return np.round(ph * 1000).astype(np.int16)
    mag = np.where(inside, 900 + 60 * rng.standard_normal(inside.shape), 0) + np.abs(25 * rng.standard_normal(inside.shape))
    mag[:, 40:44, 40:44] = 3000  # a few bright voxels (fat, vessels)
    return np.round(mag).astype(np.uint16)


def test_component_from_pixels_phase_magnitude_and_undecided():
    rng = np.random.default_rng(1)
    comp, src = component_from_pixels(_head_like(rng, True))
    assert comp == "phase" and src.startswith("pixel statistics")
    assert component_from_pixels(_head_like(rng, True)[1])[0] == "phase"            # one slice
    assert component_from_pixels(_head_like(rng, False))[0] == "magnitude"
    assert component_from_pixels(np.full((2, 8, 8), 7, np.uint16))[0] == "unknown"  # constant
    assert component_from_pixels(rng.normal(0, 1, (2, 64, 64)))[0] == "unknown"      # gaussian: neither


def test_component_from_pixels_uniform_tissue_phantom_and_masked_background():
    """A uniform head (air noise + tissue at one level, as the phantom writes it) is magnitude;
    the same shape with a single-valued (masked) background and no wraps stays unknown, since a
    zero-filled smooth phase map looks the same."""
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:128, 0:128]
    inside = (y - 64) ** 2 + (x - 64) ** 2 < 50 ** 2
    mag = np.where(inside, 3900 + 100 * rng.standard_normal(inside.shape), np.abs(100 * rng.standard_normal(inside.shape)))
    comp, src = component_from_pixels(np.clip(mag, 0, None).astype(np.uint16))
    assert comp == "magnitude" and "bright tissue" in src
    masked = np.where(inside, 3000 + 100 * rng.standard_normal(inside.shape), 0).astype(np.uint16)
    assert component_from_pixels(masked)[0] == "unknown"


# ---------------------------------------------------------------------------------------------
# Phase scaling
# ---------------------------------------------------------------------------------------------
def _stack_frames(manufacturer, n, **attrs):
    return [frame_of(make_ds(manufacturer, **attrs)) for _ in range(n)]


def test_siemens_rescaled_pi_over_4096():
    frames = _stack_frames("SIEMENS", 2, RescaleSlope=2, RescaleIntercept=-4096, RescaleType="US")
    stored = np.array([0, 1024, 2048, 3072, 4095], np.uint16).reshape(1, 1, 5).repeat(2, 0)
    rad, rule = codec_for(frames[0])[0].phase_to_radians(stored, frames)
    assert rad.dtype == np.float32 and rule == "Siemens: rescaled (slope 2, intercept -4096) * pi/4096"
    np.testing.assert_allclose(rad[0, 0], [-math.pi, -math.pi / 2, 0, math.pi / 2, math.pi * 4094 / 4096], atol=1e-6)


def test_siemens_per_frame_rescale():
    f1 = frame_of(make_ds("Siemens Healthineers", RescaleSlope=2, RescaleIntercept=-4096))
    f2 = frame_of(make_ds("Siemens Healthineers", RescaleSlope=1, RescaleIntercept=-2048))
    stored = np.array([[[2048 + 1024]], [[2048 + 1024]]], np.uint16)
    rad, rule = codec_for(f1)[0].phase_to_radians(stored, [f1, f2])
    np.testing.assert_allclose(rad.ravel(), [math.pi / 2, math.pi / 4], atol=1e-6)
    assert "per-frame rescale" in rule


def test_philips_mrad_and_private_scale_agree_on_real_values():
    kw = dict(RescaleSlope=1.53455433455433, RescaleIntercept=-3142, RescaleType="mrad")
    frames = _stack_frames("Philips", 1, **kw)
    stored = np.array([[[0, 2047, 4094]]], np.uint16)
    rad, rule = codec_for(frames[0])[0].phase_to_radians(stored, frames)
    assert rule.startswith("Philips RescaleType mrad")
    np.testing.assert_allclose(rad.ravel(), [-3.142 + 2 * math.pi, (2047 * 1.53455433455433 - 3142) / 1000,
                                             (4094 * 1.53455433455433 - 3142) / 1000], atol=1e-5)
    # private scale only (RescaleType stripped): radians = (stored - SI) / SS
    ds = make_ds("Philips")
    blk = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    blk.add_new(0x0E, "FL", 651.739501953125)
    blk.add_new(0x0D, "FL", 2047.5001220703125)
    f = frame_of(ds)
    rad2, rule2 = codec_for(f)[0].phase_to_radians(stored, [f])
    assert rule2.startswith("Philips private scale (2005,100E)/(2005,100D)")
    np.testing.assert_allclose(np.angle(np.exp(1j * (rad2 - rad))), 0, atol=2e-3)


@pytest.mark.parametrize("values,expect_rule,scale,offset", [
    ([-3142, 0, 1571, 3141], "milliradians", 1e-3, 0.0),
    ([-4096, 0, 2048, 4095], "+-4096", math.pi / 4096, 0.0),
    ([0, 2048, 4095], "0..4095 offset", math.pi / 2048, -math.pi),
    ([-32768, 0, 32767], "+-32768", math.pi / 32768, 0.0),
])
def test_ge_and_canon_infer_unit_from_range(values, expect_rule, scale, offset):
    for man in ("GE MEDICAL SYSTEMS", "CANON_MEC", None):
        frames = _stack_frames(man, 1)
        stored = np.array(values, np.int32).reshape(1, 1, -1)
        rad, rule = codec_for(frames[0])[0].phase_to_radians(stored, frames)
        assert expect_rule in rule, rule
        want = (np.array(values) * scale + offset + np.pi) % (2 * np.pi) - np.pi
        np.testing.assert_allclose(rad.ravel(), want, atol=1e-5)


def test_already_radians_and_unknown_range():
    frames = _stack_frames("GE MEDICAL SYSTEMS", 1)
    stored = np.array([[[-3.1, 0.25, 3.14159]]], np.float32)
    rad, rule = codec_for(frames[0])[0].phase_to_radians(stored, frames)
    assert "already radians" in rule
    np.testing.assert_allclose(rad.ravel(), stored.ravel(), atol=1e-6)
    with pytest.raises(DicomInputError, match="no known scaling"):
        codec_for(frames[0])[0].phase_to_radians(np.array([[[-70000, 70000]]], np.int32), frames)


def test_wrap_is_half_open_and_fast_path_keeps_input():
    frames = _stack_frames("SIEMENS", 1, RescaleSlope=2, RescaleIntercept=-4096)
    stored = np.array([[[0, 4096]]], np.uint16)  # -pi and +pi: both must come out as -pi
    before = stored.copy()
    rad, _ = codec_for(frames[0])[0].phase_to_radians(stored, frames)
    assert np.all(rad >= -np.float32(np.pi)) and np.all(rad < np.float32(np.pi))
    np.testing.assert_array_equal(stored, before)


def test_magnitude_rescale_philips_normalized():
    frames = _stack_frames("Philips", 1, RescaleSlope=1.29157509157509, RescaleIntercept=0, RescaleType="normalized")
    mag = codec_for(frames[0])[0].magnitude(np.array([[[0, 1000]]], np.uint16), frames)
    assert mag.dtype == np.float32
    np.testing.assert_allclose(mag.ravel(), [0, 1291.57509157509], rtol=1e-6)
    frames = _stack_frames("SIEMENS", 1)
    np.testing.assert_array_equal(codec_for(frames[0])[0].magnitude(np.array([[[3, 5]]], np.uint16), frames).ravel(), [3, 5])


def test_phase_to_radians_is_vectorised_fast():
    """512 x 512 x 60 Siemens phase in well under a second (no per-slice Python)."""
    import time
    frames = _stack_frames("SIEMENS", 60, RescaleSlope=2, RescaleIntercept=-4096)
    stored = np.random.default_rng(0).integers(0, 4096, (60, 512, 512), dtype=np.uint16)
    codec = codec_for(frames[0])[0]
    t = time.perf_counter()
    rad, _ = codec.phase_to_radians(stored, frames)
    dt = time.perf_counter() - t
    assert rad.shape == stored.shape and dt < 1.0, dt


# ---------------------------------------------------------------------------------------------
# Real scanner files
# ---------------------------------------------------------------------------------------------
def _real(name):
    d = VENDOR_DICOM / name
    if not d.is_dir():
        pytest.skip(f"real vendor DICOM not found at {d} (set BORDERPHASE_VENDOR_DICOM)")
    return d


def _read_frames(path: Path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds, frames_of(ds)


def test_real_siemens_e11_phase_and_magnitude():
    d = _real("siemens_e11_classic_phase")
    files = sorted(d.iterdir())[:3]
    frames = [_read_frames(p)[1][0] for p in files]
    codec, src = codec_for(frames[0])
    assert codec.vendor == "Siemens" and src == "Manufacturer='SIEMENS'"
    assert codec.component(frames[0]) == ("phase", "ImageType[2]=P")
    stored = np.stack([pydicom.dcmread(p).pixel_array for p in files])
    rad, rule = codec.phase_to_radians(stored, frames)
    assert rule == "Siemens: rescaled (slope 2, intercept -4096) * pi/4096"
    assert rad.min() >= -math.pi and rad.max() < math.pi and rad.max() - rad.min() > 6.0
    m = _real("siemens_e11_classic_magnitude")
    f = _read_frames(sorted(m.iterdir())[0])[1][0]
    assert codec_for(f)[0].component(f) == ("magnitude", "ImageType[2]=M")


def test_real_siemens_xa30_enhanced_per_frame_rescale():
    d = _real("siemens_xa30_enhanced_phase")
    path = next(d.iterdir())
    _, frames = _read_frames(path)
    codec, src = codec_for(frames[0])
    assert codec.vendor == "Siemens" and "Siemens Healthineers" in src
    assert {codec.component(f) for f in frames} == {("phase", "ComplexImageComponent=PHASE")}
    stored = pydicom.dcmread(path).pixel_array
    rad, rule = codec.phase_to_radians(stored, frames)
    assert "* pi/4096" in rule and rad.max() - rad.min() > 6.0


def test_real_philips_components_and_mrad():
    d = _real("philips_571_classic_fieldmap")
    ph_path = d / "2001_0107_ph.dcm"
    _, (f,) = _read_frames(ph_path)
    codec, _ = codec_for(f)
    assert codec.vendor == "Philips"
    assert codec.component(f) == ("phase", "Philips private (2005,1011)=P")
    stored = pydicom.dcmread(ph_path).pixel_array[None]
    rad, rule = codec.phase_to_radians(stored, [f])
    assert rule == "Philips RescaleType mrad: (slope 1.53455, intercept -3142) / 1000"
    # the private scale gives the same radians (MANIFEST facts, measured)
    rad_priv = (stored.astype(float) - 2047.5001220703125) / 651.739501953125
    assert np.max(np.abs(np.angle(np.exp(1j * (rad - rad_priv))))) < 2e-3
    _, (fm,) = _read_frames(d / "2001_0001.dcm")
    assert codec.component(fm) == ("magnitude", "Philips private (2005,1011)=M")


def test_real_ge_magnitude_by_private_and_canon_shared_component():
    d = _real("ge_dv27_b0map")
    _, (f,) = _read_frames(sorted(d.iterdir())[0])
    codec, src = codec_for(f)
    assert codec.vendor == "GE" and src == "Manufacturer='GE MEDICAL SYSTEMS'"
    assert codec.component(f) == ("magnitude", "GE private (0043,102F)=0 (GEMS_PARM_01)")
    # with Manufacturer removed, the GEMS_* private creators still name the vendor
    ds = pydicom.dcmread(sorted(d.iterdir())[0], stop_before_pixels=True)
    del ds.Manufacturer
    codec2, src2 = codec_for(frames_of(ds)[0])
    assert codec2.vendor == "GE" and "private creator 'GEMS_" in src2
    c = _real("canon_v61_enhanced")
    _, frames = _read_frames(c / "3000.dcm")
    codec, src = codec_for(frames[0])
    assert codec.vendor == "Canon" and src == "Manufacturer='CANON_MEC'"
    assert codec.component(frames[0]) == ("magnitude", "ComplexImageComponent=MAGNITUDE")


def test_real_canon_without_manufacturer_uses_model_then_uid_root():
    c = _real("canon_v61_enhanced")
    ds = pydicom.dcmread(c / "3000.dcm", stop_before_pixels=True)
    del ds.Manufacturer
    codec, src = codec_for(frames_of(ds)[0])
    assert codec.vendor == "Canon" and src == "Manufacturer missing; ManufacturerModelName='Galan 3T' (model table)"
    del ds.ManufacturerModelName
    codec, src = codec_for(frames_of(ds)[0])
    assert codec.vendor == "Canon" and "root 1.2.392.200036.9116 (Canon)" in src


@pytest.mark.conformance
def test_pixel_statistics_never_contradict_real_headers():
    """The last-resort pixel rule says 'unknown' rather than contradict a real header.
    (GE's B0 map folder holds field-map images that GE also tags (0043,102F)=0; they are left out.)"""
    checked = 0
    for name in ("siemens_e11_classic_magnitude", "siemens_e11_classic_phase", "siemens_xa30_enhanced_magnitude",
                 "siemens_xa30_enhanced_phase", "philips_571_classic_fieldmap", "canon_v61_enhanced"):
        d = VENDOR_DICOM / name
        if not d.is_dir():
            pytest.skip(f"real vendor DICOM not found at {d} (set BORDERPHASE_VENDOR_DICOM)")
        for path in sorted(d.iterdir())[::3]:
            ds = pydicom.dcmread(path)
            frames = frames_of(ds)
            pixels = ds.pixel_array
            pixels = pixels[None] if pixels.ndim == 2 else pixels
            codec = codec_for(frames[0])[0]
            for i in range(0, len(frames), max(1, len(frames) // 10)):
                truth = codec.component(frames[i])[0]
                guess, why = component_from_pixels(pixels[i])
                assert guess in (truth, "unknown"), (path.name, i, truth, why)
                checked += 1
    assert checked > 100


def test_philips_per_frame_private_item_without_its_own_creator():
    """Philips per-frame items (2005,140F) may hold (2005,1011) without repeating the creator
    element: the top-level reservation of block 0x10 applies."""
    ds = _enhanced("Philips Healthcare", n=2)
    ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)          # (2005,0010)
    ds.private_block(0x2005, "Philips MR Imaging DD 002", create=True)          # (2005,0011)
    ds.private_block(0x2005, "Philips MR Imaging DD 003", create=True)
    ds.private_block(0x2005, "Philips MR Imaging DD 004", create=True)
    ds.private_block(0x2005, "Philips MR Imaging DD 005", create=True)          # (2005,0014)
    for item, mark in zip(ds.PerFrameFunctionalGroupsSequence, ("M", "P")):
        inner = Dataset()
        inner.add_new(0x20051011, "CS", mark)
        item.add_new(0x2005140F, "SQ", [inner])
    frames = frames_of(ds)
    codec = codec_for(frames[0])[0]
    assert [codec.component(f) for f in frames] == [("magnitude", "Philips per-frame private (2005,1011)=M"),
                                                  ("phase", "Philips per-frame private (2005,1011)=P")]


def test_wrap_radians_matches_modulo_far_and_near():
    from dicom_io.phase import wrap_rad
    rng = np.random.default_rng(3)
    for span in (3.3, 9.0, 60.0):
        x = rng.uniform(-span, span, 10_000).astype(np.float32)
        want = np.mod(x.astype(np.float64) + np.pi, 2 * np.pi) - np.pi
        got = wrap_rad(x)
        assert got.min() >= -np.float32(np.pi) and got.max() < np.float32(np.pi)
        assert np.max(np.abs(np.angle(np.exp(1j * (got - want))))) < 1e-5


def _smooth_phase(n=20, seed=0, dz=0.1):
    z, y, x = np.mgrid[0:n, 0:64, 0:64]
    ph = np.mod(0.05 * x + 0.03 * y + dz * z + np.pi, 2 * np.pi) - np.pi
    air = x < 8
    return np.where(air, np.random.default_rng(seed).uniform(-np.pi, np.pi, ph.shape), ph), air


def test_ge_alternate_slice_pi_offset_is_removed_and_recorded():
    ph, air = _smooth_phase()
    shifted = ph.copy()
    shifted[1::2] += np.pi
    frames = _stack_frames("GE MEDICAL SYSTEMS", ph.shape[0])
    codec = codec_for(frames[0])[0]
    rad, rule = codec.phase_to_radians(np.rint(wrap(shifted) * 1000).astype(np.int16), frames)
    assert "pi offset on alternate slices removed" in rule
    assert np.abs(np.angle(np.exp(1j * (rad - ph))))[~air].max() < 2e-3
    # no offset, pure noise, or a fast but real through-slice change: left alone
    for data in (ph, np.random.default_rng(1).uniform(-np.pi, np.pi, ph.shape), _smooth_phase(dz=1.2)[0]):
        rad, rule = codec.phase_to_radians(np.rint(wrap(data) * 1000).astype(np.int16), frames)
        assert "pi offset" not in rule
        assert np.abs(np.angle(np.exp(1j * (rad - data)))).max() < 2e-3


def wrap(p):
    return np.mod(p + np.pi, 2 * np.pi) - np.pi


def test_ge_private_value_as_raw_bytes():
    """Implicit VR files or de-identifiers that rewrite private VRs to UN give raw bytes."""
    ds = make_ds("GE MEDICAL SYSTEMS")
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x2F, "UN", b"\x01\x00")
    f = frame_of(ds)
    assert codec_for(f)[0].component(f) == ("phase", "GE private (0043,102F)=1 (GEMS_PARM_01)")


# ---------------------------------------------------------------------------------------------
# Write layouts: what the phantom writer is told to write is what the decoder reads
# ---------------------------------------------------------------------------------------------
def _classic_header_from_layout(vendor: str, component: str, encoded) -> Dataset:
    """A classic header carrying only what the vendor's classic layout writes (no Manufacturer,
    no description, no rescale)."""
    layout = writing_codec(vendor).write_layout("classic")
    ds = make_ds(None, image_type=layout.marks[component].image_type)
    for e in layout.top_private + layout.private_elements(component, encoded.private_scale):
        ds.private_block(e.group, e.creator, create=True).add_new(e.offset, e.vr, e.value)
    return ds


def _encoded(vendor: str, component: str):
    codec = writing_codec(vendor)
    if component == "phase":
        return codec.encode_phase(np.linspace(-3.1, 3.1, 8).reshape(2, 2, 2))
    return codec.encode_magnitude(np.ones((2, 2, 2)), 100.0)


@pytest.mark.parametrize("component", ["magnitude", "phase"])
@pytest.mark.parametrize("vendor", VENDORS)
def test_classic_layout_marks_decode_to_their_component_and_vendor(vendor, component):
    """Each vendor's classic marks (ImageType, private elements) are read back by its own codec as
    the component written, and its private blocks name the vendor without a Manufacturer. Canon
    classic writes no marker and no private block (MANIFEST): unknown on both counts."""
    frame = frame_of(_classic_header_from_layout(vendor, component, _encoded(vendor, component)))
    found, source = writing_codec(vendor).component(frame)
    named, _ = codec_for(frame)
    if vendor == "Canon":
        assert (found, named.vendor) == (Component.UNKNOWN, "unknown"), source
    else:
        assert (found, named.vendor) == (component, vendor), source


def test_philips_private_scale_is_written_where_the_decoder_reads_it():
    """Philips phase without RescaleType: the private scale the layout writes decodes the stored
    values back to the radians encoded (within the 12 bit quantisation)."""
    rad = np.linspace(-3.1, 3.1, 8).reshape(2, 2, 2)
    codec = writing_codec("Philips")
    enc = codec.encode_phase(rad)
    frame = frame_of(_classic_header_from_layout("Philips", "phase", enc))
    assert private_scale(frame) == pytest.approx(enc.private_scale)
    back, rule = codec.phase_to_radians(enc.stored, [frame, frame])
    assert "private scale" in rule
    np.testing.assert_allclose(back, rad, atol=2e-3)


def test_every_vendor_writes_both_styles_and_names_itself():
    for vendor in VENDORS:
        for style in WRITE_STYLES:
            layout = writing_codec(vendor).write_layout(style)
            assert layout.style == style
            assert set(layout.marks) == {"magnitude", "phase"}
            assert normalise_manufacturer(layout.equipment.manufacturer) == vendor
            assert layout.series_description and layout.filtered_suffix.startswith(" ")


def test_write_layout_only_for_named_vendors_and_known_styles():
    with pytest.raises(ValueError, match="'Hitachi'"):
        writing_codec("Hitachi")
    with pytest.raises(ValueError, match="GE writes styles"):
        writing_codec("GE").write_layout("dicomweb")
