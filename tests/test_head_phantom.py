"""plugin.phantom.head / realistic: the head-like phantom of issue 10 (small grids, a few seconds).

Air field by the dipole kernel (shape and sign), raw phase wrapping near the sinuses, nuclei and
veins paramagnetic in the rendered phase's handedness, truth positions where the structures
are, determinism by seed."""
import numpy as np
import pytest

from plugin import physics
from plugin.phantom import head as H
from plugin.phantom import realistic as R
from plugin.phantom import render as P

TINY = R.Protocol("tiny", P.Grid((32, 128, 128), (2.5, 1.8, 1.8)), 3.0, (25.0,), False, 30.0, (3, 3, 3),
                  "test: 1.8 x 1.8 x 2.5 mm, z -40..40 mm")
SPECS = [("microbleed", 3.0, 0.3, "paper", None), ("calcification", 3.5, -0.3, "paper", None),
         ("microbleed", 4.5, 0.4, "cored", (2.2, 0.0))]


@pytest.fixture(scope="module")
def plan():
    return R.realistic_cohort(0, protocol=TINY, n_studies=1, lesion_specs=SPECS, anatomy_mm=2.0)[0]


@pytest.fixture(scope="module")
def studies(plan):
    right = R.make_study(plan, convention="right-handed", noise=False)
    left = R.make_study(plan, convention="left-handed", noise=False)
    return right, left


def test_air_sphere_field_follows_the_dipole_kernel():
    """An air sphere (+9.4 ppm vs tissue) on a padded 1 mm grid: outside it the field is the
    analytic Lorentz-corrected dipole, positive along B0 (the poles), negative at the equator."""
    n, r_mm = 72, 8.0
    ax = np.arange(n) - (n - 1) / 2.0
    Z, Y, X = np.meshgrid(ax, ax, ax, indexing="ij")
    chi = np.where(X**2 + Y**2 + Z**2 <= r_mm**2, H.CHI_AIR_MINUS_TISSUE_PPM, 0.0).astype(np.float32)
    field = H.susceptibility_field_ppm(chi, 1.0, pad_factor=2.0)
    c = (n - 1) / 2.0                      # the sphere's centre lies between voxels: coordinates are i - c
    i0 = int(c + 0.5)                      # the voxel at +0.5 mm on an axis
    for d in (12.5, 16.5):
        pole = field[int(c + d), i0, i0]
        equator = field[i0, i0, int(c + d)]
        expect_pole = physics.sphere_field_ppm(np.array([0.5, 0.5, d]), diameter_mm=2 * r_mm, chi_ppm=H.CHI_AIR_MINUS_TISSUE_PPM)
        expect_eq = physics.sphere_field_ppm(np.array([d, 0.5, 0.5]), diameter_mm=2 * r_mm, chi_ppm=H.CHI_AIR_MINUS_TISSUE_PPM)
        assert pole > 0 > equator
        assert pole == pytest.approx(float(expect_pole), rel=0.1)
        assert equator == pytest.approx(float(expect_eq), rel=0.1)


def test_head_field_near_the_frontal_sinus_is_a_dipole_and_the_raw_phase_wraps(plan, studies):
    anat = H.build_anatomy(plan.head_seed, 2.0)
    bg = H.background_field_ppm(plan.head_seed, 2.0)
    sinus = next(e for e in anat.layout.air if e.name == "frontal sinus")
    c, a = np.asarray(sinus.center_lps_mm), np.asarray(sinus.semi_axes_mm)
    above = [float(bg[anat.grid.index_of(c + [0, 0, a[2] + d])]) for d in (2, 4)]
    beside = [float(bg[anat.grid.index_of(c + [a[0] + d, 0, 0])]) for d in (2, 4)]
    assert min(above) > 0.5 and max(beside) < -0.3           # ppm: pole positive, equator negative
    assert above[0] > above[1] and beside[0] < beside[1]     # and falling off with distance
    # the rendered raw phase wraps (jumps > pi between neighbours) in the brain near the sinus,
    # and much less often in the brain far from it
    (images, truth), _ = studies
    ph, mag = images.phase_rad[0], images.magnitude[0]
    g = TINY.grid
    x, y, z = g.axes_lps_mm()
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    tissue = mag > 0.3 * np.median(mag[mag > 0])
    jump = np.zeros(ph.shape, bool)
    jump[:, 1:, :] |= np.abs(np.diff(ph, axis=1)) > np.pi
    jump[:, :, 1:] |= np.abs(np.diff(ph, axis=2)) > np.pi
    near = tissue & (np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) < 30)
    far = tissue & (np.sqrt(X**2 + Y**2 + (Z - 30) ** 2) < 30)
    assert jump[near].mean() > 0.05
    assert jump[near].mean() > 5 * jump[far].mean()


