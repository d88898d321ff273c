"""The QSM core reading (plugin.method.qsmcore): chi where the map resolves the source, no volume."""
from __future__ import annotations

import numpy as np
import pytest

from plugin.method.qsmcore import core_susceptibility


def _map(chi_ppm: float, diameter_mm: float, voxel_mm=(1.0, 1.0, 1.0), noise_ppm: float = 0.01, seed: int = 3,
         centre=None):
    """A 30 x 72 x 72 map: a uniform sphere (sub-sampled 4 x per axis: partial volume at its edge) on a
    noisy background of +0.02 ppm, centred off the voxel grid."""
    rng = np.random.default_rng(seed)
    shape = (30, 72, 72)
    centre = np.array([15.3, 35.6, 36.2]) if centre is None else np.asarray(centre, float)
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    idx = np.indices(shape).reshape(3, -1).T.astype(float)
    frac = np.zeros(len(idx))
    for dz in sub:
        for dy in sub:
            for dx in sub:
                p = (idx + [dz, dy, dx] - centre) * voxel_mm
                frac += (np.sqrt((p ** 2).sum(1)) <= diameter_mm / 2)
    frac = (frac / 64).reshape(shape)
    chi = (0.02 + chi_ppm * frac + noise_ppm * rng.standard_normal(shape)).astype(np.float32)
    return chi, np.ones(shape, bool), centre


@pytest.mark.parametrize("chi_true", [0.4, -0.25])
def test_core_reads_a_resolved_sphere_s_chi_whatever_its_size(chi_true):
    """A 5 mm sphere on 1 mm voxels is resolved: the core reads its chi (against the tissue level)
    within 10 % and the interval holds it; its volume plays no part (the same chi for a 4 mm one)."""
    for d in (4.0, 5.0):
        chi, mask, c = _map(chi_true, d)
        core = core_susceptibility(chi, mask, c, (1.0, 1.0, 1.0), d * 1.2, np.sign(chi_true))
        assert abs(core.chi_ppm / chi_true - 1) < 0.1, (d, core)
        assert core.ci95[0] < chi_true < core.ci95[1], core
        # the map's own error (model_error_rel) sets the width, not the (small) noise
        assert 0.5 * abs(chi_true) < core.ci95[1] - core.ci95[0] < 1.0 * abs(chi_true), core


def test_core_of_a_source_thinner_than_the_slice_reads_low():
    """A 2 mm sphere in 5 mm slices is averaged through the slice: the core reads well under its chi
    (what the note says), not over it."""
    chi, mask, c = _map(0.4, 2.0, voxel_mm=(5.0, 0.9, 0.9), noise_ppm=0.002)
    core = core_susceptibility(chi, mask, c, (5.0, 0.9, 0.9), 2.4, 1.0)
    assert 0.0 < core.chi_ppm < 0.3, core
    assert "partial volume" in core.note
    assert core.ci95[1] > 0.4, core          # the interval reaches the chi the slice averaged away


def test_core_needs_a_sign_and_a_diameter():
    chi, mask, c = _map(0.4, 4.0)
    with pytest.raises(ValueError, match="sign"):
        core_susceptibility(chi, mask, c, (1.0, 1.0, 1.0), 4.0, 0.0)
    with pytest.raises(ValueError, match="diameter"):
        core_susceptibility(chi, mask, c, (1.0, 1.0, 1.0), 0.0, 1.0)


def test_core_outside_the_brain_mask_says_so():
    chi, mask, c = _map(0.4, 4.0)
    mask[:, :, :36] = False                  # the brain ends through the spot
    core = core_susceptibility(chi, mask, c, (1.0, 1.0, 1.0), 4.0, 1.0)
    assert core.chi_ppm is None and "brain mask" in core.note


