"""The QSM series (dicom_io.results.qsm): valid DICOM for dciodvfy, pixel-aligned with the
magnitude, chi read back in ppm through Rescale Slope/Intercept, described and marked not for
primary diagnosis; written only when the analysis made a QSM map."""
from __future__ import annotations

import subprocess
from dataclasses import replace

import numpy as np
import pydicom
import pytest

from dicom_io.results import write_results
from dicom_io.results.qsm import PPM_PER_UNIT, chi_ppm_of

from conftest import require_peer
from results_fixtures import CLASSIC_SPOTS, classic_pair, enhanced_pair, make_analysis
from test_results_validators import DCIODVFY, dciodvfy

#: dciodvfy warnings allowed on the QSM slices (dicom_io/results/qsm.py says why): the classic MR
#: IOD has no Modality LUT module, and ppm is not a defined Rescale Type; nothing else.
QSM_ALLOWED = ("RescaleSlope(0028,1053)", "RescaleIntercept(0028,1052)", "RescaleType(0028,1054)")


def _problems(path):
    errors, warnings = dciodvfy(path)
    return errors + [w for w in warnings if not any(a in w for a in QSM_ALLOWED)]


def _chi(shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    chi = rng.normal(0, 0.05, shape).astype(np.float32)
    chi[:, 10:14, 10:14] = 0.5
    chi[:, 30:33, 40:43] = -0.8
    return chi


def _write(tmp_path, mag, ph, spots):
    a = make_analysis(mag, ph, spots)
    chi = _chi(mag.shape)
    a = replace(a, qsm_chi_ppm=chi, qsm_description="QSM closed-form L2 (lambda 0.005 mm^2); chi relative to the mean over the brain mask",
                qsm_echo_time_ms=20.0)
    written = write_results(a, mag, ph, tmp_path / "out", include=("sr", "seg", "summary", "kos", "qsm"))
    return chi, sorted(p for p in written.paths if p.parent.name == "qsm")


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qsm_series")
    mag, ph = classic_pair(tmp)
    chi, paths = _write(tmp, mag, ph, CLASSIC_SPOTS)
    return mag, ph, chi, paths


def test_one_instance_per_slice_with_chi_in_ppm(classic):
    mag, ph, chi, paths = classic
    assert len(paths) == mag.shape[0]
    got = np.zeros(chi.shape, np.float32)
    series = set()
    for p in paths:
        ds = pydicom.dcmread(p)
        series.add(ds.SeriesInstanceUID)
        assert ds.SeriesDescription == "borderphase QSM (ppb)"
        assert ds.Modality == "MR" and list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "NOT FOR PRIMARY DIAGNOSIS" in ds.ImageComments and "ppm" in ds.ImageComments
        assert "L2" in ds.DerivationDescription and "ppm" in ds.DerivationDescription
        assert float(ds.WindowWidth) > 0 and ds.StudyInstanceUID == mag.study_instance_uid
        assert ds.FrameOfReferenceUID == mag.frames[0].frame_of_reference_uid
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in {f.sop_instance_uid for f in ph.frames}
        k = int(ds.InstanceNumber) - 1
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], mag.frames[k].position_lps_mm, atol=1e-3)
        got[k] = chi_ppm_of(ds)
    assert len(series) == 1
    np.testing.assert_allclose(got, chi, atol=PPM_PER_UNIT)


def test_dciodvfy_passes_the_qsm_series(classic, tmp_path):
    require_peer(DCIODVFY, "dicom3tools")
    _, _, _, paths = classic
    problems = []
    for p in (paths[0], paths[len(paths) // 2]):
        problems += _problems(p)
    assert not problems, "\n".join(problems)
    # and it can fail: a QSM slice without its pixel geometry is an error
    ds = pydicom.dcmread(paths[0])
    del ds.PixelSpacing
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad, enforce_file_format=True)
    assert dciodvfy(bad)[0]


def test_enhanced_source_gets_the_qsm_series(tmp_path):
    pair = enhanced_pair()
    if pair is None:
        pytest.skip("../shared/vendor_dicom Siemens XA30 enhanced files absent")
    mag, ph = pair
    chi, paths = _write(tmp_path, mag, ph, [])
    assert len(paths) == mag.shape[0]
    require_peer(DCIODVFY, "dicom3tools")
    problems = _problems(paths[0])
    assert not problems, "\n".join(problems)


def test_no_qsm_map_no_qsm_series(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(6, 48, 48), spots=[])
    written = write_results(make_analysis(mag, ph, []), mag, ph, tmp_path / "out")
    assert not [p for p in written.paths if p.parent.name == "qsm"]


def test_dcmtk_renders_it_with_its_window_preset(classic, tmp_path):
    """A viewer built on dcmtk (dcm2pnm, its first window preset): 0 ppm mid grey, the +0.5 ppm
    block white, the -0.8 ppm block black (with ppm as the rescaled unit and a 0.4 ppm
    LINEAR_EXACT window it rendered every pixel the same grey)."""
    from PIL import Image
    dcm2pnm = require_peer("/usr/bin/dcm2pnm", "dcmtk")
    _, _, chi, paths = classic
    out = tmp_path / "slice.png"
    run = subprocess.run([str(dcm2pnm), "+Wi", "1", "+on", str(paths[0]), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    grey = np.asarray(Image.open(out), dtype=float)
    assert grey[10:14, 10:14].mean() == 255 and grey[30:33, 40:43].mean() == 0
    assert abs(np.median(grey) - 127.5) < 20          # the noise (s.d. 0.05 ppm) about mid grey


def test_slices_built_from_one_series_template_keep_their_own_elements(tmp_path):
    """The series' shared elements are built once (dicom_io.results.qsm._series_common); every
    slice held at once still has its own instance number, UID, position, source image and
    comments (only the unreliable end slices marked), and the shared elements are equal."""
    from dicom_io.results.context import build_context
    from dicom_io.results.qsm import PER_SLICE, UNRELIABLE_SLICE, build_qsm
    mag, ph = classic_pair(tmp_path)
    last = mag.shape[0] - 1
    a = replace(make_analysis(mag, ph, CLASSIC_SPOTS), qsm_chi_ppm=_chi(mag.shape), qsm_description="QSM L2 (ppm)",
                qsm_echo_time_ms=20.0, qsm_unreliable_slices=(0, last))
    slices = list(build_qsm(build_context(a, mag, ph, algorithm_version="test")))
    assert [int(ds.InstanceNumber) for ds in slices] == list(range(1, mag.shape[0] + 1))
    assert len({ds.SOPInstanceUID for ds in slices}) == len(slices)
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in slices)
    for k, ds in enumerate(slices):
        assert ds.ImageComments.startswith(UNRELIABLE_SLICE) == (k in (0, last))
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], mag.frames[k].position_lps_mm, atol=1e-3)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ph.frames[k].sop_instance_uid
        if k not in (0, last):   # (main burns a label into the unreliable slices' pixels)
            np.testing.assert_allclose(chi_ppm_of(ds), a.qsm_chi_ppm[k], atol=PPM_PER_UNIT)
    per_slice = {pydicom.datadict.tag_for_keyword(kw) for kw in PER_SLICE}
    shared = set(slices[0].keys()) - per_slice
    assert {"PatientID", "SeriesInstanceUID", "RescaleSlope", "DerivationDescription"} <= {
        pydicom.datadict.keyword_for_tag(t) for t in shared}
    for ds in slices[1:]:
        assert set(ds.keys()) - per_slice == shared
        assert all(ds[t] == slices[0][t] for t in shared)
