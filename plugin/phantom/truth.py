"""Ground truth of a phantom lesion as a reader would see it: visible slices, border and central
slices, and the expected phase patterns (1-6 of the method paper's Fig 2, as displayed).

Computed from the noise-free, background-free source signal of :func:`plugin.phantom.render.render`
(``PhantomImages.source_factor``: relative magnitude and source phase at the longest echo, in the
vendor's handedness), so a Siemens microbleed is bright (pattern 2) and a GE one dark (1).

Rules (documented so a reader can check them):

* visible on a slice: some voxel within ``a + 1.5 mm`` in-plane of the centre has relative
  magnitude below ``VISIBLE_BELOW`` (0.7); the visible slices are the contiguous run around the
  slice holding the centre; ``n_slices`` counts them; the upper border is the most superior.
* the spot on a slice: the in-plane connected region touching that disc and darker than half
  the spot's depth, ``(1 + darkest) / 2`` (full width at half depth: what a reader outlines; a
  faint opposite-sign rim outside it, as in the paper's Fig 3B, is not part of the spot). Voxels with |phase| < ``NEUTRAL_RAD`` (0.1 rad) count as neither dark nor bright (e.g. the
  signal-poor interior of a sphere, whose Lorentz-corrected field is 0).
* phase border (the paper reads "the edge of each dark spot on phase images"): the outermost
  slices, contiguous with the central one, where some voxel of the disc has
  |phase| >= ``PHASE_VISIBLE_RAD``; there the spot is the connected region of the disc with
  |phase| >= half the disc's largest |phase|. Reported as ``phase_upper_border_slice``,
  ``phase_lower_border_slice`` and ``phase_border_pattern`` (upper).
* pattern: dark fraction f = dark / (dark + bright). f >= 0.9: 1; f <= 0.1: 2. Otherwise split
  the spot into a core (within half its equivalent radius of its centroid) and a ring: ring dark
  and core bright with f > 0.5: 3; ring bright and core dark with f <= 0.5: 4; else 5 (f > 0.5)
  or 6.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

VISIBLE_BELOW = 0.9
NEUTRAL_RAD = 0.1
PHASE_VISIBLE_RAD = 0.3     # ~10 noise SDs at SNR 40: the spot still shows on the phase image


def spot_mask(relative_magnitude: np.ndarray, centre_rc: tuple[float, float], radius_px: tuple[float, float],
              *, half_depth: bool = True) -> np.ndarray:
    """The dark spot on one slice: the connected region touching the centre disc that is darker
    than half the spot's depth (``(1 + min) / 2``, i.e. the full width at half depth), or than
    VISIBLE_BELOW with ``half_depth=False``. Empty if nothing in the disc is below VISIBLE_BELOW."""
    nr, nc = relative_magnitude.shape
    rr, cc = np.ogrid[:nr, :nc]
    disc = ((rr - centre_rc[0]) / radius_px[0]) ** 2 + ((cc - centre_rc[1]) / radius_px[1]) ** 2 <= 1.0
    darkest = float(relative_magnitude[disc].min()) if disc.any() else 1.0
    if darkest >= VISIBLE_BELOW:
        return np.zeros(relative_magnitude.shape, bool)
    low = relative_magnitude < ((1.0 + darkest) / 2.0 if half_depth else VISIBLE_BELOW)
    if not (low & disc).any():
        return np.zeros_like(low)
    labels, _ = ndi.label(low)
    keep = np.unique(labels[low & disc])
    return np.isin(labels, keep[keep > 0])


def _disc(shape, centre_rc, radius_px) -> np.ndarray:
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return ((rr - centre_rc[0]) / radius_px[0]) ** 2 + ((cc - centre_rc[1]) / radius_px[1]) ** 2 <= 1.0


def phase_spot_mask(phase_rad: np.ndarray, centre_rc, radius_px) -> np.ndarray:
    """The spot as seen on a phase slice: connected region of the disc with |phase| at least half
    the disc's largest |phase| (touching the voxel where that maximum is)."""
    disc = _disc(phase_rad.shape, centre_rc, radius_px)
    mag = np.where(disc, np.abs(phase_rad), 0.0)
    peak = float(mag.max())
    if peak < PHASE_VISIBLE_RAD:
        return np.zeros(phase_rad.shape, bool)
    labels, _ = ndi.label(mag >= 0.5 * peak)
    return labels == labels.flat[int(np.argmax(mag))]


