"""Read one spot's phase on its border and central slices (glue between detect and patterns).

For each slice the phase is taken relative to the local tissue background: the magnitude-weighted
complex mean phase of an annulus of tissue around the footprint (``ring_inner_mm`` beyond the
footprint, ``ring_width_mm`` wide, signal voids excluded). The tissue magnitude level used to
weight pixels and to recognise the void is that annulus' median magnitude.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .detect import Spot
from .patterns import NO_READING, PatternReading, PatternRules, classify_pattern


@dataclass(frozen=True)
class ReadParams:
    ring_inner_mm: float = 1.5
    ring_width_mm: float = 3.0
    void_fraction: float = 0.3


@dataclass(frozen=True)
class SpotReadings:
    upper: PatternReading        # superior border slice
    lower: PatternReading        # inferior border slice
    central: PatternReading
    upper_slice: int
    lower_slice: int


def read_slice(phase: np.ndarray, magnitude: np.ndarray, spot: Spot, slice_index: int,
               voxel_size_mm: tuple[float, float, float], noise_sigma: float, *, wrapped: bool = True,
               params: ReadParams = ReadParams(), rules: PatternRules = PatternRules()) -> PatternReading:
    """Pattern reading of ``spot`` on one slice of the (background-removed) ``phase`` volume."""
    px = min(voxel_size_mm[1], voxel_size_mm[2])
    pad = int(np.ceil((params.ring_inner_mm + params.ring_width_mm) / px)) + 1
    _, br, bc = spot.bbox
    r0, r1 = max(br.start - pad, 0), min(br.stop + pad, phase.shape[1])
    c0, c1 = max(bc.start - pad, 0), min(bc.stop + pad, phase.shape[2])
    fp = np.zeros((r1 - r0, c1 - c0), bool)
    fp[br.start - r0:br.stop - r0, bc.start - c0:bc.stop - c0] = spot.footprint_on(slice_index)
    if not fp.any():
        return NO_READING
    ph = phase[slice_index, r0:r1, c0:c1].astype(np.float64)
    mag = magnitude[slice_index, r0:r1, c0:c1].astype(np.float64)
    inner = int(round(params.ring_inner_mm / px))
    outer = inner + max(1, int(round(params.ring_width_mm / px)))
    d_in = ndi.binary_dilation(fp, iterations=inner) if inner > 0 else fp
    d_out = ndi.binary_dilation(fp, iterations=outer)
    ring = d_out & ~d_in
    if ring.sum() < 4:
        return NO_READING
    tissue = float(np.median(mag[ring]))
    ring &= mag >= params.void_fraction * tissue
    if ring.sum() < 4 or tissue <= 0:
        return NO_READING
    if wrapped:
        ref = float(np.angle(np.sum(mag[ring] * np.exp(1j * ph[ring]))))
        rel = np.angle(np.exp(1j * (ph - ref)))
    else:
        ref = float(np.sum(mag[ring] * ph[ring]) / np.sum(mag[ring]))
        rel = ph - ref
    return classify_pattern(rel, mag, fp, noise_sigma=noise_sigma, tissue_level=tissue, rules=rules)


def read_spot(phase: np.ndarray, magnitude: np.ndarray, spot: Spot, voxel_size_mm: tuple[float, float, float],
              noise_sigma: float, superior_is_higher_index: bool, *, wrapped: bool = True,
              params: ReadParams = ReadParams(), rules: PatternRules = PatternRules()) -> SpotReadings:
    """Readings on the superior and inferior border slices and on the central slice."""
    first, last = spot.slice_indices[0], spot.slice_indices[-1]
    upper_slice, lower_slice = (last, first) if superior_is_higher_index else (first, last)
    kw = dict(wrapped=wrapped, params=params, rules=rules)
    up = read_slice(phase, magnitude, spot, upper_slice, voxel_size_mm, noise_sigma, **kw)
    lo = up if lower_slice == upper_slice else read_slice(phase, magnitude, spot, lower_slice, voxel_size_mm,
                                                           noise_sigma, **kw)
    if spot.central_slice == upper_slice:
        ce = up
    elif spot.central_slice == lower_slice:
        ce = lo
    else:
        ce = read_slice(phase, magnitude, spot, spot.central_slice, voxel_size_mm, noise_sigma, **kw)
    return SpotReadings(up, lo, ce, upper_slice, lower_slice)
