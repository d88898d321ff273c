"""Round trip: synthetic radians/magnitude -> write_acquisition (each vendor x classic/enhanced x
each anonymized variant) -> dicom_io.read.series.scan/load_volume -> the same phase (within
quantisation), component, vendor and convention, or 'unknown' with the recorded fallback where
the anonymization removed the deciding tag. Also: dciodvfy (dicom3tools) finds no errors in a
classic and an enhanced file of every vendor.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import dicom_io.phantom_writer
from conftest import require_peer
from dicom_io.read import series
from dicom_io.phantom_writer import StackToWrite, StudyInfo, WrittenAcquisition, write_acquisition
from dicom_io.vocabulary import Handedness

VENDORS = ("GE", "Philips", "Siemens", "Canon")
STYLES = ("classic", "enhanced")
VARIANTS = ("none", "no_private", "no_description", "no_manufacturer")
PHASE_TOL_RAD = 2e-3
CONVENTION = {"GE": Handedness.RIGHT, "Philips": Handedness.RIGHT, "Siemens": Handedness.LEFT, "Canon": Handedness.LEFT}
MANUFACTURER = {("GE", "classic"): "GE MEDICAL SYSTEMS", ("GE", "enhanced"): "GE MEDICAL SYSTEMS",
                ("Philips", "classic"): "Philips", ("Philips", "enhanced"): "Philips Healthcare",
                ("Siemens", "classic"): "SIEMENS", ("Siemens", "enhanced"): "Siemens Healthineers",
                ("Canon", "classic"): "CANON_MEC", ("Canon", "enhanced"): "CANON_MEC"}


def head_phantom(n=5, rows=40, cols=44, seed=0):
    """A head-like magnitude (dark air, tissue, a few bright voxels) and wrapped raw phase
    (air: uniform random phase; tissue: a background field wrapping a few times)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:n, 0:rows, 0:cols].astype(float)
    inside = ((y - rows / 2) / (rows * 0.4)) ** 2 + ((x - cols / 2) / (cols * 0.4)) ** 2 < 1
    mag = np.where(inside, 0.5 + 0.03 * rng.standard_normal(inside.shape), 0.0)
    mag += np.abs(0.02 * rng.standard_normal(inside.shape))
    mag[:, rows // 2, cols // 2: cols // 2 + 3] = 1.0
    field = 0.45 * x + 0.3 * y + 0.8 * z
    phase = np.where(inside, field, rng.uniform(-np.pi, np.pi, inside.shape))
    return np.clip(mag, 0, None), phase


def affine(oblique=False):
    a = np.eye(4)
    a[:3, 0] = [0, 0, 2.5]          # slice step (mm): +z (superior)
    a[:3, 1] = [0, 0.45, 0]         # row step: +y (posterior)
    a[:3, 2] = [0.45, 0, 0]         # column step: +x (left)
    a[:3, 3] = [-9.9, -8.8, -5.0]
    if oblique:                      # rotate 20 degrees about x
        c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
        r = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        a[:3, :3] = r @ a[:3, :3]
    return a


def stacks(mag, phase):
    return [StackToWrite("magnitude", 1, 15.0, mag), StackToWrite("phase", 1, 15.0, phase),
            StackToWrite("magnitude", 2, 25.0, 0.7 * mag), StackToWrite("phase", 2, 25.0, phase * 25 / 15)]


def wrapped(p):
    return np.mod(p + np.pi, 2 * np.pi) - np.pi


def expected_component_source(vendor, style, variant, component):
    if style == "enhanced":
        if vendor == "Philips" and variant != "no_private":
            return f"Philips per-frame private (2005,1011)={'M' if component == 'magnitude' else 'P'}"
        return f"ComplexImageComponent={component.upper()}"
    if vendor == "GE":
        if variant == "no_private":
            return "pixel statistics"
        return f"GE private (0043,102F)={0 if component == 'magnitude' else 1} (GEMS_PARM_01)"
    if vendor == "Philips":
        if variant == "no_private":
            return f"ImageType[3]={'M' if component == 'magnitude' else 'P'}"
        return f"Philips private (2005,1011)={'M' if component == 'magnitude' else 'P'}"
    if vendor == "Siemens":
        return f"ImageType[2]={'M' if component == 'magnitude' else 'P'}"
    # Canon classic: no marker; the series description words, else pixel statistics
    return "pixel statistics" if variant == "no_description" else f"SeriesDescription word ({component})"


@pytest.fixture(scope="module")
def phantom():
    return head_phantom()


def write(tmp_path, vendor, style, variant, mag, phase, aff=None) -> tuple[WrittenAcquisition, StudyInfo]:
    study = StudyInfo(generate_uid(), generate_uid(), patient_name="Round^Trip", patient_id="RT1",
                      accession_number="ACC1")
    w = write_acquisition(tmp_path / f"{vendor}_{style}_{variant}", vendor=vendor, style=style,
                          stacks=stacks(mag, phase), affine_lps=affine() if aff is None else aff, study=study,
                          series_description="SWI_3D", series_number=7, anonymize=variant)
    return w, study


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("vendor", VENDORS)
def test_round_trip(tmp_path, phantom, vendor, style, variant):
    mag, phase = phantom
    w, study = write(tmp_path, vendor, style, variant, mag, phase)
    scan = series.scan([tmp_path])
    assert not scan.problems
    found = {s.series_instance_uid: s for s in scan.series}
    assert set(found) == set(w.series_uids.values())
    want = {(c, e): s for s in stacks(mag, phase) for c, e in [(s.component, s.echo_number)]}
    seen = set()
    for s in scan.series:
        assert s.study_instance_uid == study.study_instance_uid
        assert s.sop_class == style
        assert s.vendor == vendor
        if variant == "no_manufacturer":
            assert s.vendor_source.startswith("Manufacturer missing; ")
        else:
            assert s.vendor_source == f"Manufacturer='{MANUFACTURER[(vendor, style)]}'"
        assert s.phase_convention == CONVENTION[vendor]
        assert s.convention_source.startswith(f"default table: {vendor}")
        assert not s.problems, s.problems
        for st in s.stacks:
            key = (st.component, st.echo_number)
            assert key in want, (key, st.component_source)
            assert w.series_uids[st.component] == s.series_instance_uid
            assert expected_component_source(vendor, style, variant, st.component) in st.component_source
            src = want[key]
            assert st.echo_time_ms == pytest.approx(src.echo_time_ms)
            vol = series.load_volume(st)
            np.testing.assert_allclose(vol.affine_lps, affine(), atol=1e-4)
            if st.component == "phase":
                err = np.abs(np.angle(np.exp(1j * (vol.data.astype(float) - wrapped(src.data)))))
                assert err.max() < PHASE_TOL_RAD, (err.max(), vol.phase_scaling)
                assert vol.data.min() >= -np.pi and vol.data.max() < np.pi
                assert vol.phase_scaling
            else:
                scale = 1.0 if vendor == "Philips" else w.magnitude_counts_per_unit
                np.testing.assert_allclose(vol.data / scale, src.data, atol=0.51 / w.magnitude_counts_per_unit + 1e-6)
            seen.add(key)
    assert seen == set(want)


def test_layouts_and_tags(tmp_path, phantom):
    mag, phase = phantom
    # Vendors writing one series vs separate magnitude / phase series
    for vendor, one_series in (("GE", True), ("Philips", True), ("Siemens", False), ("Canon", False)):
        w, _ = write(tmp_path, vendor, "classic", "none", mag, phase)
        assert (w.series_uids["magnitude"] == w.series_uids["phase"]) == one_series
        assert len(w.paths) == 4 * mag.shape[0]
    # Enhanced file counts: Philips 1 file, Siemens one per echo and component, Canon one per component
    for vendor, n_files in (("Philips", 1), ("Siemens", 4), ("Canon", 2), ("GE", 1)):
        w, _ = write(tmp_path / "enh", vendor, "enhanced", "none", mag, phase)
        assert len(w.paths) == n_files, vendor
    # Siemens XA: no EchoNumbers anywhere, per-frame EffectiveEchoTime and Pixel Value Transformation
    w, _ = write(tmp_path / "xa", "Siemens", "enhanced", "none", mag, phase)
    ds = pydicom.dcmread(w.paths[-1])
    assert "EchoNumbers" not in ds
    pf = ds.PerFrameFunctionalGroupsSequence[0]
    assert "PixelValueTransformationSequence" in pf and pf.MRImageFrameTypeSequence[0].ComplexImageComponent
    assert float(pf.PixelValueTransformationSequence[0].RescaleSlope) == 2.0
    # Canon enhanced: ComplexImageComponent only in the shared functional groups
    w, _ = write(tmp_path / "canon", "Canon", "enhanced", "none", mag, phase)
    ds = pydicom.dcmread(w.paths[0])
    assert "MRImageFrameTypeSequence" in ds.SharedFunctionalGroupsSequence[0]
    assert "MRImageFrameTypeSequence" not in ds.PerFrameFunctionalGroupsSequence[0]
    # Philips classic phase: the MANIFEST's rescale
    w, study = write(tmp_path / "ph", "Philips", "classic", "none", mag, phase)
    ph = [pydicom.dcmread(p) for p in w.paths if pydicom.dcmread(p, stop_before_pixels=True).ImageType[3] == "P"][0]
    assert ph.RescaleType == "mrad" and float(ph.RescaleIntercept) == -3142
    assert float(ph.RescaleSlope) == pytest.approx(1.53455433455433)
    assert ph.PatientName == "Round^Trip" and ph.FrameOfReferenceUID == study.frame_of_reference_uid
    # anonymize variants remove what they say
    w, _ = write(tmp_path / "np", "GE", "classic", "no_private", mag, phase)
    ds = pydicom.dcmread(w.paths[0])
    assert not any(e.tag.is_private for e in ds)
    w, _ = write(tmp_path / "nd", "GE", "classic", "no_description", mag, phase)
    ds = pydicom.dcmread(w.paths[0])
    assert "SeriesDescription" not in ds and "ProtocolName" not in ds


def test_oblique_geometry_round_trips(tmp_path, phantom):
    mag, phase = phantom
    aff = affine(oblique=True)
    w, _ = write(tmp_path, "Siemens", "classic", "none", mag, phase, aff)
    scan = series.scan([tmp_path])
    vol = series.load_volume(next(st for s in scan.series for st in s.stacks if st.component == "phase"))
    np.testing.assert_allclose(vol.affine_lps, aff, atol=1e-4)


def test_nothing_names_the_vendor_is_unknown_not_a_guess(tmp_path, phantom):
    """Manufacturer, model, software, private blocks all gone: vendor and convention 'unknown',
    the phase still decodes by range inference (Canon's 0..4095) and says so."""
    mag, phase = phantom
    w, _ = write(tmp_path, "Canon", "classic", "no_manufacturer", mag, phase)
    for p in w.paths:
        ds = pydicom.dcmread(p)
        for kw in ("ManufacturerModelName", "SoftwareVersions"):
            delattr(ds, kw)
        ds.save_as(p)
    scan = series.scan([tmp_path])
    for s in scan.series:
        assert s.vendor == "unknown" and s.phase_convention == "unknown"
        assert "no default convention" in s.convention_source
        for st in s.stacks:
            if st.component == "phase":
                vol = series.load_volume(st)
                assert "0..4095 offset inferred from range" in vol.phase_scaling
                err = np.abs(np.angle(np.exp(1j * (vol.data - wrapped(stacks(mag, phase)[st.echo_number * 2 - 1].data)))))
                assert err.max() < PHASE_TOL_RAD


def test_bad_input_is_a_value_error(tmp_path, phantom):
    mag, phase = phantom
    study = StudyInfo(generate_uid(), generate_uid())
    kw = dict(affine_lps=affine(), study=study, series_description="x", series_number=1)
    with pytest.raises(ValueError, match="vendor"):
        write_acquisition(tmp_path, vendor="Hitachi", style="classic", stacks=stacks(mag, phase), **kw)
    with pytest.raises(ValueError, match="shape"):
        write_acquisition(tmp_path, vendor="GE", style="classic",
                          stacks=[StackToWrite("magnitude", 1, 10, mag), StackToWrite("phase", 1, 10, phase[:2])], **kw)
    with pytest.raises(ValueError, match=">= 0"):
        write_acquisition(tmp_path, vendor="GE", style="classic", stacks=[StackToWrite("magnitude", 1, 10, -mag)], **kw)
    bad = affine()
    bad[:3, 0] = [1.0, 0, 2.5]
    with pytest.raises(ValueError, match="slice axis"):
        write_acquisition(tmp_path, vendor="GE", style="classic", stacks=stacks(mag, phase),
                          **{**kw, "affine_lps": bad})


def test_phantom_writer_never_branches_on_a_vendor_name():
    """Vendor knowledge lives in the codecs' write layouts (issue 9): outside docstrings, no string
    in the writer's code is a vendor name and nothing is compared with ``vendor``."""
    import ast

    root = Path(dicom_io.phantom_writer.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        names = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docstrings
                 and isinstance(n.value, str) and n.value in VENDORS]
        compared = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)
                    and any(isinstance(x, ast.Name) and x.id == "vendor" for x in (n.left, *n.comparators))]
        assert not names and not compared, (path.name, names, compared)


