"""plugin.phantom.render: rendering, the paper's behaviour (Figs 6/7), population, determinism, CLI."""
import json

import numpy as np
import pytest

from plugin.phantom import render as P
from plugin.phantom import cohort as C
from plugin import physics
from plugin.phantom.truth import classify_pattern, spot_mask

SMALL = P.Grid((16, 96, 96), (2.5, 0.45, 0.45))
BIG_HEAD = P.Head((100.0, 100.0, 100.0))        # brain everywhere in the small grid
QUIET = P.Acquisition(background_ptp_rad=0.0)


def _one(lesion, convention="right-handed", acq=QUIET):
    images = P.render([lesion], grid=SMALL, head=BIG_HEAD, acquisition=acq, convention=convention, noise=False)
    return images, np.abs(images.source_factor), np.angle(images.source_factor)


def _unwrapped_centre_phase(lesion, convention="right-handed"):
    """Noise-free voxel-centre phase (not wrapped) of the lesion's analytic field."""
    x, y, z = SMALL.axes_lps_mm()
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    pts = np.stack([X, Y, Z], -1) - np.asarray(lesion.center_lps_mm)
    f = physics.sphere_field_ppm(pts, diameter_mm=lesion.diameter_mm, chi_ppm=lesion.chi_ppm)
    return physics.field_to_phase_rad(f, convention=convention, wrap=False)


def test_large_lesion_wraps_near_centre_but_border_slices_keep_one_sign():
    """Paper Figs 6C/7B: a large, strongly paramagnetic microbleed (5.8 mm, 0.61 ppm, the top of
    the paper's ranges; 3 T, TE 25 ms) aliases near its centre while the border slices are one
    colour. Centre in the middle of slice 8 (z = 1.25 mm)."""
    lesion = P.SphereLesion(1, (0.1, 0.2, 1.25), 5.8, 0.61, "microbleed")
    images, rel, phase = _one(lesion)
    unwrapped = _unwrapped_centre_phase(lesion)
    truth = P.make_study([lesion], grid=SMALL, head=BIG_HEAD, acquisition=QUIET, seed=0)[1]["lesions"][0]
    lo, hi, centre = truth["lower_border_slice"], truth["upper_border_slice"], truth["central_slice"]
    assert centre == 8 and hi - lo + 1 >= 5
    _, r, c = SMALL.index_of(lesion.center_lps_mm)
    disc = (lesion.radius_mm + 1.5) / 0.45
    # near the centre (central slice and the slices just above/below it, inside the spot):
    # |unwrapped phase| > pi and the displayed sign is the opposite one: aliasing
    aliased = 0
    for k in (centre - 1, centre, centre + 1):
        m = spot_mask(rel[k], (r, c), (disc, disc))
        flipped = m & (np.abs(unwrapped[k]) > np.pi) & (np.sign(phase[k]) == -np.sign(unwrapped[k])) & (rel[k] > 0.05)
        aliased += int(flipped.sum())
    assert aliased >= 5
    m = spot_mask(rel[centre], (r, c), (disc, disc))
    assert classify_pattern(phase[centre], m) not in (1, None)          # the central slice is not plain black
    # the border slices: every signed voxel in the spot is dark (right-handed paramagnetic)
    for k in (lo, hi):
        m = spot_mask(rel[k], (r, c), (disc, disc))
        assert m.sum() >= 5
        signed = phase[k][m][np.abs(phase[k][m]) > 0.1]
        assert signed.size > 0 and np.all(signed < 0)
        assert classify_pattern(phase[k], m) == 1
    assert truth["border_pattern"] == truth["lower_border_pattern"] == 1


def test_small_lesion_does_not_alias_and_is_one_sign():
    """Paper Fig 6A: a mean-size microbleed (< 2.5 mm) is a plain black spot, no aliasing."""
    lesion = P.SphereLesion(1, (0.1, 0.2, 1.25), 2.0, 0.15, "microbleed")
    _, rel, phase = _one(lesion)
    unwrapped = _unwrapped_centre_phase(lesion)
    assert np.abs(unwrapped[rel > 0.5]).max() < np.pi
    _, r, c = SMALL.index_of(lesion.center_lps_mm)
    m = spot_mask(rel[8], (r, c), (6.0, 6.0))
    assert m.any() and classify_pattern(phase[8], m) == 1


