"""Lesions injected into the REAL scanner series of ../shared/vendor_dicom (plugin.inject),
and the field-map series recognised by the reader (issue 10).

Checks: the copies keep the original encoding (transfer syntax, rescale, private elements, every
attribute but Pixel Data and the Study/Series/SOP Instance UIDs; pixel sizes), carry new UIDs, change
pixels only near the lesions, read back to the intended radians, show the lesion's phase with the
vendor's sign (paramagnetic bright on Siemens, dark on Philips; a field-map phase difference too),
and dciodvfy finds no error the original did not have. Skips with the reason when the folder is absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.inspect import inspect_paths
from dicom_io.phase import wrap_rad
from dicom_io.read import series as dseries
from plugin import inject as I
from plugin.phantom import render as P
from plugin.phantom.cohort import random_study

from test_results_validators import DCIODVFY, dciodvfy
from conftest import require_peer

pytestmark = pytest.mark.conformance

CHANGED_UIDS = {"SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"}
SIGN = {"left-handed": 1.0, "right-handed": -1.0}     # phase sign of a paramagnetic source at its poles


def _folders(vendor_dicom_dir: Path, name: str) -> list[Path]:
    paths = [vendor_dicom_dir / f for f in I.KNOWN_ACQUISITIONS[name]]
    for p in paths:
        if not p.is_dir():
            pytest.skip(f"{p.name} not present in {vendor_dicom_dir}")
    return paths


@pytest.fixture(scope="module", params=list(I.KNOWN_ACQUISITIONS))
def injected(request, vendor_dicom_dir, tmp_path_factory):
    """(name, source folders, output folder, truth document): one injected study per real acquisition."""
    name = request.param
    paths = _folders(vendor_dicom_dir, name)
    out = tmp_path_factory.mktemp(f"inject_{name}")
    doc = I.inject_into(paths, out, seed=7, n_studies=1)
    return name, paths, out, doc


def _pairs_of_files(paths, out):
    for src in paths:
        for f in sorted(src.iterdir()):
            if f.is_file():
                copy = out / "study_1" / src.name / f.name
                yield f, copy


def test_copies_keep_the_original_encoding_with_new_uids(injected):
    name, paths, out, doc = injected
    n, changed = 0, 0
    new_uids = {"study": set(), "series": set()}
    for orig_path, copy_path in _pairs_of_files(paths, out):
        assert copy_path.is_file(), f"{name}: no copy of {orig_path.name}"
        a, b = pydicom.dcmread(orig_path), pydicom.dcmread(copy_path)
        n += 1
        assert b.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID
        assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
        for kw in CHANGED_UIDS:
            assert getattr(b, kw) != getattr(a, kw), f"{copy_path}: {kw} not renewed"
        new_uids["study"].add(b.StudyInstanceUID)
        new_uids["series"].add(b.SeriesInstanceUID)
        # every other attribute (public, private, sequences, rescale) unchanged
        for el in a:
            if el.keyword in CHANGED_UIDS or el.tag == 0x7FE00010:
                continue
            assert el.tag in b, f"{copy_path}: {el.tag} {el.keyword} lost"
            assert b[el.tag].value == el.value, f"{copy_path}: {el.tag} {el.keyword} changed"
        assert {el.tag for el in b} == {el.tag for el in a}, f"{copy_path}: elements added"
        pa, pb = a.pixel_array, b.pixel_array
        assert (pa.shape, pa.dtype) == (pb.shape, pb.dtype)
        assert len(b.PixelData) == len(a.PixelData)
        diff = pa.astype(np.int64) != pb.astype(np.int64)
        changed += bool(diff.any())
        assert diff.mean() < 0.2, f"{copy_path}: {diff.mean():.0%} of pixels changed: lesions touch only a few"
    assert n and changed, f"{name}: no file changed"
    assert len(new_uids["study"]) == 1 and doc["studies"][0]["study_instance_uid"] in new_uids["study"]
    assert new_uids["series"] == set(doc["studies"][0]["series_instance_uids"].values())


def test_copies_read_back_as_the_originals_do(injected):
    name, paths, out, doc = injected
    a = inspect_paths(paths)
    b = inspect_paths([out / "study_1"])
    assert b["errors"] == []
    facts = lambda d: sorted((st["component"], st["echo_number"], st["echo_time_ms"], st["n_slices"],  # noqa: E731
                              st.get("phase_scaling"), st.get("kind_label"))
                             for s in d["series"] for st in s["stacks"])
    assert facts(b) == facts(a)
    assert [s["phase_convention"] for s in b["series"]] == [s["phase_convention"] for s in a["series"]]


def _phase_pair(paths, out):
    """(original phase Volume, injected phase Volume) of the analysed phase stack."""
    acq_a = I.open_acquisition(paths)
    acq_b = I.open_acquisition([out / "study_1"])
    return dseries.load_volume(acq_a.pair.phase), dseries.load_volume(acq_b.pair.phase), acq_b


def test_lesion_phase_has_the_vendor_sign(injected):
    """Along B0 beyond the sphere (inside the 54.7 degree cone) the added phase has the sign of
    chi times the vendor's handedness sign; in-plane around it the opposite sign."""
    name, paths, out, doc = injected
    study = doc["studies"][0]
    va, vb, acq = _phase_pair(paths, out)
    added = wrap_rad(vb.data - va.data)
    quantum = 2 * np.pi / 4096
    strongest = {}
    for L in study["lesions"]:
        strength = abs(L["chi_ppm"]) * L["diameter_mm"] ** 3
        if strength > strongest.get(L["class"], (0, None))[0]:
            strongest[L["class"]] = (strength, L)
    assert set(strongest) == {"microbleed", "calcification"}
    for cls, (_, L) in strongest.items():
        s, r, c = np.round(vb.lps_mm_to_index(np.array(L["center_lps_mm"]))[0]).astype(int)
        ds = vb.voxel_size_mm[0]
        k = int(np.ceil(L["diameter_mm"] / 2 / ds)) + 1
        poles = np.concatenate([added[max(0, s - k - 1): max(0, s - k + 1), r, c], added[s + k: s + k + 2, r, c]])
        ring_r = int(np.ceil(L["diameter_mm"] / 2 / vb.voxel_size_mm[1])) + 1
        ring = np.array([added[s, r + ring_r, c], added[s, r - ring_r, c], added[s, r, c + ring_r], added[s, r, c - ring_r]])
        expected = SIGN[study["phase_convention"]] * np.sign(L["chi_ppm"])
        assert abs(poles.sum()) > 3 * quantum, f"{name} {cls}: pole phase {poles} too small to judge"
        assert np.sign(poles.sum()) == expected, f"{name} {cls} ({study['phase_convention']}): poles {poles}"
        assert np.sign(ring.sum()) == -expected, f"{name} {cls}: in-plane ring {ring}"


