"""Phase pattern 1-6 of one dark spot on one axial slice (Fig 2 of the method paper).

The paper's readers looked at the displayed phase image (black = low value) inside the spot and
named one of six patterns: 1 totally black, 2 totally white, 3 black circle with white core,
4 white circle with black core, 5 heterogeneously black, 6 heterogeneously white. Patterns 1/3/5
are dark-dominant ("> 50 % of the area is dark"), 2/4/6 bright-dominant.

This module turns that reading into rules on numbers:

1. Phase is taken *relative to the local tissue background* (``phase_rel_rad``: the caller
   subtracts the phase of the surrounding tissue, after background-field removal).
2. Each footprint pixel is *dark* when its relative phase is below ``-t`` and *bright* when above
   ``+t``, where ``t = max(min_phase_rad, z_min * sigma / magnitude)``: the phase noise of a
   pixel is ``sigma / magnitude`` (radians, for complex Gaussian noise of s.d. ``sigma``), so a
   pixel must stand ``z_min`` noise s.d. away from its background to count. Pixels whose
   magnitude is below ``void_fraction`` of the tissue level are the signal void: their phase is
   noise and they are ignored (the paper reads the sign "where signal is real").
3. Fractions are magnitude-weighted: ``dark_fraction = sum(w dark) / sum(w (dark + bright))``.
4. Rules, in order:
   - ``dark_fraction >= homogeneous_fraction`` -> 1; ``bright_fraction >= homogeneous_fraction`` -> 2;
   - core/rim split (core = pixels nearer the footprint centre than ``core_radius_fraction`` of
     its radius): a dark-dominant footprint whose core is mostly bright and rim mostly dark -> 3;
     a bright-dominant footprint whose core is mostly dark and rim mostly bright -> 4
     ("mostly" = ``core_rim_fraction``);
   - otherwise heterogeneous: 5 when dark-dominant, else 6.
   A tie (exactly 50 %) or no signed pixel at all gives ``pattern=None`` (weak evidence).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from plugin.model import PhasePattern


@dataclass(frozen=True)
class PatternRules:
    """Thresholds of the pattern rules (module docstring)."""

    min_phase_rad: float = 0.05
    z_min: float = 2.0
    void_fraction: float = 0.12
    homogeneous_fraction: float = 0.85
    core_radius_fraction: float = 0.5
    core_rim_fraction: float = 0.6


@dataclass(frozen=True)
class PatternReading:
    """What the rules saw on one slice."""

    pattern: Optional[PhasePattern]
    dark_fraction: float          # magnitude-weighted, among signed pixels
    bright_fraction: float
    n_pixels: int                 # footprint pixels
    n_signed: int                 # pixels counted dark or bright
    signed_weight: float          # sum of magnitude weights of signed pixels / tissue level
    mean_phase_rad: float         # magnitude-weighted mean relative phase over usable pixels
    z_score: float = 0.0          # sum(m p) / (sigma sqrt(n)) over usable pixels: the mean phase offset in
                                  # noise s.d. (pixel phase noise is sigma/m, so each m*p has s.d. sigma)

    @property
    def dark_dominant(self) -> Optional[bool]:
        return None if self.pattern is None else self.pattern.dark_dominant

    @property
    def margin(self) -> float:
        """|dark - bright| fraction in [0, 1]: 0 = a tie, 1 = homogeneous."""
        return abs(self.dark_fraction - self.bright_fraction)


NO_READING = PatternReading(None, 0.0, 0.0, 0, 0, 0.0, 0.0)


def classify_pattern(
    phase_rel_rad: np.ndarray,
    magnitude: np.ndarray,
    footprint: np.ndarray,
    *,
    noise_sigma: float,
    tissue_level: float,
    rules: PatternRules = PatternRules(),
) -> PatternReading:
    """Pattern 1-6 of one spot on one 2D slice.

    ``phase_rel_rad``, ``magnitude`` and ``footprint`` are 2D arrays of one slice (row, col) or
    any same-shaped crop; ``footprint`` is the spot's pixels. ``noise_sigma`` is the magnitude
    noise s.d. and ``tissue_level`` the magnitude of surrounding tissue (same units).

    >>> ph = np.full((5, 5), -0.5); mag = np.ones((5, 5)); fp = np.ones((5, 5), bool)
    >>> int(classify_pattern(ph, mag, fp, noise_sigma=0.05, tissue_level=1.0).pattern)
    1
    """
    fp = np.asarray(footprint, bool)
    n_pixels = int(fp.sum())
    if n_pixels == 0 or tissue_level <= 0:
        return NO_READING
    mag = np.asarray(magnitude, float)
    ph = np.asarray(phase_rel_rad, float)
    usable = fp & (mag >= rules.void_fraction * tissue_level)
    if not usable.any():
        return PatternReading(None, 0.0, 0.0, n_pixels, 0, 0.0, 0.0)
    threshold = np.maximum(rules.min_phase_rad, rules.z_min * noise_sigma / np.maximum(mag, 1e-12))
    dark = usable & (ph < -threshold)
    bright = usable & (ph > threshold)
    w = mag / tissue_level
    wd = float(w[dark].sum())
    wb = float(w[bright].sum())
    mean_phase = float((w[usable] * ph[usable]).sum() / w[usable].sum())
    n_usable = int(usable.sum())
    z = float((mag[usable] * ph[usable]).sum() / (max(noise_sigma, 1e-12) * np.sqrt(n_usable)))
    if wd + wb <= 0:
        return PatternReading(None, 0.0, 0.0, n_pixels, 0, 0.0, mean_phase, z)
    fd = wd / (wd + wb)
    fb = 1.0 - fd
    n_signed = int(dark.sum() + bright.sum())
    base = dict(dark_fraction=fd, bright_fraction=fb, n_pixels=n_pixels, n_signed=n_signed,
                signed_weight=wd + wb, mean_phase_rad=mean_phase, z_score=z)
    if fd == fb:
        return PatternReading(None, **base)
    if fd >= rules.homogeneous_fraction:
        return PatternReading(PhasePattern.TOTALLY_BLACK, **base)
    if fb >= rules.homogeneous_fraction:
        return PatternReading(PhasePattern.TOTALLY_WHITE, **base)
    core = _core_mask(fp, rules.core_radius_fraction)
    rim = fp & ~core
    core_dark, core_bright = _fractions(w, dark, bright, core)
    rim_dark, rim_bright = _fractions(w, dark, bright, rim)
    f = rules.core_rim_fraction
    if fd > fb and core_bright >= f and rim_dark >= f:
        return PatternReading(PhasePattern.BLACK_CIRCLE_WHITE_CORE, **base)
    if fb > fd and core_dark >= f and rim_bright >= f:
        return PatternReading(PhasePattern.WHITE_CIRCLE_BLACK_CORE, **base)
    return PatternReading(PhasePattern.HETEROGENEOUSLY_BLACK if fd > fb else PhasePattern.HETEROGENEOUSLY_WHITE, **base)


def _fractions(w: np.ndarray, dark: np.ndarray, bright: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    wd = float(w[dark & region].sum())
    wb = float(w[bright & region].sum())
    total = wd + wb
    return (wd / total, wb / total) if total > 0 else (0.0, 0.0)


def _core_mask(fp: np.ndarray, radius_fraction: float) -> np.ndarray:
    """Pixels of ``fp`` nearer its centroid than ``radius_fraction`` x its equivalent radius."""
    rows, cols = np.nonzero(fp)
    r0, c0 = rows.mean(), cols.mean()
    radius = np.sqrt(fp.sum() / np.pi)
    rr, cc = np.indices(fp.shape)
    return fp & (np.hypot(rr - r0, cc - c0) <= radius_fraction * max(radius, 1.0))
