"""Read one spot's phase on its border and central slices (glue between detect and patterns).

Border slice (method paper): the upper/lower outermost axial slice on which the spot is visible.
Its phase is homogeneous because that slice lies beyond the lesion's equator, inside the
dipole's 54.7 degree cone where the field has the sign of dchi. With 2.5 mm slices a lesion can
be visible on only one or two slices, and then the outermost visible slice may still contain the
equator (the slice holding the spot's centre), where the opposite-sign equatorial ring
dominates. In that case the reading is taken one slice further out, on the spot's footprint
projected there (the axial lobe: what the paper's readers saw on their border slice), provided
that slice gives a clear reading; otherwise the border slice's own reading stands.

For each slice the phase is taken relative to the local tissue background: the magnitude-weighted
complex mean phase of an annulus of tissue around the footprint (``ring_inner_mm`` beyond the
footprint, ``ring_width_mm`` wide, signal voids excluded). The tissue magnitude level used to
weight pixels and to recognise the void is that annulus' median magnitude.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from plugin.method.detect import DetectedSpot
from plugin.method.patterns import NO_READING, PatternReading, PatternRules, classify_pattern
from dicom_io.phase import wrap_rad


#: Why a border reading was taken one slice further out (what the summary card prints).
EQUATOR_WHY = ("the border slice holds the spot's centre, where the opposite-sign equatorial ring dominates: "
               "read one slice further out, on the spot's footprint projected there")
ALIASING_WHY = ("the upper and lower border slices disagreed (phase aliasing of a large, strongly magnetised "
                "spot): both read one slice further out, where they agree")


@dataclass(frozen=True)
class ReadParams:
    ring_inner_mm: float = 1.5
    ring_width_mm: float = 3.0
    void_fraction: float = 0.3
    beyond_equator: bool = True      # read one slice further out when the border slice holds the centre
    min_outer_margin: float = 0.5
    min_outer_weight: float = 0.5


@dataclass(frozen=True)
class SpotReadings:
    upper: PatternReading        # superior border slice
    lower: PatternReading        # inferior border slice
    central: PatternReading
    upper_slice: int
    lower_slice: int
    resolved_by_outer: bool = False   # borders disagreed; the slices just beyond them agreed
    # The slice each border reading was actually taken on (None: the border slice itself) and
    # why it was another one: the summary card shows the phase of the slice that was read.
    upper_read_slice: Optional[int] = None
    lower_read_slice: Optional[int] = None
    upper_read_why: str = ""
    lower_read_why: str = ""
    # When the slices beyond disagreeing borders were read instead (``resolved_by_outer``): the
    # readings as they were without that, for a caller that finds the rescue refuted
    # (plugin.method.borderexplained.undo_refuted_rescue)
    unrescued: Optional["SpotReadings"] = None


def read_slice(phase: np.ndarray, magnitude: np.ndarray, spot: DetectedSpot, slice_index: int,
               voxel_size_mm: tuple[float, float, float], noise_sigma: float, *, wrapped: bool = True,
               params: ReadParams = ReadParams(), rules: PatternRules = PatternRules(),
               footprint_from: int | None = None) -> PatternReading:
    """Pattern reading of ``spot`` on one slice of the (background-removed) ``phase`` volume.

    ``footprint_from``: take the footprint of that slice of the spot (projection onto a slice
    just beyond the spot); default: the spot's own footprint on ``slice_index``."""
    px = min(voxel_size_mm[1], voxel_size_mm[2])
    pad = int(np.ceil((params.ring_inner_mm + params.ring_width_mm) / px)) + 1
    _, br, bc = spot.bbox
    r0, r1 = max(br.start - pad, 0), min(br.stop + pad, phase.shape[1])
    c0, c1 = max(bc.start - pad, 0), min(bc.stop + pad, phase.shape[2])
    fp = np.zeros((r1 - r0, c1 - c0), bool)
    src = slice_index if footprint_from is None else footprint_from
    fp[br.start - r0:br.stop - r0, bc.start - c0:bc.stop - c0] = spot.footprint_on(src)
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
        rel = wrap_rad(ph - ref)
    else:
        ref = float(np.sum(mag[ring] * ph[ring]) / np.sum(mag[ring]))
        rel = ph - ref
    return classify_pattern(rel, mag, fp, noise_sigma=noise_sigma, tissue_level=tissue, rules=rules)


def read_spot(phase: np.ndarray, magnitude: np.ndarray, spot: DetectedSpot, voxel_size_mm: tuple[float, float, float],
              noise_sigma: float, superior_is_higher_index: bool, *, wrapped: bool = True,
              params: ReadParams = ReadParams(), rules: PatternRules = PatternRules()) -> SpotReadings:
    """Readings on the superior and inferior border slices and on the central slice."""
    first, last = spot.slice_indices[0], spot.slice_indices[-1]
    upper_slice, lower_slice = (last, first) if superior_is_higher_index else (first, last)
    kw = dict(wrapped=wrapped, params=params, rules=rules)
    own = {k: read_slice(phase, magnitude, spot, k, voxel_size_mm, noise_sigma, **kw)
           for k in {upper_slice, lower_slice, spot.central_slice}}
    centre_slice = int(round(spot.center_index[0]))
    step_up = 1 if superior_is_higher_index else -1

    def border(k: int, outward: int) -> tuple[PatternReading, int, str]:
        """(reading, slice read, why not the border slice itself)."""
        out = k + outward
        if not params.beyond_equator or k != centre_slice or not 0 <= out < phase.shape[0]:
            return own[k], k, ""
        outer = read_slice(phase, magnitude, spot, out, voxel_size_mm, noise_sigma, footprint_from=k, **kw)
        if outer.pattern is not None and outer.margin >= params.min_outer_margin and \
                outer.signed_weight >= params.min_outer_weight:
            return outer, out, EQUATOR_WHY
        return own[k], k, ""

    (up, up_k, up_why), (lo, lo_k, lo_why) = border(upper_slice, step_up), border(lower_slice, -step_up)
    plain = SpotReadings(up, lo, own[spot.central_slice], upper_slice, lower_slice,
                         upper_read_slice=up_k, lower_read_slice=lo_k, upper_read_why=up_why, lower_read_why=lo_why)
    if up.pattern is not None and lo.pattern is not None and up.dark_dominant != lo.dark_dominant:
        # Disagreeing borders: a large, strongly magnetised lesion can still alias on its
        # outermost visible slice. The paper's rationale is that the border shows the smallest
        # perceptible phase shift, so look one slice further out on each side (the lobe decays
        # as 1/r^3 there) and accept only if both sides are readable and then agree.
        outer = []
        for k, outward in ((upper_slice, step_up), (lower_slice, -step_up)):
            out = k + outward
            r = (read_slice(phase, magnitude, spot, out, voxel_size_mm, noise_sigma, footprint_from=k, **kw)
                 if 0 <= out < phase.shape[0] else None)
            outer.append(r)
        if all(r is not None and r.pattern is not None and r.margin >= params.min_outer_margin
               and r.signed_weight >= params.min_outer_weight for r in outer) and \
                outer[0].dark_dominant == outer[1].dark_dominant:
            return SpotReadings(outer[0], outer[1], own[spot.central_slice], upper_slice, lower_slice, True,
                                upper_read_slice=upper_slice + step_up, lower_read_slice=lower_slice - step_up,
                                upper_read_why=ALIASING_WHY, lower_read_why=ALIASING_WHY, unrescued=plain)
    return plain
