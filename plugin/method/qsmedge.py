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

The same walk also reads the map's *fine* spread per slice (the robust spread of the map minus its
smoothed self, inside the mask): on thick 2D slices the end slices' artefact is not a broad shading
but rings a few pixels apart (residual phase wraps where the field varies fast through a 5 mm slice
at the vertex and the skull base), which the smoothing averages away. A slice whose fine spread
exceeds the same ``ratio`` x that of the central slices is unreliable too. Seen on a realistic
0.9 x 0.9 x 5 mm study (benchmarks/qsm.md, ninth session): its top slice's rings had a fine spread of
0.174 ppm against 0.030 in the central slices, its smoothed spread 0.041 against 0.050.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class EdgeParams:
    smooth_mm: float = 4.0          # in-plane Gaussian sigma of the smoothing (mm)
    ratio: float = 2.0              # spread above this x the central slices' median: unreliable
    max_fraction: float = 0.25      # at most this fraction of the mask's slices, from each end
    min_mask_fraction: float = 0.05  # a slice with less of the mask than this x its largest slice: unreliable
    workers: int = 2                # threads smoothing the central slices (the same values as one)


def slice_spreads_ppm(chi_ppm: np.ndarray, mask: np.ndarray, voxel_mm, smooth_mm: float = 4.0,
                      slices=None, *, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per slice (``slices``: only those; default every slice), the robust spread (ppm) of the
    in-plane smoothed map inside the mask, and that of the map minus its smoothed self (the fine
    spread); NaN where the mask is empty or the slice not asked for.
    Each slice is filtered on the mask's bounding box plus the kernel's radius: outside it the
    masked map and the mask are zero (``mode="constant"``), so the values inside the mask are
    the same as filtering the whole slice (tests/test_qsm_recovery.py), at a fraction of the cost.
    ``workers``: slices smoothed on that many threads (scipy.ndimage releases the GIL in its
    filters; the same values as one thread)."""
    chi = np.asarray(chi_ppm, np.float32)
    mask = np.asarray(mask, bool)
    sig = (smooth_mm / voxel_mm[1], smooth_mm / voxel_mm[2])
    smooth, fine = np.full(chi.shape[0], np.nan), np.full(chi.shape[0], np.nan)
    wanted = [int(k) for k in (np.flatnonzero(mask.any(axis=(1, 2))) if slices is None else slices)]
    if workers > 1 and len(wanted) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            values = list(pool.map(lambda k: _slice_spread(chi[k], mask[k], sig), wanted))
    else:
        values = [_slice_spread(chi[k], mask[k], sig) for k in wanted]
    for k, v in zip(wanted, values):
        if v is not None:
            smooth[k], fine[k] = v
    return smooth, fine


def slice_spread_ppm(chi_ppm: np.ndarray, mask: np.ndarray, voxel_mm, smooth_mm: float = 4.0,
                     slices=None, *, workers: int = 1) -> np.ndarray:
    """The smoothed map's spread per slice alone (:func:`slice_spreads_ppm`)."""
    return slice_spreads_ppm(chi_ppm, mask, voxel_mm, smooth_mm, slices, workers=workers)[0]


def _robust_spread(v: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(v - np.median(v))))


def _slice_spread(chi: np.ndarray, mk: np.ndarray, sig: tuple[float, float]) -> Optional[tuple[float, float]]:
    """(robust spread of one slice's smoothed map inside its mask ``mk``, that of the map minus the
    smoothed map there); None when empty. ``ndi.gaussian_filter(x, sig, mode="constant")`` done as its two passes (rows, then columns;
    the same float32 intermediate), the second only on the rows the mask spans: the values inside
    the mask are the same numbers as the whole filter's."""
    radius = [int(4.0 * s + 0.5) for s in sig]   # scipy's truncate 4
    rows, cols = np.flatnonzero(mk.any(axis=1)), np.flatnonzero(mk.any(axis=0))
    if rows.size == 0:
        return None
    r0 = max(0, rows[0] - radius[0])
    box = (slice(r0, rows[-1] + radius[0] + 1), slice(max(0, cols[0] - radius[1]), cols[-1] + radius[1] + 1))
    inner = slice(rows[0] - r0, rows[-1] + 1 - r0)    # the mask's rows within the box
    mb = mk[box]
    m = mb.astype(np.float32)

    def smooth(x: np.ndarray) -> np.ndarray:
        x = ndi.gaussian_filter1d(x, sig[0], axis=0, mode="constant")[inner]
        return ndi.gaussian_filter1d(x, sig[1], axis=1, mode="constant")

    num = smooth(chi[box] * m)
    den = smooth(m)
    mi = mb[inner]
    vals = num[mi] / np.maximum(den[mi], 1e-6)
    return _robust_spread(vals), _robust_spread(chi[box][inner][mi] - vals)


def unreliable_edge_slices(chi_ppm: np.ndarray, mask: np.ndarray, voxel_mm,
                           params: EdgeParams = EdgeParams()) -> tuple[int, ...]:
    """Indices of the unreliable end slices of the map (module docstring), ascending."""
    mask = np.asarray(mask, bool)
    area = mask.sum(axis=(1, 2))
    present = np.flatnonzero(area > 0)
    if present.size < 3:
        return ()
    first, last = int(present[0]), int(present[-1])
    n = last - first + 1
    limit = max(1, int(params.max_fraction * n))
    # the central slices (the reference) now; an end slice only when the walk below reaches it
    spread, fine = slice_spreads_ppm(chi_ppm, mask, voxel_mm, params.smooth_mm,
                                     slices=[k for k in range(first + n // 4, last - n // 4 + 1) if area[k] > 0],
                                     workers=params.workers)
    core = spread[first + n // 4: last - n // 4 + 1]
    core_fine = fine[first + n // 4: last - n // 4 + 1]
    core, core_fine = core[np.isfinite(core)], core_fine[np.isfinite(core_fine)]
    if not core.size:   # no central slice to compare with: every slice's spread
        spread, fine = slice_spreads_ppm(chi_ppm, mask, voxel_mm, params.smooth_mm, workers=params.workers)
    reference = float(np.median(core)) if core.size else float(np.nanmedian(spread))
    reference_fine = float(np.median(core_fine)) if core_fine.size else float(np.nanmedian(fine))
    small = area < params.min_mask_fraction * area.max()
    done = {k for k in range(first + n // 4, last - n // 4 + 1)}

    def bad(k: int) -> bool:
        if k not in done and area[k] > 0:
            one, one_fine = slice_spreads_ppm(chi_ppm, mask, voxel_mm, params.smooth_mm, slices=[k])
            spread[k], fine[k] = one[k], one_fine[k]
            done.add(k)
        return bool(small[k] or not np.isfinite(spread[k]) or spread[k] > params.ratio * reference
                    or fine[k] > params.ratio * reference_fine)

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