def test_truth_has_the_phantom_truth_fields(injected):
    name, paths, out, doc = injected
    on_disk = json.loads((out / I.TRUTH_NAME).read_text())
    assert on_disk["schema"] == P.TRUTH_SCHEMA and len(on_disk["studies"]) == 1
    plan = random_study(0, n_microbleeds=1, n_calcifications=1, size="small")
    _, phantom_truth = P.make_study(plan.lesions, grid=plan.grid, head=plan.head, seed=0)
    study = on_disk["studies"][0]
    assert set(phantom_truth) - set(study) == set()
    lesion_keys = set(phantom_truth["lesions"][0])
    visible = [L for L in study["lesions"] if L["n_slices"] > 0]
    assert visible, f"{name}: no injected lesion visible on the magnitude"
    assert lesion_keys - set(visible[0]) == set()
    assert study["b0_t"] == 3.0


def test_dciodvfy_finds_no_new_error(injected):
    require_peer(DCIODVFY, "dicom3tools")
    name, paths, out, doc = injected
    checked = 0
    for src in paths:
        orig = sorted(f for f in src.iterdir() if f.is_file())[0]
        copy = out / "study_1" / src.name / orig.name
        new_errors = set(dciodvfy(copy)[0]) - set(dciodvfy(orig)[0])
        assert not new_errors, f"{copy}: {sorted(new_errors)}"
        checked += 1
    assert checked


# ------------------------------------------------------------------------------------------------
# Field-map series
# ------------------------------------------------------------------------------------------------
def _only_stack(vendor_dicom_dir, folder, component):
    path = vendor_dicom_dir / folder
    if not path.is_dir():
        pytest.skip(f"{folder} not present in {vendor_dicom_dir}")
    doc = inspect_paths([path])
    return [st for s in doc["series"] for st in s["stacks"] if st["component"] == component]


@pytest.mark.parametrize("folder", ["siemens_e11_classic_phase", "siemens_xa30_enhanced_phase"])
def test_siemens_field_map_phase_is_a_phase_difference(vendor_dicom_dir, folder):
    (st,) = _only_stack(vendor_dicom_dir, folder, "phase")
    assert st["kind"] == "phase difference"
    assert st["effective_echo_time_ms"] == pytest.approx(2.46, abs=1e-6)
    assert st["kind_label"] == "phase difference (dTE 2.46 ms)"
    assert "alTE" in st["kind_source"]


def test_ge_b0_map_is_a_field_map_in_hz_and_skipped_with_that_reason(vendor_dicom_dir, tmp_path):
    stacks = _only_stack(vendor_dicom_dir, "ge_dv27_b0map", "magnitude")
    assert stacks and all(st["kind"] == "field map (Hz)" for st in stacks)
    from plugin.pipeline import analyze_paths
    doc = analyze_paths([vendor_dicom_dir / "ge_dv27_b0map"], tmp_path, write_dicom=False)
    assert doc["analyses"] == []
    assert any("field map in Hz" in s["reason"] for s in doc["skipped"])
    with pytest.raises(I.InjectError, match="field map in Hz"):
        I.open_acquisition([vendor_dicom_dir / "ge_dv27_b0map"])