def _centre_minus_ring_rad(images, p_lps_mm) -> float:
    g = images.grid
    k, r, c = np.round(g.index_of(p_lps_mm)).astype(int)
    mag, ph = images.magnitude[0][k], images.phase_rad[0][k]
    rr, cc = np.ogrid[: mag.shape[0], : mag.shape[1]]
    d = np.hypot((rr - r) * g.voxel_mm[1], (cc - c) * g.voxel_mm[2])
    ring = (d > 12) & (d < 20) & (mag > 0.3 * np.median(mag[mag > 0]))
    return float(ph[r, c] - np.median(ph[ring]))


def test_nuclei_and_through_plane_veins_are_paramagnetic_in_the_phase_convention(studies):
    """Right-handed (GE, Philips): paramagnetic is dark (negative); left-handed: bright."""
    (right, truth), (left, _) = studies
    # the larger nuclei one by one (the red nucleus, 6 mm, is barely resolved on this 2 mm anatomy
    # grid and 1.8 mm voxels), and all twelve on average
    nuclei = [n for n in truth["nuclei"] if n["name"].split()[0] in ("pallidum", "substantia", "caudate")]
    assert len(nuclei) == 6
    for n in nuclei:
        assert _centre_minus_ring_rad(right, n["center_lps_mm"]) < 0 < _centre_minus_ring_rad(left, n["center_lps_mm"]), n["name"]
    mean_right = np.mean([_centre_minus_ring_rad(right, n["center_lps_mm"]) for n in truth["nuclei"]])
    mean_left = np.mean([_centre_minus_ring_rad(left, n["center_lps_mm"]) for n in truth["nuclei"]])
    assert mean_right < -0.1 and mean_left > 0.1
    through = [v for v in truth["veins"] if v["kind"] == "medullary vein through-plane"]
    assert through
    for v in through:
        mid = (np.asarray(v["start_lps_mm"]) + np.asarray(v["end_lps_mm"])) / 2
        idx = tuple(np.round(right.grid.index_of(mid)).astype(int))
        # the vein's own (background-free) phase: inside field +chi/3, partial volume in 1.8 mm voxels
        assert np.angle(right.source_factor[idx]) < -0.02 and np.angle(left.source_factor[idx]) > 0.02
        assert abs(right.source_factor[idx]) < 0.9                  # and darker (venous T2*)


def test_truth_positions_are_where_the_structures_are(plan, studies):
    (images, truth), _ = studies
    anat = H.build_anatomy(plan.head_seed, 2.0)
    for n in truth["nuclei"]:
        assert anat.tissue_at(n["center_lps_mm"]).name.lower() == n["tissue"]
    for s in truth["dural_sinuses"]:
        for p in s["points_lps_mm"][1:-1]:
            assert anat.tissue_at(p) == H.Tissue.DURAL_SINUS, s["name"]
    for e in truth["air"]:
        p = e["center_lps_mm"] if "center_lps_mm" in e else e["points_lps_mm"][-1]
        assert anat.tissue_at(p) in (H.Tissue.SINUS_AIR, H.Tissue.AIR), e["name"]
    g = images.grid
    inside = lambda L: 0 <= round(g.index_of(L["center_lps_mm"])[0]) < g.shape[0]   # noqa: E731
    lesions = [*truth["lesions"], *[c for c in truth["physiological_calcifications"] if c["n_slices"] > 0 and inside(c)]]
    assert {L["kind"] for L in truth["lesions"]} == {"paper", "cored"}
    assert len(lesions) >= 4
    for L in lesions:
        idx = tuple(np.round(g.index_of(L["center_lps_mm"])).astype(int))
        assert abs(images.source_factor[idx]) < 0.7, L          # the spot's signal void is at its centre
        assert anat.tissue_at(L["center_lps_mm"]) not in (H.Tissue.AIR, H.Tissue.BONE, H.Tissue.SCALP)
    for L in truth["lesions"]:
        assert anat.depth_at(L["center_lps_mm"]) > L["diameter_mm"] / 2 + 5   # inside the parenchyma


def test_deterministic_by_seed(plan):
    again = R.realistic_cohort(0, protocol=TINY, n_studies=1, lesion_specs=SPECS, anatomy_mm=2.0)[0]
    other = R.realistic_cohort(1, protocol=TINY, n_studies=1, lesion_specs=SPECS, anatomy_mm=2.0)[0]
    assert again.lesions == plan.lesions and again.mimics.veins == plan.mimics.veins
    assert other.lesions != plan.lesions and other.head_seed != plan.head_seed
    a, _ = R.make_study(plan, convention="left-handed", seed=5)
    b, _ = R.make_study(again, convention="left-handed", seed=5)
    c, _ = R.make_study(plan, convention="left-handed", seed=6)
    assert np.array_equal(a.magnitude[0], b.magnitude[0]) and np.array_equal(a.phase_rad[0], b.phase_rad[0])
    assert not np.array_equal(a.phase_rad[0], c.phase_rad[0])