@pytest.mark.parametrize("chi, rh_pattern, lh_pattern", [(0.3, 1, 2), (-0.3, 2, 1)])
def test_handedness_flips_the_displayed_pattern(chi, rh_pattern, lh_pattern):
    lesion = P.SphereLesion(1, (0.0, 0.0, 1.25), 2.4, chi, "x")
    for conv, expected in (("right-handed", rh_pattern), ("left-handed", lh_pattern)):
        truth = P.make_study([lesion], grid=SMALL, head=BIG_HEAD, acquisition=QUIET, convention=conv)[1]
        assert truth["lesions"][0]["border_pattern"] == expected


def test_vein_along_b0_is_a_dot_on_every_slice_it_crosses():
    vein = P.Vein(7, (3.0, -2.0, -12.0), (3.0, -2.0, 12.0), 1.2, 0.4)
    images = P.render([vein], grid=SMALL, head=BIG_HEAD, acquisition=QUIET, noise=False)
    rel, phase = np.abs(images.source_factor), np.angle(images.source_factor)
    _, r, c = SMALL.index_of((3.0, -2.0, 0.0))
    r, c = int(round(r)), int(round(c))
    z = SMALL.axes_lps_mm()[2]
    for k in np.nonzero(np.abs(z) < 10)[0]:
        assert rel[k, r, c] < 0.7                               # dark dot ...
        assert phase[k, r, c] < -1.0                            # ... with paramagnetic (RH: negative) phase
        assert abs(phase[k, r + 8, c + 8]) < 1e-3               # no field outside a vein along B0
    # and nothing beyond its ends
    assert rel[0, r, c] == pytest.approx(1.0)


def test_noise_multi_echo_filter_and_determinism():
    lesion = P.SphereLesion(1, (0.0, 0.0, 0.0), 3.0, 0.3, "microbleed")
    acq = P.Acquisition(echo_times_ms=P.Acquisition.echo_train(3), snr=20.0, background_ptp_rad=8.0)
    a = P.render([lesion], grid=SMALL, acquisition=acq, seed=5)
    b = P.render([lesion], grid=SMALL, acquisition=acq, seed=5)
    c = P.render([lesion], grid=SMALL, acquisition=acq, seed=6)
    assert a.echo_times_ms == (8.333, 16.667, 25.0) and len(a.magnitude) == 3
    for e in range(3):
        assert np.array_equal(a.magnitude[e], b.magnitude[e]) and np.array_equal(a.phase_rad[e], b.phase_rad[e])
    assert not np.array_equal(a.phase_rad[0], c.phase_rad[0])
    for ph in a.phase_rad:
        assert ph.dtype == np.float32 and ph.min() >= -np.pi and ph.max() < np.pi
    # magnitude decays with TE in tissue; outside the head only noise (Rayleigh, mean ~1.25 sigma)
    centre = (slice(6, 10), slice(40, 56), slice(10, 20))
    assert a.magnitude[0][centre].mean() > a.magnitude[2][centre].mean()
    sigma = 1000.0 * np.exp(25 / 45 - 8.333 / 45) / 20.0
    corner = a.magnitude[0][:, :4, :4]
    assert corner.mean() == pytest.approx(1.2533 * sigma, rel=0.2)
    # raw phase wraps across the brain; the homodyne-filtered one is near 0 in tissue
    inside = a.tissue_fraction > 0.99
    filt = P.render([], grid=SMALL, acquisition=P.Acquisition(background_ptp_rad=8.0, filtered=True, snr=200), seed=1)
    raw = P.render([], grid=SMALL, acquisition=P.Acquisition(background_ptp_rad=8.0, snr=200), seed=1)
    assert np.abs(np.diff(raw.phase_rad[0], axis=2))[:, :, :][inside[:, :, 1:]].max() > np.pi   # wraps
    assert np.percentile(np.abs(filt.phase_rad[0][inside]), 95) < 0.3


