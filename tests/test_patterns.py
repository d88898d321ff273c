"""Pattern rules 1-6 (plugin.method.patterns) on small hand-built arrays."""
import numpy as np

from plugin.model import PhasePattern
from plugin.method.patterns import PatternRules, classify_pattern


def disk(n=11, radius=5.0):
    rr, cc = np.indices((n, n)) - n // 2
    return np.hypot(rr, cc), np.hypot(rr, cc) <= radius


def read(phase, fp, mag=None, sigma=0.01):
    mag = np.ones_like(phase) if mag is None else mag
    return classify_pattern(phase, mag, fp, noise_sigma=sigma, tissue_level=1.0)


def test_totally_black_and_white():
    _, fp = disk()
    assert read(np.full(fp.shape, -0.6), fp).pattern == PhasePattern.TOTALLY_BLACK
    assert read(np.full(fp.shape, +0.6), fp).pattern == PhasePattern.TOTALLY_WHITE


def test_black_circle_with_white_core_is_pattern_3():
    r, fp = disk()
    phase = np.where(r <= 2.0, 0.8, -0.8)          # core 13 px bright, rim 68 px dark
    reading = read(phase, fp)
    assert reading.pattern == PhasePattern.BLACK_CIRCLE_WHITE_CORE
    assert reading.dark_fraction > 0.5


def test_white_circle_with_black_core_is_pattern_4():
    r, fp = disk()
    phase = np.where(r <= 2.0, -0.8, 0.8)
    assert read(phase, fp).pattern == PhasePattern.WHITE_CIRCLE_BLACK_CORE


def test_heterogeneous_black_and_white():
    rng = np.random.default_rng(3)
    _, fp = disk()
    mix = rng.random(fp.shape)
    dark_heavy = np.where(mix < 0.65, -0.7, 0.7)     # scattered, no core/rim structure
    assert read(dark_heavy, fp).pattern == PhasePattern.HETEROGENEOUSLY_BLACK
    assert read(-dark_heavy, fp).pattern == PhasePattern.HETEROGENEOUSLY_WHITE


def test_left_half_right_half_is_heterogeneous_by_dominance():
    r, fp = disk()
    cols = np.indices(fp.shape)[1]
    phase = np.where(cols <= 6, -0.5, 0.5)           # 6 of 11 columns dark
    assert read(phase, fp).pattern == PhasePattern.HETEROGENEOUSLY_BLACK


def test_void_phase_is_ignored():
    """A signal void's phase is noise: only pixels with real signal count."""
    rng = np.random.default_rng(0)
    r, fp = disk()
    mag = np.where(r <= 3.0, 0.02, 1.0)             # void in the middle
    phase = np.where(r <= 3.0, rng.uniform(-np.pi, np.pi, fp.shape), -0.4)
    assert read(phase, fp, mag=mag).pattern == PhasePattern.TOTALLY_BLACK


def test_magnitude_weighting_decides_dominance():
    r, fp = disk()
    cols = np.indices(fp.shape)[1]
    phase = np.where(cols < 5, -0.5, 0.5)          # fewer dark pixels ...
    mag = np.where(cols < 5, 1.0, 0.3)              # ... but they carry the signal
    assert read(phase, fp, mag=mag).dark_dominant is True


def test_phase_within_noise_gives_no_pattern():
    _, fp = disk()
    phase = np.full(fp.shape, 0.02)                 # below min_phase_rad
    assert read(phase, fp).pattern is None
    # at low SNR a 0.1 rad offset is within 2 noise s.d. (sigma/mag = 0.1)
    assert read(np.full(fp.shape, 0.1), fp, sigma=0.1).pattern is None


def test_exact_tie_is_no_pattern():
    fp = np.ones((2, 2), bool)
    phase = np.array([[-0.5, 0.5], [-0.5, 0.5]])
    assert read(phase, fp).pattern is None


def test_empty_footprint():
    fp = np.zeros((5, 5), bool)
    assert read(np.zeros((5, 5)), fp).pattern is None


def test_homogeneous_threshold_is_a_rule():
    rules = PatternRules()
    _, fp = disk()
    n = int(fp.sum())
    phase = np.full(fp.shape, -0.5)
    idx = np.argwhere(fp)
    k = int(np.floor(n * (1 - rules.homogeneous_fraction))) - 1   # just under 15 % bright
    for i, j in idx[:k]:
        phase[i, j] = 0.5
    assert read(phase, fp).pattern == PhasePattern.TOTALLY_BLACK
    for i, j in idx[k:k + 4]:
        phase[i, j] = 0.5
    assert read(phase, fp).pattern in (PhasePattern.HETEROGENEOUSLY_BLACK, PhasePattern.BLACK_CIRCLE_WHITE_CORE)