def test_protocols_are_the_issues_acquisitions():
    swi, gre3d, gre2d = (R.PROTOCOLS[k] for k in ("swi3d", "gre3d_1mm", "gre2d_5mm"))
    assert swi.grid.shape == (60, 512, 512) and swi.grid.voxel_mm == (2.5, 0.45, 0.45)
    assert swi.b0_t == 3.0 and swi.echo_times_ms == (25.0,) and swi.filtered
    assert swi.acquisition(echoes=6).echo_times_ms[-1] == 25.0 and len(swi.acquisition(echoes=6).echo_times_ms) == 6
    assert gre3d.grid.voxel_mm == (1.0, 1.0, 1.0) and len(gre3d.echo_times_ms) > 1 and not gre3d.filtered
    assert gre2d.grid.shape[1:] == (256, 256) and gre2d.grid.voxel_mm[0] == 5.0 and gre2d.b0_t == 1.5
    assert gre2d.echo_times_ms == (20.0,)


def test_protocol_without_realistic_cohort_is_a_usage_error(tmp_path):
    from plugin.phantom import dicom as D

    with pytest.raises(ValueError, match="realistic"):
        D.generate(tmp_path, vendor="GE", cohort="paper", protocol="swi3d")
    with pytest.raises(ValueError, match="protocol"):
        D.generate(tmp_path, vendor="GE", cohort="realistic", protocol="epi")


def test_realistic_study_written_as_a_vendor_with_truth_of_lesions_and_mimics(plan, tmp_path):
    """The phantom command's writer path (``plugin.phantom.dicom``): DICOM read back with the
    protocol's geometry and the vendor's convention; truth lists lesions and every mimic."""
    from dicom_io.read import series as dseries
    from plugin.pairing import pair_series
    from plugin.phantom import dicom as D

    acq = TINY.acquisition(filtered=True)
    doc = D._render_and_write_realistic((plan, acq, D.vendor_convention("Siemens"), tmp_path, D.WriteOptions("Siemens")))
    assert doc["protocol"] == "tiny" and doc["phase_convention"] == "left-handed" and doc["filtered_phase"] is True
    for key in ("lesions", "veins", "physiological_calcifications", "nuclei", "dural_sinuses", "air"):
        assert doc[key], key
    for L in doc["lesions"]:
        assert {"id", "class", "chi_ppm", "center_lps_mm", "diameter_mm", "n_slices", "kind"} <= set(L)
    pairs, _ = pair_series(dseries.scan([tmp_path / doc["directory"]]).series)
    (pair,) = pairs
    phase = dseries.load_volume(pair.phase)
    assert phase.vendor == "Siemens" and phase.data.shape == TINY.grid.shape
    assert np.allclose([np.linalg.norm(phase.affine_lps[:3, i]) for i in range(3)], TINY.grid.voxel_mm, atol=1e-3)
    images, _ = R.make_study(plan, acquisition=acq, convention="left-handed", seed=0)
    difference = np.angle(np.exp(1j * (phase.data - images.phase_rad[0])))      # Siemens 12-bit steps, wrap-safe
    assert np.abs(difference).max() < 2e-3


def test_lesions_go_beside_the_cortex_only_when_asked():
    """``surface_margin_mm``: by default every lesion's keep-out sphere (radius + 1.5 mm) stays 6 mm
    under the brain's surface; with 0 lesions may sit beside the cortex (lobar microbleeds), and the
    realistic benchmark's --lesion-surface-margin-mm reports recall by depth."""
    specs = [("microbleed", 3.0, 0.3, "paper", None)] * 12
    anat = None
    depths = {}
    for margin in (R.SURFACE_MARGIN_MM, 0.0):
        plan = R.realistic_cohort(3, protocol=TINY, n_studies=1, lesion_specs=specs, anatomy_mm=2.0, surface_margin_mm=margin)[0]
        anat = anat or H.build_anatomy(plan.head_seed, plan.anatomy_mm)
        depths[margin] = [anat.depth_at(L.center_lps_mm) - L.radius_mm for L in plan.lesions]
        assert min(depths[margin]) >= margin + 1.5 - 1e-6
    assert min(depths[R.SURFACE_MARGIN_MM]) >= 7.5 - 1e-6
    assert min(depths[0.0]) < 7.5           # some lesion now sits nearer the surface than the default allows
