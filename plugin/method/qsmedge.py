"""Which end slices of the QSM map are unreliable (the low-frequency ring at the slab's ends).

At the first and last slices of the brain mask the dipole inversion has no field beyond the slab
(the mask is cut by the acquisition, and the background removal erodes there), so the closed-form
map shows a broad ring or a shading a few tenths of a ppm deep over the whole slice
(benchmarks/viewer_GE_qsm.png): a chi read there is the artefact's, not the tissue's.

:func:`unreliable_edge_slices` finds them from the map itself: per slice, the robust spread
(1.4826 x MAD) of the map smoothed in plane (normalised Gaussian convolution inside the mask,
sigma :attr:`EdgeParams.smooth_mm`: keeps the broad artefact, averages out noise and small
spots); a slice is unreliable when its spread exceeds :attr:`EdgeParams.ratio` x the median
spread of the mask's central slices, or when it holds too little of the mask to judge. Walking
inwards from each end of the mask, slices are marked until the first reliable one (at most
:attr:`EdgeParams.max_fraction` of the mask's slices per end). The pipeline leaves those slices
out of the per-spot QSM readings and the QSM series says which they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class EdgeParams:
    smooth_mm: float = 4.0          # in-plane Gaussian sigma of the smoothing (mm)
    ratio: float = 2.0              # spread above this x the central slices' median: unreliable
    max_fraction: float = 0.25      # at most this fraction of the mask's slices, from each end
    min_mask_fraction: float = 0.05  # a slice with less of the mask than this x its largest slice: unreliable


def slice_spread_ppm(chi_ppm: np.ndarray, mask: np.ndarray, voxel_mm, smooth_mm: float = 4.0) -> np.ndarray:
    """Per slice, the robust spread (ppm) of the in-plane smoothed map inside the mask (NaN where
    the mask is empty)."""
    chi = np.asarray(chi_ppm, np.float32)
    mask = np.asarray(mask, bool)
    sig = (0.0, smooth_mm / voxel_mm[1], smooth_mm / voxel_mm[2])
    out = np.full(chi.shape[0], np.nan)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        m = mask[k].astype(np.float32)
        num = ndi.gaussian_filter(chi[k] * m, sig[1:], mode="constant")
        den = ndi.gaussian_filter(m, sig[1:], mode="constant")
        vals = num[mask[k]] / np.maximum(den[mask[k]], 1e-6)
        out[k] = 1.4826 * float(np.median(np.abs(vals - np.median(vals))))
    return out


def unreliable_edge_slices(chi_ppm: np.ndarray, mask: np.ndarray, voxel_mm,
                           params: EdgeParams = EdgeParams()) -> tuple[int, ...]:
    """Indices of the unreliable end slices of the map (module docstring), ascending."""
    mask = np.asarray(mask, bool)
    area = mask.sum(axis=(1, 2))
    present = np.flatnonzero(area > 0)
    if present.size < 3:
        return ()
    spread = slice_spread_ppm(chi_ppm, mask, voxel_mm, params.smooth_mm)
    first, last = int(present[0]), int(present[-1])
    n = last - first + 1
    core = spread[first + n // 4: last - n // 4 + 1]
    core = core[np.isfinite(core)]
    reference = float(np.median(core)) if core.size else float(np.nanmedian(spread))
    limit = max(1, int(params.max_fraction * n))
    small = area < params.min_mask_fraction * area.max()

    def bad(k: int) -> bool:
        return bool(small[k] or not np.isfinite(spread[k]) or spread[k] > params.ratio * reference)

    out: set[int] = set()
    for ends in (range(first, first + limit), range(last, last - limit, -1)):
        for k in ends:
            if not bad(k):
                break
            out.add(k)
    return tuple(sorted(out))


def spot_on_slices(slice_indices, unreliable: tuple[int, ...], margin_slices: int = 1) -> bool:
    """Whether a spot on ``slice_indices`` (its measuring region reaching ``margin_slices``
    further) touches any of the ``unreliable`` slices."""
    if not unreliable or not len(slice_indices):
        return False
    lo, hi = min(slice_indices) - margin_slices, max(slice_indices) + margin_slices
    return any(lo <= k <= hi for k in unreliable)