def test_interior_signal_is_low():
    lesion = P.SphereLesion(1, (0.0, 0.0, 1.25), 5.0, 0.2, "microbleed")
    _, rel, _ = _one(lesion)
    _, r, c = SMALL.index_of(lesion.center_lps_mm)
    assert 0.1 <= rel[8, int(round(r)), int(round(c))] <= 0.2


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_population_statistics(seed):
    """Sample statistics of the drawn population against the paper (tolerances ~2.5 standard errors)."""
    rng = np.random.default_rng(seed)
    mb = C.population_stats(C.sample_population(C.PAPER_POPULATION[0], rng))
    ca = C.population_stats(C.sample_population(C.PAPER_POPULATION[1], rng))
    assert mb["n"] == 128 and ca["n"] == 62
    assert 1.5 <= mb["diameter_range_mm"][0] and mb["diameter_range_mm"][1] <= 5.8
    assert 0.01 <= mb["chi_range_ppm"][0] and mb["chi_range_ppm"][1] <= 0.61
    assert 1.5 <= ca["diameter_range_mm"][0] and ca["diameter_range_mm"][1] <= 6.9
    assert -0.41 <= ca["chi_range_ppm"][0] and ca["chi_range_ppm"][1] <= -0.10
    assert mb["diameter_mean_mm"] == pytest.approx(2.6, abs=0.22)
    assert mb["diameter_sd_mm"] == pytest.approx(1.0, abs=0.2)
    assert mb["chi_mean_ppm"] == pytest.approx(0.23, abs=0.04)
    assert mb["chi_sd_ppm"] == pytest.approx(0.17, abs=0.035)
    assert mb["r"] == pytest.approx(0.72, abs=0.1)
    assert ca["diameter_mean_mm"] == pytest.approx(3.2, abs=0.4)
    assert ca["diameter_sd_mm"] == pytest.approx(1.4, abs=0.3)
    assert ca["chi_mean_ppm"] == pytest.approx(-0.24, abs=0.03)
    assert ca["chi_sd_ppm"] == pytest.approx(0.10, abs=0.025)     # truncation caps it at ~0.089
    assert ca["r"] == pytest.approx(-0.82, abs=0.1)


def test_paper_cohort_layout():
    plans = C.paper_cohort(3, n_studies=4, size="full")
    lesions = [L for p in plans for L in p.lesions]
    assert sum(L.lesion_class == "microbleed" for L in lesions) == 128
    assert sum(L.lesion_class == "calcification" for L in lesions) == 62
    for p in plans:
        z = p.grid.axes_lps_mm()[2]
        pts = np.array([L.center_lps_mm for L in p.lesions])
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(len(pts)) * 1e9
        assert d.min() > 8.0                                            # well apart
        for L in p.lesions:
            assert p.head.contains(L.center_lps_mm, margin_mm=8.0)      # inside the brain, off its edge
            assert z[0] + 5.0 < L.center_lps_mm[2] < z[-1] - 5.0
    again = C.paper_cohort(3, n_studies=4, size="full")
    assert [p.lesions for p in again] == [p.lesions for p in plans]


def test_truth_fields_and_cli(tmp_path):
    from plugin.cli import main

    out = tmp_path / "ph"
    rc = main(["phantom", "--vendor", "Siemens", "--out", str(out), "--size", "small", "--seed", "3"])
    assert rc == 0
    doc = json.loads((out / "truth.json").read_text())
    (study,) = doc["studies"]
    assert study["vendor"] == "Siemens" and study["phase_convention"] == "left-handed"
    assert len(study["lesions"]) == 10 and len(study["veins"]) == 3
    for L in study["lesions"]:
        for key in ("id", "center_lps_mm", "diameter_mm", "n_slices", "class", "chi_ppm"):
            assert key in L
    assert len(list((out / study["directory"]).rglob("*.dcm"))) == study["n_files"] == 40
    assert main(["phantom", "--vendor", "Hitachi", "--out", str(tmp_path / "x")]) == 2


def test_cli_enhanced_anonymized_filtered_multi_echo(tmp_path):
    import pydicom

    from plugin.cli import main

    out = tmp_path / "ph"
    rc = main(["phantom", "--vendor", "ge", "--out", str(out), "--size", "small", "--style", "enhanced",
               "--anonymize", "no_private", "--echoes", "2", "--filtered", "--snr", "30"])
    assert rc == 0
    (study,) = json.loads((out / "truth.json").read_text())["studies"]
    assert study["vendor"] == "GE" and study["style"] == "enhanced" and study["anonymize"] == "no_private"
    assert study["echo_times_ms"] == [12.5, 25.0] and study["filtered_phase"] is True
    files = sorted((out / study["directory"]).rglob("*.dcm"))
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
    assert not any(elem.tag.is_private for elem in ds.iterall())