@pytest.mark.peers
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("vendor", VENDORS)
def test_dciodvfy_finds_no_errors(tmp_path, phantom, vendor, style):
    mag, phase = phantom
    w, _ = write(tmp_path, vendor, style, "none", mag, phase)
    exe = require_peer("/usr/bin/dciodvfy", "dicom3tools")
    for p in (w.paths[0], w.paths[-1]):
        out = subprocess.run([exe, str(p)], capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
        errors = [line for line in text.splitlines() if line.startswith("Error")]
        assert not errors, (p.name, errors)
        assert ("EnhancedMRImage" if style == "enhanced" else "MRImage") in text


@pytest.mark.parametrize("style", STYLES)
def test_uid_factory_makes_output_reproducible(tmp_path, phantom, style):
    import itertools

    mag, phase = phantom
    outs = []
    for run in ("a", "b"):
        counter = itertools.count(1)
        study = StudyInfo("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2")
        w = write_acquisition(tmp_path / run, vendor="Philips", style=style, stacks=stacks(mag, phase),
                              affine_lps=affine(), study=study, series_description="SWI", series_number=3,
                              uid_factory=lambda: f"1.2.826.0.1.3680043.8.498.9.{next(counter)}")
        outs.append([p.read_bytes() for p in w.paths])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("vendor", VENDORS)
def test_vendor_stripped_export_reads_as_unknown_vendor_with_phase_intact(tmp_path, phantom, vendor, style):
    """An anonymising export (no private elements, nothing naming the equipment): the reader must
    not guess the vendor (so no header convention), yet still read magnitude and phase in radians,
    which is what the data's own convention check then decides on (issue 12)."""
    mag, phase = phantom
    w, _ = write(tmp_path, vendor, style, "vendor_stripped", mag, phase)
    scan = series.scan([tmp_path])
    assert {s.series_instance_uid for s in scan.series} == set(w.series_uids.values())
    want = {(s.component, s.echo_number): s for s in stacks(mag, phase)}
    for s in scan.series:
        assert s.vendor == "unknown", (s.vendor, s.vendor_source)
        assert s.phase_convention == "unknown"
        for st in s.stacks:
            assert (st.component, st.echo_number) in want, (st.component, st.component_source)
            if st.component == "phase":
                vol = series.load_volume(st)
                src = want[(st.component, st.echo_number)]
                err = np.abs(np.angle(np.exp(1j * (vol.data.astype(float) - wrapped(src.data)))))
                assert err.max() < PHASE_TOL_RAD, (err.max(), vol.phase_scaling)
