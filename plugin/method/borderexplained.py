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
enough, and the fit must agree or be outweighed); and when a lone readable border contradicts a
decisive fit and is unexplained (on any slice thickness: the detector can follow a small spot onto
a dark structure beside it, 2-3 slices from the source), it is left out and the fit decides.
:func:`undo_refuted_rescue` does the same for the aliasing rescue of
:func:`plugin.method.spotread.read_spot` against a decisive fit of the opposite sign. The prediction uses the fit's sign-free
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
from plugin.method.interpret import InterpretRules, is_paramagnetic, is_readable
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


#: the words that mark a border reading left out as another source's field in a call's reason
#: (``benchmarks/confidence_calibration.py`` tells such calls apart by them)
LEFT_OUT_WORDS = ") left out: the fitted"


def _decisive(fit: Optional[DipoleFit], rules: InterpretRules) -> bool:
    return fit is not None and fit.usable and fit.paramagnetic is not None and fit.abs_z >= rules.fit_min_z


def _contradicts_fit(reading: PatternReading, fit: DipoleFit, convention: Optional[str]) -> bool:
    para = is_paramagnetic(bool(reading.dark_dominant), convention) if convention else None
    return para is not None and para != fit.paramagnetic


def discount_unexplained_borders(readings: SpotReadings, spot: DetectedSpot, fit: Optional[DipoleFit],
                                 magnitude: np.ndarray, voxel_size_mm: tuple[float, float, float], noise_sigma: float,
                                 interpret_rules: InterpretRules = InterpretRules(),
                                 rules: ExplainRules = ExplainRules(),
                                 fit_params: FitParams = FitParams(), *,
                                 convention: Optional[str] = None) -> DiscountedBorders:
    """The border readings to interpret: as read, unless the fit is decisive (``|z| >=
    interpret_rules.fit_min_z``: a fit that could not decide the sign alone has not pinned down the
    source either, and its prediction is no ground to discard a reading) and one reading is beyond
    what the fitted dipole can produce on its slice (module docstring) while it is all that stands
    against other evidence:

    * both borders are readable, they disagree, and exactly one of them is out of reach;
    * or only one border is readable, it contradicts the fit's sign (``convention`` given), and it is
      out of reach. The detector can follow a small spot onto a dark structure next to it
      (air/tissue dephasing in the posterior fossa, cortex texture): on the realistic 3D SWI cohort
      with six echoes (2026-12-03) a 2.6 mm, 0.043 ppm and a 2.3 mm, 0.12 ppm microbleed spanned
      4 and 6 slices, and their one readable border, 6-7 mm from the source, read another
      structure's field (z +7.8 and +6.6 against the dipole's at most 0.2 and 0.8) against fits of
      z 5.9 and 10.1. A lone border that agrees with the fit is never left out (it changes no call).

    That reading is then replaced by an unreadable copy (its pattern kept, its offset and signed
    pixels not) and ``note`` says why."""
    up, lo = readings.upper, readings.lower
    same = (up is lo) or (readings.upper_read_slice == readings.lower_read_slice and up == lo)
    if not _decisive(fit, interpret_rules) or same:
        return DiscountedBorders(up, lo)
    readable = [is_readable(r, interpret_rules) for r in (up, lo)]
    if all(readable):
        if up.dark_dominant == lo.dark_dominant:
            return DiscountedBorders(up, lo)
        candidates = (0, 1)
    elif any(readable):
        i = readable.index(True)
        if not _contradicts_fit((up, lo)[i], fit, convention):  # type: ignore[arg-type]
            return DiscountedBorders(up, lo)
        candidates = (i,)
    else:
        return DiscountedBorders(up, lo)
    sides = ((up, readings.upper_slice, readings.upper_read_slice), (lo, readings.lower_slice, readings.lower_read_slice))
    checks = {}
    for i in candidates:
        reading, border, read_k = sides[i]
        checks[i] = check_border(spot, fit, magnitude, reading, border if read_k is None else read_k, border,  # type: ignore[arg-type]
                                 voxel_size_mm, noise_sigma, rules, fit_params)
    bad = [i for i, c in checks.items() if c.unexplained(rules)]
    if len(bad) != 1:
        return DiscountedBorders(up, lo)
    i = bad[0]
    c = checks[i]
    name = ("upper", "lower")[i]
    dropped = replace((up, lo)[i], signed_weight=0.0, z_score=0.0, dark_fraction=0.0, bright_fraction=0.0)
    note = (f"{name} border reading (slice {c.read_slice}, mean phase offset z {c.observed_z:+.1f}){LEFT_OUT_WORDS} "
            f"dipole produces at most |z| {c.predicted_max_z:.1f} there (upper 95 % moment), so that offset is another "
            f"source's field, not this spot's")
    return DiscountedBorders(dropped if i == 0 else up, lo if i == 0 else dropped, note)


def undo_refuted_rescue(readings: SpotReadings, fit: Optional[DipoleFit], convention: Optional[str],
                        interpret_rules: InterpretRules = InterpretRules()) -> tuple[SpotReadings, str]:
    """The readings to use when the slices beyond two disagreeing borders were read instead
    (``plugin.method.spotread.read_spot``'s aliasing rescue, ``resolved_by_outer``): those, unless a
    decisive dipole fit (``|z| >= fit_min_z``, residuals within ``fit_max_rms_override``) gives the
    opposite sign. The rescue is a reading rule for a strongly magnetised spot whose border phase
    wraps; it carries no evidence of its own that the phase wrapped, while the fit models the whole
    field around the spot over every slice. Against such a fit the borders as read (disagreeing)
    are returned, with a note; the spot is then interpreted as any spot with conflicting borders
    (``plugin.method.interpret.conflicting_borders_call`` or ``indeterminate``). On the realistic
    3D SWI cohort with six echoes (2026-12-03) the rescue read a 2.1 mm, 0.028 ppm microbleed (whose
    phase cannot wrap: about 0.4 rad at its surface) as a calcification at confidence 0.999, both
    slices beyond bright at z +2, against a fit of z 3.3; and a 2.8 mm, 0.42 ppm microbleed as
    diamagnetic against a fit of z 23.8 and QSM z 14. On 1 mm isotropic GRE, where it rescues most
    often, every rescue agreed with its fit."""
    if not readings.resolved_by_outer or readings.unrescued is None or not _decisive(fit, interpret_rules):
        return readings, ""
    if fit.residual_rms > interpret_rules.fit_max_rms_override:  # type: ignore[union-attr]
        return readings, ""
    if not _contradicts_fit(readings.upper, fit, convention):  # type: ignore[arg-type]
        return readings, ""
    side = "paramagnetic" if fit.paramagnetic else "diamagnetic"  # type: ignore[union-attr]
    return readings.unrescued, (f"the slices beyond the disagreeing borders agreed against a decisive dipole fit "
                                f"({side}, z {fit.abs_z:.1f}): read as aliasing, not used")  # type: ignore[union-attr]