def test_a_source_thinner_than_a_thick_slice_reads_its_chi_in_the_column():
    """On 2.5 mm slices (0.45 mm pixels) a 2.2 mm sphere centred on a slice boundary is averaged
    through both slices: the core reads about half its chi. The column through it, integrated along
    the slice axis over the source's diameter, gives chi x chord / chord: with the source's size the
    reading comes back within 15 %; without it (or on 5 mm slices, where the column is not used)
    the core stays low."""
    from plugin.method.qsmcore import CoreParams, column_applies
    vox = (2.5, 0.45, 0.45)
    chi, mask, c = _map(0.4, 2.2, voxel_mm=vox, noise_ppm=0.002)
    c = c.copy()
    c[0] = 15.5                                   # on the boundary of slices 15 and 16
    chi, mask, _ = _map(0.4, 2.2, voxel_mm=vox, noise_ppm=0.002, centre=c)
    core_only = core_susceptibility(chi, mask, c, vox, 2.6, 1.0)
    assert core_only.chi_ppm < 0.3, core_only
    with_size = core_susceptibility(chi, mask, c, vox, 2.6, 1.0, source_diameter_mm=2.2)
    assert abs(with_size.chi_ppm / 0.4 - 1) < 0.15, with_size
    assert "column" in with_size.note
    assert column_applies(vox, CoreParams()) and not column_applies((5.0, 0.9, 0.9), CoreParams())
    assert not column_applies((1.0, 1.0, 1.0), CoreParams())


def _with_streak(chi: np.ndarray, centre, chi_true: float, voxel_mm) -> np.ndarray:
    """The sphere's map with an L2 inversion's weaker opposite-sign lobes above and below it along
    B0 (the slice axis here): 0.3 x its chi, one sphere's height away."""
    out = chi.copy()
    step = max(1, int(round(4.0 / voxel_mm[0])))
    for dz in (-step, step):
        z, y, x = (int(round(centre[0])) + dz, int(round(centre[1])), int(round(centre[2])))
        out[z, y - 1:y + 2, x - 1:x + 2] -= 0.3 * chi_true
    return out


@pytest.mark.parametrize("chi_true, call", [(0.3, "paramagnetic"), (-0.2, "diamagnetic"), (0.06, "paramagnetic")])
def test_the_qsm_call_reads_the_sign_of_the_core_not_of_the_lobes(chi_true, call):
    """The map's core above the tissue against its core below it: a source with the inversion's
    opposite-sign lobes beside it is called by its own sign, with |z| past the threshold."""
    from plugin.method.qsmcore import core_sign
    chi, mask, c = _map(chi_true, 4.0)
    got = core_sign(_with_streak(chi, c, chi_true, (1.0, 1.0, 1.0)), mask, c, (1.0, 1.0, 1.0), 4.8)
    assert got.call == call, got
    assert abs(got.z) >= 1.96 and np.sign(got.z) == np.sign(chi_true), got
    assert got.above_ppm >= 0 >= got.below_ppm
    assert call in "paramagnetic diamagnetic" and f"z {got.z:+.1f}" in got.words()


def test_the_qsm_call_on_noise_alone_is_mostly_unclear():
    """No source: the core above and below the tissue are the noise's; over 20 places the call is
    made (|z| >= 1.96) at most 3 times (the threshold's 5 % two-sided, with the sample's spread)."""
    from plugin.method.qsmcore import core_sign
    made = 0
    for seed in range(20):
        chi, mask, c = _map(0.0, 4.0, seed=seed)
        made += core_sign(chi, mask, c, (1.0, 1.0, 1.0), 3.0).call != "unclear"
    assert made <= 3, made


def test_the_qsm_call_at_the_brain_mask_edge_is_unclear_and_says_why():
    from plugin.method.qsmcore import core_sign
    chi, mask, c = _map(0.4, 4.0)
    mask[:, :, :36] = False
    got = core_sign(chi, mask, c, (1.0, 1.0, 1.0), 4.0)
    assert got.call == "unclear" and got.z is None and "brain mask" in got.note
    with pytest.raises(ValueError, match="diameter"):
        core_sign(chi, mask, c, (1.0, 1.0, 1.0), 0.0)
