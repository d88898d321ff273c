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
    the same as filtering the whole slice (tests/test_qsm_recovery.py), at a fraction of the cost;
    on fine pixels on a coarser grid, within 1-3 % of it (:func:`_slice_spread`).
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


def _block_sums(x: np.ndarray, f: int) -> np.ndarray:
    """Sums over ``f`` x ``f`` pixel blocks (the array zero-padded to a multiple of ``f``)."""
    if f == 1:
        return x
    r, c = -(-x.shape[0] // f) * f, -(-x.shape[1] // f) * f
    padded = np.zeros((r, c), x.dtype)
    padded[:x.shape[0], :x.shape[1]] = x
    out = padded[::f, ::f].copy()     # f * f strided adds: several times faster than a 4-axis sum
    for i in range(f):
        for j in range(f):
            if i or j:
                out += padded[i::f, j::f]
    return out


#: the in-plane smoothing runs on a grid coarsened by whole pixels while its sigma stays at least
#: this many coarse pixels (block sums, then bilinear interpolation back: see :func:`_slice_spread`)
COARSE_SIGMA_PX = 4.0


def _slice_spread(chi: np.ndarray, mk: np.ndarray, sig: tuple[float, float]) -> Optional[tuple[float, float]]:
    """(robust spread of one slice's smoothed map inside its mask ``mk``, that of the map minus the
    smoothed map there); None when empty. The smoothing is ``ndi.gaussian_filter(x, sig,
    mode="constant")`` of the masked map over that of the mask (normalised convolution), on the
    mask's bounding box plus the kernel's reach, the second pass only on the rows the mask spans.

    Where the kernel is wide in pixels (sigma >= 2 x :data:`COARSE_SIGMA_PX`: 0.45 mm pixels, sigma
    8.9 px), it runs on ``f`` x ``f`` block sums (sigma / f) and is interpolated back bilinearly
    (issue 15: 8 x fewer operations, 0.35 s of a 512 x 512 x 60 study's way to the SR). The block
    adds an ``f``-pixel box to a Gaussian of sigma >= 8 px, and the interpolation's error on a
    curve that smooth is far below the spreads compared (tests/test_qsm_recovery.py measures it
    against the full-grid filter)."""
    f = max(1, int(min(sig) // COARSE_SIGMA_PX))
    rows, cols = np.flatnonzero(mk.any(axis=1)), np.flatnonzero(mk.any(axis=0))
    if rows.size == 0:
        return None
    if f == 1:
        smoothed = _smooth_full(chi, mk, sig, rows, cols)
    else:
        smoothed = _smooth_coarse(chi, mk, sig, rows, cols, f)
    r0, c0 = rows[0], cols[0]
    mi = mk[r0:rows[-1] + 1, c0:cols[-1] + 1]
    num, den = smoothed
    vals = num[mi] / np.maximum(den[mi], 1e-6)
    return _robust_spread(vals), _robust_spread(chi[r0:rows[-1] + 1, c0:cols[-1] + 1][mi] - vals)


def _smooth_full(chi, mk, sig, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian of the masked map and of the mask on the full grid, over the mask's bounding box."""
    radius = [int(4.0 * s + 0.5) for s in sig]   # scipy's truncate 4
    r0, c0 = max(0, rows[0] - radius[0]), max(0, cols[0] - radius[1])
    box = (slice(r0, rows[-1] + radius[0] + 1), slice(c0, cols[-1] + radius[1] + 1))
    inner = (slice(rows[0] - r0, rows[-1] + 1 - r0), slice(cols[0] - c0, cols[-1] + 1 - c0))
    m = mk[box].astype(np.float32)

    def smooth(x: np.ndarray) -> np.ndarray:
        x = ndi.gaussian_filter1d(x, sig[0], axis=0, mode="constant")[inner[0]]
        return ndi.gaussian_filter1d(x, sig[1], axis=1, mode="constant")[:, inner[1]]

    return smooth(chi[box] * m), smooth(m)


def _smooth_coarse(chi, mk, sig, rows, cols, f: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_smooth_full`'s two arrays from ``f`` x ``f`` block sums smoothed with sigma / f and
    interpolated back (bilinear, block centres at their pixels' centre) over the mask's bounding box."""
    sc = (sig[0] / f, sig[1] / f)
    reach = [f * (int(4.0 * s + 0.5) + 2) for s in sc]    # the kernel's reach plus the interpolation's
    r0, c0 = max(0, rows[0] - reach[0]), max(0, cols[0] - reach[1])
    box = (slice(r0, rows[-1] + reach[0] + 1), slice(c0, cols[-1] + reach[1] + 1))
    m = mk[box].astype(np.float32)
    # fine pixel i's centre is at coarse coordinate (i + 0.5) / f - 0.5
    fr = (np.arange(rows[0] - r0, rows[-1] + 1 - r0) + 0.5) / f - 0.5
    fc = (np.arange(cols[0] - c0, cols[-1] + 1 - c0) + 0.5) / f - 0.5
    num, den = (_bilinear_grid(ndi.gaussian_filter(_block_sums(x, f) / float(f * f), sc, mode="constant"), fr, fc)
                for x in (chi[box] * m, m))
    return num, den


def _bilinear_grid(g: np.ndarray, fr: np.ndarray, fc: np.ndarray) -> np.ndarray:
    """``g`` interpolated bilinearly at the rows ``fr`` x columns ``fc`` (coarse pixel coordinates,
    clamped to the grid)."""
    def weights(f: np.ndarray, n: int):
        f = np.clip(f, 0, n - 1)
        i0 = np.minimum(np.floor(f).astype(int), n - 2) if n > 1 else np.zeros(f.shape, int)
        w = (f - i0).astype(np.float32) if n > 1 else np.zeros(f.shape, np.float32)
        return i0, np.minimum(i0 + 1, n - 1), w
    r0, r1, wr = weights(fr, g.shape[0])
    c0, c1, wc = weights(fc, g.shape[1])
    rows = g[r0] * (1 - wr)[:, None] + g[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc)[None, :] + rows[:, c1] * wc[None, :]


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
