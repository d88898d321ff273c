"""Thick-slice (2D T2*-GRE, 5 mm) evidence: a border reading the fitted dipole cannot produce is
left out when it is all that makes the borders disagree (plugin.method.borderexplained), and the
dipole fit's plausibility check allows for the sphere a thick-slice footprint can hide
(plugin.method.dipolefit.largest_hidden_radius_mm). Rendered spheres (plugin.phantom.render)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from plugin.method.borderexplained import discount_unexplained_borders
from plugin.method.detect import detect_spots
from plugin.method.dipolefit import FitParams, b0_in_array_axes, fit_dipole, largest_hidden_radius_mm
from plugin.method.interpret import combine, interpret
from plugin.method.spotread import read_spot
from plugin.model import Classification
from tests.test_dipolefit import nearest_spot, render

GRE2D = "gre2d 0.9x0.9x5"
FIT_KW = dict(convention="right-handed", echo_time_ms=20.0, field_strength_t=1.5)


def spot_with_a_foreign_border(offset_rad: float, extra_slices: int = 2):
    """A 3 mm, +0.4 ppm microbleed on one 5 mm slice, followed (as the detector's border-slice
    extension can) onto ``extra_slices`` slices above it; on the last one another source adds
    ``offset_rad`` under the footprint. Returns (readings, spot, fit, magnitude, voxel, noise)."""
    centre = (-10.0, 4.0, 2.0)
    images, grid, _ = render(GRE2D, [(centre, 3.0, 0.4)], seed=5)
    mag, ph = images.magnitude[0].copy(), images.phase_rad[0].copy()
    vox = grid.voxel_mm
    det = detect_spots(mag, vox)
    spot = nearest_spot(det.spots, grid, centre)
    assert spot.n_slices == 1           # the thick-slice case: no separate upper and lower border
    k = spot.slice_indices[-1]
    n = extra_slices
    assert k + n < mag.shape[0]
    fp = spot.footprint_on(k)
    b = spot.bbox
    far = replace(spot, slice_indices=spot.slice_indices + [k + i for i in range(1, n + 1)],
                  bbox=(slice(b[0].start, b[0].stop + n), b[1], b[2]),
                  footprint=np.concatenate([spot.footprint] + [fp[None]] * n))
    ph[k + n, b[1], b[2]][fp] += offset_rad
    fit = fit_dipole(ph, mag, far, vox, det.noise_sigma, b0_axes=b0_in_array_axes(grid.affine_lps), **FIT_KW)
    assert fit.usable and fit.paramagnetic is True, fit.reason
    rd = read_spot(ph, mag, far, vox, det.noise_sigma, bool(grid.affine_lps[2, 0] > 0))
    return rd, far, fit, mag, vox, det.noise_sigma


def test_a_far_border_reading_the_dipole_cannot_produce_is_left_out():
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(0.6)
    before = combine(interpret(rd.upper, rd.lower, "right-handed"), fit, "right-handed")
    assert before.classification == Classification.INDETERMINATE and before.borders_disagree   # what main did
    kept = discount_unexplained_borders(rd, spot, fit, mag, vox, noise)
    after = combine(interpret(kept.upper, kept.lower, "right-handed"), fit, "right-handed")
    assert after.classification == Classification.MICROBLEED, after.reason
    assert "left out" in kept.note and "another source" in kept.note
    # the left-out reading keeps its pattern (reported) but carries no evidence any more
    foreign = kept.upper if kept.upper is not rd.upper else kept.lower
    original = rd.upper if kept.upper is not rd.upper else rd.lower
    assert foreign.pattern == original.pattern and foreign.z_score == 0.0 and abs(original.z_score) > 10
    assert 0.5 < after.confidence < 1.0


def test_a_border_reading_within_what_the_dipole_and_noise_explain_is_kept():
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(0.06)
    kept = discount_unexplained_borders(rd, spot, fit, mag, vox, noise)
    assert kept.note == "" and kept.upper is rd.upper and kept.lower is rd.lower
    it = combine(interpret(kept.upper, kept.lower, "right-handed"), fit, "right-handed")
    if it.borders_disagree:
        # a weak opposite reading is conflicting evidence: no call, unless the decisive fit and the
        # borders' pooled offset agree (interpret.conflicting_borders_call), and never the wrong class
        assert it.classification in (Classification.INDETERMINATE, Classification.MICROBLEED), it.reason
        if it.classification == Classification.MICROBLEED:
            assert "together they decide" in it.reason


def test_no_usable_fit_leaves_the_borders_as_read():
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(0.6)
    unusable = replace(fit, usable=False, reason="test")
    kept = discount_unexplained_borders(rd, spot, unusable, mag, vox, noise)
    assert kept.note == "" and kept.upper is rd.upper and kept.lower is rd.lower


def test_largest_hidden_radius_grows_with_slice_thickness_only():
    assert largest_hidden_radius_mm(0.7, 5.0) == pytest.approx(np.hypot(0.7, 0.22 * 2.5))
    assert largest_hidden_radius_mm(0.7, 1.0) < 0.71        # thin slices: the footprint itself
    assert largest_hidden_radius_mm(1.0, 5.0, footprint_level=1.0) == pytest.approx(1.0)


def test_fit_plausibility_allows_the_sphere_a_thick_slice_footprint_hides():
    """A 2.4 mm, -0.4 ppm calcification on 5 mm slices shows a 1.4 mm footprint: chi computed on it
    comes out about 4 x too large. The check (here at a lowered limit, the regime where the
    realistic cohort's 1.4 mm spots met the 3 ppm default) must allow the 1.8 mm sphere such a
    footprint can hide, and still refuse a chi no such sphere explains."""
    centre = (-10.0, 4.0, 2.0)
    images, grid, _ = render(GRE2D, [(centre, 2.4, -0.4)], seed=5)
    mag, ph = images.magnitude[0], images.phase_rad[0]
    vox = grid.voxel_mm
    det = detect_spots(mag, vox)
    spot = nearest_spot(det.spots, grid, centre)
    assert spot.diameter_mm < 1.8                        # partial volume shrinks the footprint
    kw = dict(b0_axes=b0_in_array_axes(grid.affine_lps), **FIT_KW)
    lenient = fit_dipole(ph, mag, spot, vox, det.noise_sigma, params=FitParams(max_abs_chi_ppm=1.5), **kw)
    assert lenient.usable, lenient.reason                # main: "implausible fit: |chi| 1.8 ppm > 1.5 ppm"
    assert lenient.paramagnetic is False and abs(lenient.chi_ppm) > 1.5   # chi itself still on the footprint
    strict = fit_dipole(ph, mag, spot, vox, det.noise_sigma, params=FitParams(max_abs_chi_ppm=0.5), **kw)
    assert not strict.usable and "implausible" in strict.reason


def test_a_fit_too_weak_to_decide_cannot_discard_a_border():
    """Only a decisive fit (|z| >= fit_min_z) says what the spot can produce: a weak, possibly wrong
    fit (seed 7's left-handed 0.44 ppm microbleed: z -2.3, a fifth of the true moment) must not
    discard a border reading."""
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(0.6)
    weak = replace(fit, z=2.3, moment_rad_mm3=fit.moment_rad_mm3 / 5, moment_se_rad_mm3=abs(fit.moment_rad_mm3) / 5 / 2.3)
    assert weak.abs_z < 3.0
    kept = discount_unexplained_borders(rd, spot, weak, mag, vox, noise)
    assert kept.note == "" and kept.upper is rd.upper and kept.lower is rd.lower


def test_a_reading_within_the_spots_reach_is_kept_however_strong():
    """On the slice next to the source the dipole's own field is seen (predicted |z| >= 1): a strong
    opposite reading there may be the fit's error, not another source (held-out seed 41: a wrong
    z-6.4 fit predicted at most |z| 2.3 on the border that read a calcification right), so it stays."""
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(0.6, extra_slices=1)
    from plugin.method.borderexplained import check_border
    up_is_far = rd.upper_slice == spot.slice_indices[-1]
    reading, border = (rd.upper, rd.upper_slice) if up_is_far else (rd.lower, rd.lower_slice)
    c = check_border(spot, fit, mag, reading, border, border, vox, noise)
    assert rd.upper.dark_dominant != rd.lower.dark_dominant          # the borders do disagree
    assert c.predicted_max_z >= 1.0 and abs(c.observed_z) > c.predicted_max_z + 3.0   # strong, beyond the prediction
    kept = discount_unexplained_borders(rd, spot, fit, mag, vox, noise)
    assert kept.note == "" and kept.upper is rd.upper and kept.lower is rd.lower