def classify_pattern(phase_rad: np.ndarray, mask: np.ndarray) -> int | None:
    """Pattern 1-6 of the masked spot (display: negative = black). None if nothing is signed."""
    if not mask.any():
        return None
    ph = phase_rad[mask]
    dark = ph < -NEUTRAL_RAD
    bright = ph > NEUTRAL_RAD
    n = int(dark.sum() + bright.sum())
    if n == 0:
        return None
    f = dark.sum() / n
    if f >= 0.9:
        return 1
    if f <= 0.1:
        return 2
    rr, cc = np.nonzero(mask)
    r0, c0 = rr.mean(), cc.mean()
    eq_radius = np.sqrt(mask.sum() / np.pi)
    core = np.hypot(rr - r0, cc - c0) <= 0.5 * eq_radius
    def dark_majority(sel):
        d, b = (dark[sel]).sum(), (bright[sel]).sum()
        return None if d + b == 0 else d > b
    core_dark, ring_dark = dark_majority(core), dark_majority(~core)
    if ring_dark is True and core_dark is False and f > 0.5:
        return 3
    if ring_dark is False and core_dark is True and f <= 0.5:
        return 4
    return 5 if f > 0.5 else 6


def lesion_truth(images, lesion) -> dict:
    """The GUIDE truth fields of one sphere lesion plus expected slices and patterns."""
    grid = images.grid
    s_idx, r_idx, c_idx = grid.index_of(lesion.center_lps_mm)
    ds, dr, dc = grid.voxel_mm
    reach_mm = lesion.radius_mm + 1.5
    radius_px = (reach_mm / dr, reach_mm / dc)
    centre_slice = int(np.clip(np.round(s_idx), 0, grid.shape[0] - 1))
    # work on a local crop (a spot never reaches 8 mm beyond its disc in-plane or 15 mm through-plane)
    r0 = max(0, int(r_idx - (reach_mm + 8.0) / dr)); c0 = max(0, int(c_idx - (reach_mm + 8.0) / dc))
    r1 = int(r_idx + (reach_mm + 8.0) / dr) + 2; c1 = int(c_idx + (reach_mm + 8.0) / dc) + 2
    crop = images.source_factor[:, r0:r1, c0:c1]
    rel = np.abs(crop)
    phase = np.angle(crop)
    r_idx, c_idx = r_idx - r0, c_idx - c0

    def visible(k: int) -> bool:
        return 0 <= k < grid.shape[0] and bool(spot_mask(rel[k], (r_idx, c_idx), radius_px).any())

    out = lesion.truth()
    if not visible(centre_slice):
        out.update(n_slices=0, slice_indices=[], central_slice=centre_slice)
        return out
    lo = hi = centre_slice
    while visible(lo - 1):
        lo -= 1
    while visible(hi + 1):
        hi += 1
    # slices run inferior -> superior (LPS z grows with the slice index)
    patterns = {}
    for name, k in (("upper_border", hi), ("lower_border", lo), ("central", centre_slice)):
        m = spot_mask(rel[k], (r_idx, c_idx), radius_px)
        patterns[name] = classify_pattern(phase[k], m)
    def phase_visible(k: int) -> bool:
        if not 0 <= k < grid.shape[0]:
            return False
        return bool(np.abs(phase[k][_disc(phase.shape[1:], (r_idx, c_idx), radius_px)]).max() >= PHASE_VISIBLE_RAD)

    plo = phi = centre_slice
    while phase_visible(plo - 1):
        plo -= 1
    while phase_visible(phi + 1):
        phi += 1
    out.update(
        phase_upper_border_slice=phi,
        phase_lower_border_slice=plo,
        phase_border_pattern=classify_pattern(phase[phi], phase_spot_mask(phase[phi], (r_idx, c_idx), radius_px)),
        phase_lower_border_pattern=classify_pattern(phase[plo], phase_spot_mask(phase[plo], (r_idx, c_idx), radius_px)),
    )
    out.update(
        n_slices=hi - lo + 1,
        slice_indices=list(range(lo, hi + 1)),
        central_slice=centre_slice,
        upper_border_slice=hi,
        lower_border_slice=lo,
        border_pattern=patterns["upper_border"],
        lower_border_pattern=patterns["lower_border"],
        central_pattern=patterns["central"],
        n_slices_intersecting_sphere=int(
            np.floor((lesion.center_lps_mm[2] + lesion.radius_mm - grid.origin_lps_mm[2]) / ds + 0.5)
            - np.ceil((lesion.center_lps_mm[2] - lesion.radius_mm - grid.origin_lps_mm[2]) / ds - 0.5) + 1
        ),
    )
    return out
