"""benchmarks/gre2d_complex_fit.py's sphere fit: on a thick-slice complex signal rendered on a finer
grid than the fit's (15 x 5 x 5 sub-samples per voxel, a T2* weight inside instead of a void), it
recovers the total susceptibility S = chi V and its sign (the figure qsm.md's table rests on)."""
import numpy as np
import pytest

from benchmarks.gre2d_complex_fit import fit_sphere
from plugin import physics

VOXEL = (5.0, 0.9, 0.9)
B0 = np.array([1.0, 0.0, 0.0])      # along the slice axis (axial)
K = -physics.phase_per_ppm_rad(b0_t=1.5, echo_time_ms=20.0)   # right-handed


def render(chi: float, diameter: float, centre_mm, shape=(7, 31, 31), sub=(15, 5, 5), inside_weight=0.2):
    g = [((np.arange(n) + 0.5) / n - 0.5) * v for n, v in zip(sub, VOXEL)]
    off = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 3)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    out = np.empty(len(idx), complex)
    for start in range(0, len(idx), 512):
        pts = (idx[start:start + 512] * np.array(VOXEL))[:, None, :] + off[None] - np.asarray(centre_mm)
        field = physics.sphere_field_ppm(pts, diameter_mm=diameter, chi_ppm=chi, b0_direction=B0)
        e = np.exp(1j * K * field)
        e[np.einsum("...i,...i->...", pts, pts) <= (diameter / 2) ** 2] = inside_weight
        out[start:start + 512] = e.mean(axis=1)
    return 100.0 * out.reshape(shape) * np.exp(1j * 0.3)     # tissue level and a receiver phase


@pytest.mark.parametrize("chi, diameter, dz_mm", [(0.4, 3.0, 1.2), (-0.3, 3.5, -0.8)])
def test_the_complex_fit_recovers_the_total_susceptibility(chi, diameter, dz_mm):
    centre_vox = (3, 15, 15)
    centre_mm = np.array(centre_vox) * np.array(VOXEL) + np.array([dz_mm, 0.3, -0.2])
    signal = render(chi, diameter, centre_mm)
    fit = fit_sphere(signal, centre_vox, VOXEL, B0, K)
    s_true = chi * np.pi / 6 * diameter ** 3
    assert np.sign(fit.total_ppm_mm3) == np.sign(chi)
    assert fit.total_ppm_mm3 == pytest.approx(s_true, rel=0.15)
    assert fit.centre_mm[0] == pytest.approx(dz_mm, abs=0.5)