def test_philips_field_map_phase_is_an_echo_phase(vendor_dicom_dir):
    stacks = _only_stack(vendor_dicom_dir, "philips_571_classic_fieldmap", "phase")
    assert [(st["kind"], st["effective_echo_time_ms"]) for st in stacks] == [("echo phase", 2.3), ("echo phase", 4.6)]


def test_phase_difference_is_read_at_dte_as_raw_phase(vendor_dicom_dir, tmp_path):
    paths = _folders(vendor_dicom_dir, "siemens_e11")
    from plugin.pipeline import analyze_paths
    doc = analyze_paths(paths, tmp_path, write_dicom=False)
    (a,) = doc["analyses"]
    note = a["notes"][0]
    assert "phase difference" in note and "dTE 2.46 ms" in note
    # removed as raw phase is: the variable-radius SMV (its kernel sized to the voxels and the edge)
    assert any(n.startswith("background:") and "Laplacian unwrapping" in n and "variable-radius SMV" in n
               for n in a["notes"])


def test_lesion_te_makes_the_analysed_magnitude_as_at_that_te(vendor_dicom_dir, tmp_path):
    """``lesion_echo_time_ms=25`` on a Siemens phase difference (dTE 2.46 ms): the phase is scaled
    by 25 / 2.46, the analysed magnitude (TE 7.65 ms) by 25 / 7.65, not by the phase's factor
    (which put it at 78 ms); the truth gives each lesion's darkest relative magnitude."""
    paths = _folders(vendor_dicom_dir, "siemens_e11")
    study = I.inject_into(paths, tmp_path, seed=3, n_studies=1, n_microbleeds=1, n_calcifications=1,
                          lesion_echo_time_ms=25.0)["studies"][0]
    assert study["lesion_echo_time_scale"] == pytest.approx(25.0 / 2.46, rel=1e-3)
    assert study["lesion_magnitude_echo_time_scale"] == pytest.approx(25.0 / 7.65, rel=1e-3)
    assert all(0.0 <= L["darkest_relative_magnitude"] <= 1.0 for L in study["lesions"])
    own = I.inject_into(paths, tmp_path / "own", seed=3, n_studies=1, n_microbleeds=1, n_calcifications=1)["studies"][0]
    assert own["lesion_magnitude_echo_time_scale"] is None
    # the same lesions are darker at TE 25 ms than at the series' own 7.65 ms
    for a, b in zip(own["lesions"], study["lesions"]):
        assert b["darkest_relative_magnitude"] < a["darkest_relative_magnitude"]


def test_lesion_te_on_a_phase_difference_is_the_phase_of_one_echo_at_that_te(vendor_dicom_dir):
    """``lesion_echo_time_ms=25`` on a Siemens phase difference (echoes 5.19 / 7.65 ms, dTE 2.46 ms):
    the lesion's phase is F(25 ms), the difference of echoes at 0 and 25 ms, with a 25 ms echo's
    dephasing. Scaling both echoes by 25 / 2.46 (to 53 and 78 ms) dephased the voxels beside a
    6 mm calcification of -0.4 ppm so far that at most 0.4 rad was left where |F| > 0.5; a 25 ms
    echo keeps more than 1 rad there (3 T: about 20 rad per ppm; 0.27 ppm at the pole)."""
    paths = _folders(vendor_dicom_dir, "siemens_e11")
    acq = I.open_acquisition(paths)
    st = acq.pair.phase
    centre = acq.affine_lps[:3, :3] @ (np.array(acq.shape) / 2.0) + acq.affine_lps[:3, 3]
    lesion = P.SphereLesion(1, tuple(float(v) for v in centre), 6.0, -0.4, "calcification")
    signal, _ = I.lesion_signal(acq, [lesion], 25.0 / float(st.effective_echo_time_ms),
                                25.0 / float(acq.pair.magnitude.echo_time_ms))
    f = signal.phase_factor(st)
    np.testing.assert_allclose(f, signal.factor(25.0, 1.0))
    readable = np.abs(f) > 0.5
    assert float(np.abs(np.angle(f[readable])).max()) > 1.0
    # at the series' own TEs the difference is F(TE2) conj F(TE1), as the scanner's S2 conj(S1)
    own, _ = I.lesion_signal(acq, [lesion])
    te2, dte = float(st.echo_time_ms), float(st.effective_echo_time_ms)
    np.testing.assert_allclose(own.phase_factor(st), own.factor(te2) * np.conj(own.factor(te2 - dte)), atol=1e-6)


def test_a_diameter_range_sets_every_size_and_keeps_the_papers_susceptibilities():
    base = I.draw_specs(np.random.default_rng(3), 4, 4)
    sized = I.draw_specs(np.random.default_rng(3), 4, 4, diameter_range_mm=(5.0, 7.0))
    assert [(c, chi) for c, _, chi in sized] == [(c, chi) for c, _, chi in base]
    assert all(5.0 <= d <= 7.0 for _, d, _ in sized)
    assert len({d for _, d, _ in sized}) > 1
    with pytest.raises(I.InjectError, match="diameter range 7..5 mm"):
        I.draw_specs(np.random.default_rng(3), 1, 1, diameter_range_mm=(7.0, 5.0))
