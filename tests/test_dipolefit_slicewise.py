"""The dipole fit on phase that was unwrapped and high-passed slice by slice (2D T2*-GRE, 5 mm):
every slice keeps an offset of its own (a disk high pass leaves R^2/8 x the background's
through-plane curvature), which a single constant + linear background cannot follow. The fit's
per-slice background (``FitParams.background_per_slice``, set by the pipeline when the background
removal ran in plane) takes it up, so such offsets no longer make a confident dipole out of a spot
whose own field is too faint to read (benchmarks/model_fit.md, 2026-12-02). Rendered spheres
(plugin.phantom.render); the robust variance and the basis helper on plain arrays."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from plugin.method.detect import detect_spots
from plugin.method.dipolefit import (FitParams, b0_in_array_axes, cluster_robust_variance, fit_dipole,
                                     normal_z_of_t, orthonormal_columns)
from tests.test_dipolefit import nearest_spot, render

GRE2D = "gre2d 0.9x0.9x5"
FIT_KW = dict(convention="right-handed", echo_time_ms=20.0, field_strength_t=1.5)
CENTRE = (-10.0, 4.0, 2.0)


def fit_with_slice_offsets(chi_ppm: float, curvature_rad: float, per_slice: bool):
    """A 3 mm sphere of ``chi_ppm`` on 5 mm slices, its local phase given slice offsets
    ``curvature_rad * (k - k0)^2`` (k0: the spot's slice), as an in-plane high pass leaves a
    through-plane curvature of the background; the fit with or without the per-slice background."""
    images, grid, _ = render(GRE2D, [(CENTRE, 3.0, chi_ppm)], seed=5)
    mag, ph = images.magnitude[0], images.phase_rad[0].copy()
    vox = grid.voxel_mm
    det = detect_spots(mag, vox)
    spot = nearest_spot(det.spots, grid, CENTRE)
    k0 = spot.central_slice
    ph += (curvature_rad * (np.arange(ph.shape[0]) - k0) ** 2)[:, None, None]
    params = replace(FitParams(), background_per_slice=per_slice)
    return fit_dipole(ph, mag, spot, vox, det.noise_sigma, b0_axes=b0_in_array_axes(grid.affine_lps), params=params,
                      **FIT_KW)


def test_slice_offsets_make_a_confident_dipole_without_the_per_slice_background():
    """The old model (one constant + linear background) turns the offsets into a decisive fit of a
    faint spot; the per-slice background does not."""
    old = fit_with_slice_offsets(0.02, 0.08, per_slice=False)
    new = fit_with_slice_offsets(0.02, 0.08, per_slice=True)
    assert old.usable and new.usable
    assert old.abs_z >= 3.0, f"the scene no longer fools the single-background fit (z {old.z:+.1f})"
    assert new.abs_z < 3.0, f"per-slice background still decisive on a faint spot (z {new.z:+.1f})"


@pytest.mark.parametrize("chi_ppm", [0.4, -0.35])
def test_per_slice_background_keeps_a_real_lesion_decisive_and_right(chi_ppm):
    fit = fit_with_slice_offsets(chi_ppm, 0.08, per_slice=True)
    assert fit.usable, fit.reason
    assert fit.paramagnetic is (chi_ppm > 0) and fit.abs_z >= 5.0, f"z {fit.z:+.1f}"


def test_without_offsets_the_per_slice_background_agrees_with_the_single_one():
    a = fit_with_slice_offsets(0.4, 0.0, per_slice=False)
    b = fit_with_slice_offsets(0.4, 0.0, per_slice=True)
    assert a.paramagnetic is b.paramagnetic is True
    assert b.moment == pytest.approx(a.moment, rel=0.35) and b.abs_z <= a.abs_z + 1.0


def test_orthonormal_columns_drops_empty_and_collinear_columns():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 3))
    cols = np.column_stack([a, np.zeros(30), a[:, 0] + 2 * a[:, 1]])
    q = orthonormal_columns(cols)
    assert q.shape == (30, 3)
    assert np.allclose(q.T @ q, np.eye(3))
    assert np.allclose(q @ (q.T @ a), a)


def test_robust_variance_grows_when_the_residual_follows_the_kernel_in_blocks():
    """Independent noise: about the model's variance; a block-wise coherent residual (another
    source's field over a few mm): several times larger, on fewer effective blocks."""
    rng = np.random.default_rng(2)
    pos = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0), np.arange(12.0), indexing="ij"), -1).reshape(-1, 3)
    r2 = ((pos - 5.5) ** 2).sum(1) + 1.0
    kern = (3 * (pos[:, 0] - 5.5) ** 2 - r2) / r2 ** 2.5
    bg = np.ones((len(pos), 1))
    noise = rng.normal(size=len(pos))
    iid = cluster_robust_variance(noise, np.ones(len(pos)), bg, kern, 0.0, pos, 3.0)
    kk = float((kern - kern.mean()) @ (kern - kern.mean()))
    assert 0.4 < iid.variance * kk < 2.5
    blocks = np.floor(pos / 3.0).astype(int)
    coherent = noise + 3.0 * rng.normal(size=(4, 4, 4))[blocks[:, 0], blocks[:, 1], blocks[:, 2]]
    corr = cluster_robust_variance(coherent, np.ones(len(pos)), bg, kern, 0.0, pos, 3.0)
    assert corr.variance > 3.0 * iid.variance
    assert corr.n_blocks == 64 and 1.0 <= corr.dof < 63


def test_normal_z_of_t():
    assert normal_z_of_t(3.0, 1e7) == pytest.approx(3.0)
    assert normal_z_of_t(3.0, 4.0) < 2.2
    assert 4.0 < normal_z_of_t(50.0, 3.0) < 4.5          # far tail without underflow
