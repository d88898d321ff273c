"""Is a border reading this spot's field? The fitted dipole's prediction of each border reading.

On thick slices (2D T2*-GRE, 4-5 mm) a spot spans one or two slices and the detector follows it
onto up to two faint slices each side (partial volume, the dipole's axial lobes). The border
reading is then taken on a slice whose centre can lie 8-10 mm from the source, where a 1-2 mm
sphere's field has fallen to a few hundredths of a radian: a strong phase offset read there
(another source, a vein's field, a background-removal residual) is not this spot's pattern, yet it
can make the upper and lower borders "disagree" and leave the spot ``indeterminate``.

The dipole fit (:mod:`plugin.method.dipolefit`) says where the source sits and how strong it is.
:func:`predicted_border_z` puts the fitted dipole's phase (voxel-averaged along B0 with
:func:`plugin.method.dipolefit.slab_kernel`, the same model the fit used) on the slice a border was
read on and reads it exactly as the border was read (:func:`plugin.method.spotread.read_slice`:
same footprint, same tissue ring, same magnitude weights), which gives the mean phase offset, in
noise s.d., that the spot itself can produce there. With the moment at the upper end of its 95 %
interval this is the most the spot can explain. A reading is *out of the spot's reach* when that
most stays below ``max_reach_z`` (1) noise s.d. (the slice lies beyond where the spot's field can
be seen at all) and the reading still shows an offset of more than ``excess_z`` (3) noise s.d.
beyond it: that offset is another source's field, not this spot's. Only out-of-reach readings are
left out, never readings near the source that the fit merely predicts to be weaker: on 5 mm slices
the fit's moment and centre can be confidently wrong (held-out seed 41: a 0.29 ppm calcification
fitted paramagnetic at z 6.4 predicted at most |z| 2.3 on the border slice that read it right at
z +6.0; an earlier version that left out any reading 3 s.d. beyond the prediction turned that
abstention into a wrong call).

:func:`discount_unexplained_borders` uses this only where it resolves conflicting evidence: when the
two readable borders disagree and exactly one of them is unexplained, that one is left out (its
pattern is still reported) and the spot is interpreted on the other border and the fit as usual
(:func:`plugin.method.interpret.interpret` / ``combine``: a single border must still be strong
enough, and the fit must agree or be outweighed). The prediction uses the fit's sign-free
strength only (``|M| + 1.96 SE``), so the rule never picks a side by the fit's sign, and only a
decisive fit (``|z| >= fit_min_z``) is trusted to say what the spot can produce: on the realistic
cohort (seed 7, left-handed rendering) a z-2.3 fit of the wrong sign and a fifth of the true moment
would otherwise have discarded the right border (z +7) of a 0.44 ppm microbleed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from plugin.method.detect import DetectedSpot
from plugin.method.dipolefit import DipoleFit, FitParams, slab_kernel
from plugin.method.interpret import InterpretRules, is_readable
from plugin.method.patterns import PatternReading
from plugin.method.spotread import ReadParams, SpotReadings, read_slice


@dataclass(frozen=True)
class ExplainRules:
    max_reach_z: float = 1.0    # the fitted dipole (upper 95 % moment) produces less than this there: out of its reach ...
    excess_z: float = 3.0       # ... and the observed |z| exceeds that by this: not this spot's
    ci_z: float = 1.959964      # the moment's upper bound: |M| + ci_z * SE


@dataclass(frozen=True)
class BorderCheck:
    """One border reading against the fitted dipole."""

    observed_z: float
    predicted_max_z: float       # |z| the fitted dipole produces there at the upper end of its moment's 95 % interval
    read_slice: int

    def unexplained(self, rules: ExplainRules = ExplainRules()) -> bool:
        """The slice lies beyond the spot's reach (its field there stays below ``max_reach_z`` noise
        s.d. even at the upper moment) and the reading shows a clear offset all the same."""
        return self.predicted_max_z < rules.max_reach_z and abs(self.observed_z) > self.predicted_max_z + rules.excess_z


def predicted_border_z(spot: DetectedSpot, fit: DipoleFit, magnitude: np.ndarray, read_slice_index: int,
                       footprint_from: int, voxel_size_mm: tuple[float, float, float], noise_sigma: float,
                       moment_rad_mm3: float, *, fit_params: FitParams = FitParams(),
                       read_params: ReadParams = ReadParams()) -> float:
    """|mean phase offset| in noise s.d. that a dipole of phase moment ``moment_rad_mm3`` at the
    fit's centre produces on one border reading (module docstring). Axial stacks (B0 along the
    slice axis), as the border method itself requires."""
    if fit.center_index is None or moment_rad_mm3 == 0.0:
        return 0.0
    vox = np.asarray(voxel_size_mm, float)
    px = float(min(vox[1], vox[2]))
    pad = int(np.ceil((read_params.ring_inner_mm + read_params.ring_width_mm) / px)) + 1
    _, br, bc = spot.bbox
    r0, r1 = max(br.start - pad, 0), min(br.stop + pad, magnitude.shape[1])
    c0, c1 = max(bc.start - pad, 0), min(bc.stop + pad, magnitude.shape[2])
    cz, cy, cx = fit.center_index
    rr = (np.arange(r0, r1) - cy) * vox[1]
    cc = (np.arange(c0, c1) - cx) * vox[2]
    rz = np.full((r1 - r0, c1 - c0), (read_slice_index - cz) * vox[0])
    a_model = max(fit_params.model_radius_fraction * float(spot.diameter_mm) / 2.0, 0.25 * float(vox[1:].min()))
    n_ip = int(np.clip(np.ceil(float(vox[1:].max()) / fit_params.inplane_sample_mm), 1, 4))
    k = slab_kernel((rz, rr[:, None] + 0.0 * rz, cc[None, :] + 0.0 * rz), vox, radius_mm=a_model, n_inplane=n_ip)
    model = np.zeros((1,) + magnitude.shape[1:], float)
    model[0, r0:r1, c0:c1] = moment_rad_mm3 * k
    # read it as the border was read: one-slice volumes, the spot's footprint taken from its own slice
    mag1 = magnitude[read_slice_index:read_slice_index + 1]
    shifted = replace(spot, bbox=(slice(spot.bbox[0].start - footprint_from, spot.bbox[0].stop - footprint_from),
                                  spot.bbox[1], spot.bbox[2]))
    r = read_slice(model, mag1, shifted, 0, voxel_size_mm, noise_sigma, wrapped=False, params=read_params,
                   footprint_from=0)
    return float(abs(r.z_score))


def check_border(spot: DetectedSpot, fit: DipoleFit, magnitude: np.ndarray, reading: PatternReading,
                 read_slice_index: int, footprint_from: int, voxel_size_mm: tuple[float, float, float],
                 noise_sigma: float, rules: ExplainRules = ExplainRules(),
                 fit_params: FitParams = FitParams()) -> BorderCheck:
    m_hi = abs(fit.moment_rad_mm3) + rules.ci_z * abs(fit.moment_se_rad_mm3)
    z_max = predicted_border_z(spot, fit, magnitude, read_slice_index, footprint_from, voxel_size_mm, noise_sigma,
                               m_hi, fit_params=fit_params)
    return BorderCheck(float(reading.z_score), z_max, int(read_slice_index))


@dataclass(frozen=True)
class DiscountedBorders:
    upper: PatternReading
    lower: PatternReading
    note: str = ""              # why a reading was left out ("" when none was)


def discount_unexplained_borders(readings: SpotReadings, spot: DetectedSpot, fit: Optional[DipoleFit],
                                 magnitude: np.ndarray, voxel_size_mm: tuple[float, float, float], noise_sigma: float,
                                 interpret_rules: InterpretRules = InterpretRules(),
                                 rules: ExplainRules = ExplainRules(),
                                 fit_params: FitParams = FitParams()) -> DiscountedBorders:
    """The border readings to interpret: as read, unless both are readable, they disagree, the fit is
    decisive (``|z| >= interpret_rules.fit_min_z``: a fit that could not decide the sign alone has
    not pinned down the source either, and its prediction is no ground to discard a reading) and
    exactly one reading is beyond what the fitted dipole can produce on its slice (module
    docstring); that one is then replaced by an unreadable copy (its pattern kept, its offset and
    signed pixels not) and ``note`` says why."""
    up, lo = readings.upper, readings.lower
    same = (up is lo) or (readings.upper_read_slice == readings.lower_read_slice and up == lo)
    if (fit is None or not fit.usable or fit.abs_z < interpret_rules.fit_min_z or same
            or not (is_readable(up, interpret_rules) and is_readable(lo, interpret_rules))
            or up.dark_dominant == lo.dark_dominant):
        return DiscountedBorders(up, lo)
    checks = []
    for reading, border, read_k in ((up, readings.upper_slice, readings.upper_read_slice),
                                    (lo, readings.lower_slice, readings.lower_read_slice)):
        k = border if read_k is None else read_k
        checks.append(check_border(spot, fit, magnitude, reading, k, border, voxel_size_mm, noise_sigma, rules,
                                   fit_params))
    bad = [c.unexplained(rules) for c in checks]
    if bad.count(True) != 1:
        return DiscountedBorders(up, lo)
    i = bad.index(True)
    c = checks[i]
    name = ("upper", "lower")[i]
    dropped = replace((up, lo)[i], signed_weight=0.0, z_score=0.0, dark_fraction=0.0, bright_fraction=0.0)
    note = (f"{name} border reading (slice {c.read_slice}, mean phase offset z {c.observed_z:+.1f}) left out: the fitted "
            f"dipole produces at most |z| {c.predicted_max_z:.1f} there (upper 95 % moment), so that offset is another "
            f"source's field, not this spot's")
    return DiscountedBorders(dropped if i == 0 else up, lo if i == 0 else dropped, note)
