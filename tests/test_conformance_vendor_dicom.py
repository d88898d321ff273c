"""Conformance: every folder of ../shared/vendor_dicom read by ``inspect_paths`` and checked
against the facts in its MANIFEST.md (component, echoes and echo times, slice counts, radians
range, vendor, convention). A folder that is absent skips with the reason."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dicom_io.read import series
from dicom_io.inspect import inspect_paths

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def docs(vendor_dicom_dir):
    cache: dict = {}

    def get(folder: str) -> dict:
        path = vendor_dicom_dir / folder
        if not path.is_dir():
            pytest.skip(f"{folder} not present in {vendor_dicom_dir}")
        if folder not in cache:
            cache[folder] = inspect_paths([path])
        return cache[folder]
    return get


def _stacks(doc):
    return [(st["component"], st["echo_number"], st["echo_time_ms"], st["n_slices"])
            for s in doc["series"] for st in s["stacks"]]


def _assert_phase_range(st):
    lo, hi = st["phase_range_rad"]
    assert -math.pi <= lo < hi < math.pi
    assert hi - lo > 0.95 * 2 * math.pi, f"phase spans only {lo}..{hi}"
    assert st["phase_scaling"]


def test_siemens_e11_classic_magnitude(docs):
    doc = docs("siemens_e11_classic_magnitude")
    assert doc["errors"] == []
    (s,) = doc["series"]
    assert (s["vendor"], s["sop_class"], s["phase_convention"]) == ("Siemens", "classic", "left-handed")
    assert s["problems"] == []
    assert _stacks(doc) == [("magnitude", 1, 5.19, 36), ("magnitude", 2, 7.65, 36)]
    assert all("ImageType" in st["component_source"] for st in s["stacks"])


def test_siemens_e11_classic_phase(docs):
    doc = docs("siemens_e11_classic_phase")
    (s,) = doc["series"]
    assert (s["vendor"], s["phase_convention"], s["problems"]) == ("Siemens", "left-handed", [])
    assert _stacks(doc) == [("phase", 2, 7.65, 36)]
    st = s["stacks"][0]
    _assert_phase_range(st)
    assert "pi/4096" in st["phase_scaling"]


def test_siemens_xa30_enhanced_magnitude_echoes_from_echo_time(docs):
    doc = docs("siemens_xa30_enhanced_magnitude")
    (s,) = doc["series"]
    assert (s["vendor"], s["sop_class"], s["phase_convention"], s["problems"]) == \
        ("Siemens", "enhanced", "left-handed", [])
    assert s["n_files"] == 2 and s["n_frames"] == 66
    assert _stacks(doc) == [("magnitude", 1, 10.0, 33), ("magnitude", 2, 12.46, 33)]
    for st in s["stacks"]:
        assert "ComplexImageComponent" in st["component_source"]
        assert st["echo_number_source"].startswith("derived")  # XA writes no EchoNumbers


def test_siemens_xa30_enhanced_phase_per_frame_rescale(docs):
    doc = docs("siemens_xa30_enhanced_phase")
    (s,) = doc["series"]
    assert (s["vendor"], s["sop_class"], s["problems"]) == ("Siemens", "enhanced", [])
    assert _stacks(doc) == [("phase", 1, 12.46, 33)]
    st = s["stacks"][0]
    _assert_phase_range(st)
    assert "slope 2" in st["phase_scaling"] and "-4096" in st["phase_scaling"]


def test_philips_571_classic_fieldmap(docs):
    doc = docs("philips_571_classic_fieldmap")
    (s,) = doc["series"]
    assert (s["vendor"], s["sop_class"], s["phase_convention"], s["problems"]) == \
        ("Philips", "classic", "right-handed", [])
    assert s["n_files"] == 212
    assert _stacks(doc) == [("magnitude", 1, 2.3, 53), ("magnitude", 2, 4.6, 53),
                            ("phase", 1, 2.3, 53), ("phase", 2, 4.6, 53)]
    for st in s["stacks"]:
        assert "2005,1011" in st["component_source"]
        if st["component"] == "phase":
            _assert_phase_range(st)
            assert "mrad" in st["phase_scaling"] and "1000" in st["phase_scaling"]


def test_ge_dv27_b0map_has_no_phase(docs):
    doc = docs("ge_dv27_b0map")
    (s,) = doc["series"]
    assert (s["vendor"], s["phase_convention"], s["sop_class"]) == ("GE", "right-handed", "classic")
    assert s["n_files"] == 32
    assert {st["component"] for st in s["stacks"]} == {"magnitude"}
    assert all("0043,102F" in st["component_source"] for st in s["stacks"])


def test_canon_v61_enhanced_magnitude_only(docs):
    doc = docs("canon_v61_enhanced")
    (s,) = doc["series"]
    assert (s["vendor"], s["sop_class"], s["phase_convention"]) == ("Canon", "enhanced", "left-handed")
    assert s["n_frames"] == 520
    assert {st["component"] for st in s["stacks"]} == {"magnitude"}
    # a diffusion series: 13 frames at each of 40 positions cannot become one volume, and says so
    (st,) = s["stacks"]
    assert st["volume"] is False and st["n_positions"] == 40
    assert any("repeated slice positions" in p for p in s["problems"])


def test_volumes_have_consistent_geometry(vendor_dicom_dir):
    folder = vendor_dicom_dir / "siemens_xa30_enhanced_phase"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    (s,) = series.scan([folder]).series
    v = series.load_volume(s.stacks[0])
    assert v.shape == (33, 64, 64)
    # every frame's own ImagePositionPatient is where the affine puts its (k, 0, 0) voxel
    for k, f in enumerate(v.frames):
        assert np.allclose(v.index_to_lps_mm([[k, 0, 0]])[0], f.position_lps_mm, atol=1e-3)
    assert np.allclose(v.voxel_size_mm, (3.4, 3.375, 3.375), atol=1e-3)
