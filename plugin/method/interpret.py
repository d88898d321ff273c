"""From a spot's phase readings to microbleed / calcification / indeterminate, with a confidence.

Method paper (Fig 2, Phase Pattern and Interpretation): patterns 1/3/5 (dark-dominant) were read
as paramagnetic microbleeds and 2/4/6 (bright-dominant) as diamagnetic calcifications, on GE
(right-handed) phase, and "the upper and lower border slices always appeared in the same
pattern". What is dark for a paramagnetic source depends on the vendor's phase handedness
(GUIDE, Convention): right-handed (GE, Philips): paramagnetic dark; left-handed (Siemens,
Canon): paramagnetic bright. So:

* dominance of the border slices -> paramagnetic or diamagnetic through the series' convention
  (:func:`is_paramagnetic`) -> microbleed or calcification;
* ``indeterminate`` with a reason when the convention is unknown (never a guess), when the upper
  and lower borders disagree, or when the border evidence is weak (no signed pixels, or a
  dominance margin below ``min_margin`` on every readable border).

A border slice is *readable* when it has a pattern, a dominance margin of at least
``min_margin``, signed pixels carrying at least ``min_signed_weight`` of tissue signal, and a
mean phase offset of at least ``min_z`` noise s.d. (a spot with no susceptibility, e.g. a
0.01 ppm microbleed, has a T2* void but no phase signature: its "pattern" is noise). Only two
*readable* borders can disagree: a border whose pattern has no phase signature is noise, not
conflicting evidence. A call resting on a single readable border (the other empty or weak) also
needs a dominance evidence ``margin * sqrt(signed weight)`` of at least
``min_single_border_evidence`` (on the paper phantom such calls were right 92 % of the time
overall but only 87 % below that evidence) **or** a mean phase offset of at least
``min_single_border_z`` noise s.d.: the dominance evidence counts tissue pixels, so on 1 mm voxels
a border footprint of 2-4 pixels never reaches it however clear its phase, while on the merged
pipeline's realistic cohort (all three protocols, 2026-12-01) every single-border reading with
``|z| >= 3`` was right (40/40) and the 4 wrong ones all had ``|z| < 2.8``. A border slice that
holds only the partial-volume edge of the spot (signed weight below ``min_signed_weight``) but
whose dominance, margin and mean offset agree with the readable border (:func:`supports`) adds its
signed weight to the dominance evidence (the paper: both borders show the same pattern).

Confidence (:func:`confidence_from_evidence`) is the probability that the call is right, a
logistic of ``log(1 + z)`` of the weakest readable border and of whether both borders were
readable, whose coefficients were fitted on the phantom cohorts (``benchmarks/accuracy_benchmark.py --calibrate`` prints the
fit and the reliability table; the constants below are what it printed). An indeterminate call
has confidence 0: it asserts nothing.

Border pattern and dipole fit (:func:`combine`). The border reading above is the paper's and is
reported as it is; the dipole fit of :mod:`plugin.method.dipolefit` (a moment with a standard
error, over all slices around the spot) is its quantitative twin. The fit *decides* when its
``|z| >= fit_min_z`` and the border reading does not (a spot on one or two slices has no separate
upper and lower border; weak or single-border evidence), but not when the upper and lower borders
disagree (conflicting evidence: the fit alone was wrong on most such spots), unless the two
borders' pooled mean offset (the stronger border) sides with a decisive fit
(:func:`conflicting_borders_call`); a border whose mean phase offset contradicts its own
dominance is not readable (:func:`offset_agrees_with_dominance`). (A lower
``fit_min_z`` of 2.5 on slices up to 2.5 mm was tried on 2026-12-01: right on 13/13 such spots
of the realistic cohort, but 2 wrong calls on the paper cohort at SNR 15: not adopted.) A single
readable border too weak to decide alone and a fit of ``|z| >= fit_support_z`` (2) of the same sign decide together (two
independent readings: the border's footprint pixels, the fit's surrounding voxels; right on every
such spot of the cohort); of opposite signs they are weighed as a disagreement (below). When both decide
they must agree; when they disagree the call goes to the side whose calibrated evidence is
clearly larger (a logit margin of at least ``override_margin``, the reason names it), otherwise
``indeterminate`` with both readings in the reason. The confidence of a combined call is one
logistic over the evidence for and against it (:func:`combined_confidence`), fitted on the
realistic cohort and the paper cohort (``benchmarks/model_fit_benchmark.py --calibrate`` prints
the fit and the reliability table); it never reaches 1: ``CONFIDENCE_CAP``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Protocol

import numpy as np

from plugin.model import Classification, PhasePattern
from plugin.method.patterns import PatternReading
from dicom_io.vocabulary import Handedness


class FitEvidence(Protocol):
    """What :func:`combine` reads of a ``plugin.method.dipolefit.DipoleFit`` (a protocol, since
    dipolefit imports :func:`is_paramagnetic` from here)."""

    usable: bool
    reason: str
    paramagnetic: Optional[bool]
    moment: Optional[float]
    moment_ci95: Optional[tuple[float, float]]
    moment_unit: str
    residual_rms: float

    @property
    def abs_z(self) -> float: ...

RIGHT_HANDED = Handedness.RIGHT
LEFT_HANDED = Handedness.LEFT
UNKNOWN = "unknown"

# Fitted by `python benchmarks/accuracy_benchmark.py --calibrate` (see benchmarks/accuracy.md):
# P(right) = logistic(INTERCEPT + SLOPE * log(1 + z) + BOTH_BORDERS * [both borders readable]),
# z = the weakest readable border's |mean phase offset| in noise s.d. Fit: paper cohort seeds 0
# and 1, GE + Siemens, conditions default / snr15 / snr8 (1962 calls, 1 wrong: a single-border
# call), maximum likelihood with the two slopes bounded to [0, 3] (with so few errors the
# unbounded fit runs off to infinity; the bound keeps the model smooth).
CALIBRATION_INTERCEPT = 4.119
CALIBRATION_SLOPE = 0.455
CALIBRATION_BOTH_BORDERS = 3.0


@dataclass(frozen=True)
class InterpretRules:
    min_margin: float = 0.2          # dominance margin |dark - bright| below this = weak
    min_signed_weight: float = 0.5   # signed pixels' magnitude weight (tissue-pixel units)
    min_single_border_evidence: float = 1.5   # a call resting on one readable border needs this evidence ...
    min_single_border_z: float = 3.0  # ... or a mean phase offset of this many noise s.d. (module docstring)
    min_z: float = 1.0               # a readable border's mean phase offset must reach this many noise s.d.
    fit_min_z: float = 3.0           # the dipole fit decides when |moment| / SE reaches this
    override_margin: float = 2.0     # border and fit disagree: the side whose logit evidence is larger by this wins
    fit_max_rms_override: float = 1.5  # ... but a fit whose residuals exceed this (noise s.d.) never overrides
    fit_support_z: float = 2.0       # a single readable but weak border and a fit of this |z| agreeing decide together
    pooled_min_z: float = 1.8        # no other call: border offsets and fit pooled (:func:`pooled_offset_call`) decide from this |z|
    pooled_max_opposing_z: float = 1.0  # ... unless either reading points the other way by more than this
    fit_over_conflict_max_slice_mm: float = 3.0  # two disagreeing borders: a decisive, well-fitting fit decides on slices this thin


@dataclass(frozen=True)
class Interpretation:
    classification: Classification
    confidence: float
    reason: str
    border_pattern: Optional[PhasePattern]
    evidence: float                  # x of the calibration logistic (0 when no call)
    paramagnetic: Optional[bool]
    n_readable_borders: int = 0
    z_evidence: float = 0.0          # min |z| over the readable borders
    # After :func:`combine` (dipole fit beside the border reading):
    basis: str = "border"            # border | fit | border+fit | none: what decided the call
    border_call: Optional[bool] = None   # paramagnetic per the border reading alone (None: no call)
    fit_call: Optional[bool] = None      # paramagnetic per the dipole fit alone (None: no call)
    fit_z: float = 0.0                   # |moment| / SE of the fit (0: no usable fit)
    borders_disagree: bool = False       # upper and lower border patterns of opposite dominance
    weak_border_call: Optional[bool] = None  # paramagnetic per a single readable border too weak to decide alone
    border_offset_z: float = 0.0         # border slices' pooled mean phase offset (:func:`border_offset_z`), + = paramagnetic


def is_paramagnetic(dark_dominant: bool, convention: str) -> Optional[bool]:
    """Dark/bright dominance -> paramagnetic? None when the convention is unknown.

    >>> is_paramagnetic(True, "right-handed"), is_paramagnetic(True, "left-handed")
    (True, False)
    """
    if convention == RIGHT_HANDED:
        return dark_dominant
    if convention == LEFT_HANDED:
        return not dark_dominant
    return None


def classification_for(paramagnetic: bool) -> Classification:
    return Classification.MICROBLEED if paramagnetic else Classification.CALCIFICATION


def dominance_evidence(readings: list[PatternReading]) -> float:
    """The weakest readable border's dominance margin times sqrt of its signed weight."""
    if not readings:
        return 0.0
    return float(min(r.margin * np.sqrt(max(r.signed_weight, 0.0)) for r in readings))


def evidence_of(readings: list[PatternReading]) -> float:
    """Calibration feature: log(1 + z) of the weakest readable border (z: mean phase offset in noise s.d.)."""
    if not readings:
        return 0.0
    return float(np.log1p(min(abs(r.z_score) for r in readings)))


def confidence_from_evidence(evidence: float, both_borders: bool = True, intercept: float = CALIBRATION_INTERCEPT,
                             slope: float = CALIBRATION_SLOPE, both: float = CALIBRATION_BOTH_BORDERS) -> float:
    """Calibrated probability that a call with this border evidence is right."""
    return float(1.0 / (1.0 + np.exp(-(intercept + slope * evidence + both * float(both_borders)))))


def is_readable(r: PatternReading, rules: "InterpretRules") -> bool:
    """A border reading that carries evidence: a pattern, a dominance margin, signed tissue signal
    and a mean phase offset above the noise (module docstring)."""
    return (r.pattern is not None and r.margin >= rules.min_margin and r.signed_weight >= rules.min_signed_weight
            and abs(r.z_score) >= rules.min_z and offset_agrees_with_dominance(r))


def offset_agrees_with_dominance(r: PatternReading) -> bool:
    """Does the border's mean phase offset have the sign of its dominance (dark-dominant: below the
    tissue ring, z < 0)? A reading whose pixels are mostly dark while their mean lies above the
    ring (or the reverse) contradicts itself: a few strongly signed pixels (the equatorial ring,
    aliasing, a neighbouring vein) outweigh the many, and neither says which way the spot points.
    Held-out realistic seed 7 (swi3d, 2026-12-01): a 0.029 ppm microbleed whose upper border, read
    one slice further out, was dark-dominant at z +2.7 was called a calcification at confidence 1.0."""
    return r.dark_dominant is not None and (r.z_score < 0) == bool(r.dark_dominant)


def supports(r: PatternReading, dark: bool, rules: "InterpretRules") -> bool:
    """A border reading too weak to be read alone (signed weight below ``min_signed_weight``) whose
    dominance, dominance margin and mean phase offset (beyond ``min_z`` noise s.d., with the sign of
    that dominance) all agree with a ``dark``-dominant (or bright-dominant) readable border."""
    return (r.pattern is not None and r.dark_dominant == dark and r.margin >= rules.min_margin
            and abs(r.z_score) >= rules.min_z and (r.z_score < 0) == dark)


def border_offset_z(upper: PatternReading, lower: PatternReading, convention: str) -> float:
    """The border slices' mean phase offsets pooled (Stouffer: sum / sqrt(n) over the distinct border
    slices; a spot on one slice has one), signed so that + means paramagnetic under ``convention``
    (0 when it is unknown). Unlike readability it needs no signed pixel: a faint spot's border can
    shift its mean phase by 2 noise s.d. with no single pixel beyond the pattern threshold.

    >>> from plugin.method.patterns import NO_READING
    >>> from dataclasses import replace
    >>> round(border_offset_z(replace(NO_READING, z_score=-2.0), replace(NO_READING, z_score=-1.0), "right-handed"), 2)
    2.12
    """
    dark_para = is_paramagnetic(True, convention)
    sign = 0.0 if dark_para is None else (-1.0 if dark_para else 1.0)     # dark (z < 0) is paramagnetic: -z
    zs = [upper.z_score] if upper == lower else [upper.z_score, lower.z_score]
    return float(sign * sum(zs) / np.sqrt(len(zs)))


def interpret(upper: PatternReading, lower: PatternReading, convention: str,
              rules: InterpretRules = InterpretRules()) -> Interpretation:
    """Classify one spot from its upper and lower border readings and the series convention."""
    it = _interpret(upper, lower, convention, rules)
    return replace(it, border_offset_z=border_offset_z(upper, lower, convention))


def _interpret(upper: PatternReading, lower: PatternReading, convention: str, rules: InterpretRules) -> Interpretation:
    readable = [r for r in (upper, lower) if is_readable(r, rules)]
    border_pattern = upper.pattern if upper.pattern is not None else lower.pattern
    if len(readable) == 2 and upper.dark_dominant != lower.dark_dominant:
        return Interpretation(Classification.INDETERMINATE, 0.0,
                              f"upper border pattern {int(upper.pattern)} and lower border pattern "
                              f"{int(lower.pattern)} disagree", border_pattern, 0.0, None,
                              z_evidence=float(min(abs(upper.z_score), abs(lower.z_score))), borders_disagree=True)
    if not readable:
        return Interpretation(Classification.INDETERMINATE, 0.0,
                              "weak border evidence (no border slice with a clear dark/bright dominance)",
                              border_pattern, 0.0, None)
    dark = readable[0].dark_dominant
    border_pattern = readable[0].pattern
    side = "dark" if dark else "bright"
    para = is_paramagnetic(bool(dark), convention)
    if para is None:
        return Interpretation(Classification.INDETERMINATE, 0.0,
                              f"phase convention unknown: border is {side}-dominant but its meaning is not known",
                              border_pattern, 0.0, None)
    ev = evidence_of(readable)
    dom = dominance_evidence(readable)
    support = ""
    if len(readable) == 1:
        # The other border slice often holds only the partial-volume edge of the spot (a pixel or
        # two whose signal is half void): too little signed tissue signal to be read alone, but
        # when its dominance and its mean phase offset agree with the readable border, its
        # signal adds to the same evidence (the paper: both borders show the same pattern).
        other = lower if readable[0] is upper else upper
        if supports(other, bool(dark), rules):
            pooled = min(readable[0].margin, other.margin) * float(np.sqrt(readable[0].signed_weight + other.signed_weight))
            if pooled > dom:
                dom = pooled
                support = ("; the other border slice (partial-volume footprint, signed weight "
                           f"{other.signed_weight:.2f}) agrees, evidence pooled {pooled:.2f}")
    z_one = float(abs(readable[0].z_score))
    if len(readable) == 1 and dom < rules.min_single_border_evidence and z_one < rules.min_single_border_z:
        return Interpretation(Classification.INDETERMINATE, 0.0,
                              f"weak border evidence: only one border slice readable ({side}-dominant, "
                              f"evidence {dom:.2f} < {rules.min_single_border_evidence:g}, "
                              f"z {z_one:.1f} < {rules.min_single_border_z:g})", border_pattern, 0.0, None, 1,
                              z_one, weak_border_call=para)
    if len(readable) == 1 and dom < rules.min_single_border_evidence:
        support += (f"; one border: dominance evidence {dom:.2f} < {rules.min_single_border_evidence:g} but mean "
                    f"phase offset z {z_one:.1f} >= {rules.min_single_border_z:g}")
    cls = classification_for(para)
    reason = (f"border {side}-dominant ({len(readable)} of 2 border slices readable), {convention}: "
              f"{'paramagnetic' if para else 'diamagnetic'}{support}")
    return Interpretation(cls, confidence_from_evidence(ev, len(readable) == 2), reason, border_pattern, ev, para,
                          len(readable), float(min(abs(r.z_score) for r in readable)))


# Fitted by `python benchmarks/model_fit_benchmark.py --studies 2 --calibrate` (realistic cohort
# swi3d and gre2d_5mm, paper cohort raw and filtered phase, both handednesses: 1122 decided calls,
# 8 wrong; maximum likelihood, slopes bounded to [0, 8]): P(right) = logistic(COMBINED_INTERCEPT
# + COMBINED_FIT * f + COMBINED_BORDER * b + both-borders term), f = +-log(1 + |z_fit|) and
# b = +-log(1 + z_border) of the weaker readable border (+ when that reading supports the call, -
# when it opposes it, 0 when it gives none). Calls resting on two readable, supporting borders were almost never
# wrong; calls on the fit alone or on one border carry most errors, and their confidence is
# correspondingly lower.
COMBINED_INTERCEPT = 0.035
COMBINED_FIT = 0.383
COMBINED_BORDER = 0.308
# The both-borders term, graded by the weaker border's mean phase offset z: two supporting borders
# of |z| 1.5-2 are not the evidence two of |z| 10 are (a 1.52 mm +0.017 ppm microbleed read
# diamagnetic on two borders of z 1.8 was called at 0.999 before). Fitted by `python
# benchmarks/confidence_calibration.py` on the realistic benchmark's dumps (4847 calls on two
# supporting borders, 1 wrong; benchmarks/model_fit.md, "The both-borders term graded"):
# both_0 + both_z log(1 + z_weaker), at most COMBINED_BOTH (about 0.97 at z 1, 0.994 at z 1.8,
# the cap from z 4.5).
COMBINED_BOTH = 8.0
COMBINED_BOTH_AT_ZERO = 0.0
COMBINED_BOTH_PER_LOG_Z = 4.677
#: The calibration cohorts hold a few thousand calls: no certainty above this can be backed by them.
CONFIDENCE_CAP = 0.999
# Two kinds of call the logistic cannot weigh, because its cohort holds too few of them to fit a
# term: their confidence is at most the fraction of such calls that were right (posterior mean under
# a uniform prior), as `python benchmarks/confidence_calibration.py` prints it per evidence class.
# Fitted (twenty-fourth session) on 21 realistic runs and four with lesions beside the cortex (lobar
# microbleeds; the default cohort keeps lesions 6 mm from the surface), checked on two more of those
# (benchmarks/model_fit.md, "Class ceilings with lesions beside the cortex").
#: two supporting border slices against a decisive dipole fit of the opposite sign (the border wins):
#: 11 of 15 right (0.750 on the default cohort alone, 5 of 6; beside the cortex the fit was right more often)
BORDERS_AGAINST_FIT_CONFIDENCE = 0.706
#: borders that disagreed, decided on the slices one further out (plugin.method.spotread's aliasing
#: rescue): 79 of 83 right (0.982 before, on the default cohort alone)
ALIASING_RESCUE_CONFIDENCE = 0.941
#: two supporting border slices with no decisive dipole fit (not usable, or |z| < fit_min_z): the
#: both-borders term was fitted on two-border calls nearly all backed by an agreeing fit (7241 of
#: 7505, every one right); without that backing 261 of 264 were right (the three wrong: two 1.5 mm
#: microbleeds of +0.017 ppm read on borders of z 1.6-3.2, and a 1.56 mm juxtacortical microbleed
#: whose spot took in the cortex's dark rim, borders z 12.5 / 13.6, called a calcification at 0.999)
BORDERS_WITHOUT_FIT_CONFIDENCE = 0.985
# A kind of call the logistic under-weighs: one readable border slice and a decisive dipole fit that
# agree (the other border unreadable). The logistic's terms were fitted on all calls that are not two
# supporting borders pooled (one border alone, the fit alone, pooled offsets, agreeing pairs), of which
# this pair is by far the most reliable: on 21 realistic runs and four with lesions beside the cortex
# (twenty-fifth session; benchmarks/model_fit.md, "One border and the fit agreeing") it reported 0.85
# on average for calls every one of which was right. Its confidence is at least the fraction right
# (posterior mean under a uniform prior), by slice thickness: the fit models thin slices better.
#: slices up to this thickness (mm) are "thin" for the class below (the cohorts: 1 and 2.5 mm thin, 5 mm thick)
ONE_BORDER_FIT_THIN_SLICE_MAX_MM = 3.0
#: one readable border and a decisive fit agreeing, thin slices: 266 of 266 right
ONE_BORDER_FIT_AGREES_THIN_CONFIDENCE = 0.996
#: the same on thick slices (the 5 mm gre2d protocol): 43 of 43 right
ONE_BORDER_FIT_AGREES_THICK_CONFIDENCE = 0.978


def one_border_fit_agrees_confidence(slice_mm: Optional[float]) -> float:
    """The least confidence of a call on one readable border and a decisive dipole fit that agree,
    for slices ``slice_mm`` thick (None: unknown, no such floor: 0)."""
    if slice_mm is None:
        return 0.0
    return (ONE_BORDER_FIT_AGREES_THIN_CONFIDENCE if slice_mm <= ONE_BORDER_FIT_THIN_SLICE_MAX_MM
            else ONE_BORDER_FIT_AGREES_THICK_CONFIDENCE)


def _logistic(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def both_borders_term(weaker_border_z: Optional[float]) -> float:
    """The logit the agreement of both border slices adds: 0 without it (``None``), else growing
    with the weaker border's |mean phase offset| in noise s.d., at most ``COMBINED_BOTH``."""
    if weaker_border_z is None:
        return 0.0
    return min(COMBINED_BOTH, COMBINED_BOTH_AT_ZERO + COMBINED_BOTH_PER_LOG_Z * float(np.log1p(abs(weaker_border_z))))


def combined_logit(fit_feature: float, border_feature: float, both_borders_z: Optional[float]) -> float:
    """The calibrated logit that a call is right, given the signed evidence of fit and border;
    ``both_borders_z``: the weaker border's |z| when both borders are readable and support the call
    being weighed, else None."""
    return (COMBINED_INTERCEPT + COMBINED_FIT * fit_feature + COMBINED_BORDER * border_feature
            + both_borders_term(both_borders_z))


def combined_confidence(fit_feature: float, border_feature: float, both_borders_z: Optional[float]) -> float:
    """Calibrated probability that a call is right (capped at ``CONFIDENCE_CAP``)."""
    return min(CONFIDENCE_CAP, _logistic(combined_logit(fit_feature, border_feature, both_borders_z)))


def _fit_words(fit: FitEvidence) -> str:
    kind = "paramagnetic" if fit.paramagnetic else "diamagnetic"
    ci = f", 95 % CI {fit.moment_ci95[0]:+.3g}..{fit.moment_ci95[1]:+.3g}" if fit.moment_ci95 else ""
    return f"dipole fit {kind} (moment {fit.moment:+.3g} {fit.moment_unit}{ci}, z {fit.abs_z:.1f})"


def pooled_offset_call(border: Interpretation, fit: Optional[FitEvidence],
                       rules: InterpretRules = InterpretRules()) -> Optional[Interpretation]:
    """A call from the border slices' pooled mean phase offset and the dipole fit's z together, for
    a spot where neither decides alone (faint spots of 1.5-2 mm: no border pixel beyond the pattern
    threshold, fit |z| < 3). Two independent signed z's (the border's footprint pixels against its
    tissue ring; the fit's surrounding voxels), paramagnetic positive, pooled as
    ``(z_border + z_fit) / sqrt(2)``; a call when that reaches ``pooled_min_z`` and neither reading
    points the other way by more than ``pooled_max_opposing_z``. None otherwise (no fit, no
    convention, not enough evidence, or two readable borders that disagree: conflicting, not
    missing, evidence). On the realistic 3D SWI cohort (seed 0, both handednesses, 2026-12-01) such
    calls were right 12 of 13 times, over every cohort (realistic swi3d, gre3d_1mm, gre2d_5mm; paper
    cohort SNR 15 and filtered) 27 of 29 (benchmarks/realistic.md); the confidence is the combined
    logistic (:func:`combined_confidence`) of the two readings, 0.6-0.8 for them: conservative."""
    if fit is None or not fit.usable or fit.paramagnetic is None or border.borders_disagree:
        return None
    zb, zf = border.border_offset_z, float(fit.z)
    pooled = (zb + zf) / float(np.sqrt(2.0))
    if abs(pooled) < rules.pooled_min_z:
        return None
    para = pooled > 0
    if min(zb * np.sign(pooled), zf * np.sign(pooled)) < -rules.pooled_max_opposing_z:
        return None
    f_ev = float(np.copysign(np.log1p(abs(zf)), zf * pooled))
    b_ev = float(np.copysign(np.log1p(abs(zb)), zb * pooled))
    return replace(border, classification=classification_for(para), paramagnetic=para, basis="border+fit",
                   fit_z=abs(zf), confidence=combined_confidence(f_ev, b_ev, None),
                   reason=f"{border.reason}; pooled evidence decides: border slices' mean phase offset z {zb:+.1f} "
                          f"and {_fit_words(fit)} signed {zf:+.1f} (+ = paramagnetic), together z {pooled:+.1f} "
                          f">= {rules.pooled_min_z:g}")


def conflicting_borders_call(border: Interpretation, fit: Optional[FitEvidence],
                             rules: InterpretRules = InterpretRules()) -> Optional[Interpretation]:
    """A call for a spot whose two readable borders disagree, when the dipole fit is decisive
    (``|z| >= fit_min_z``) and the two borders' pooled mean phase offset (:func:`border_offset_z`:
    the stronger border outweighs the weaker) points the same way by at least ``min_z`` noise s.d.;
    None otherwise (the call stays ``indeterminate``).

    Why the stronger border: a border slice taken on a faint partial-volume slice 2-3 slices from
    the centre (the detector follows a spot onto them) lies where the dipole's axial lobe has decayed
    as 1/r^3, and on scanner-filtered (homodyne high-passed) phase the filter's opposite-sign halo
    around a strong source, or the equatorial ring of a spot on two slices, can dominate there; the
    lobe itself (twice the equatorial field at the same distance) gives the larger offset. The fit
    models the whole field over every slice around the spot: with the borders' net offset it makes
    two readings against one. On the held-out realistic seeds 7 and 11 (swi3d, 2026-12-01) the
    seven disagreeing-border spots with a decisive fit siding with the net offset were all right
    (fit z 4.2-36); the one with a decisive fit against the net offset (a 1.9 mm calcification, fit
    z 4.5 paramagnetic, borders z +11.6 / -5.1) had a wrong fit and stays indeterminate. The
    confidence is the combined logistic of the fit and the net border offset (no both-borders
    bonus: the borders disagree)."""
    if not border.borders_disagree or fit is None or not fit.usable or fit.paramagnetic is None:
        return None
    if fit.abs_z < rules.fit_min_z:
        return None
    net = border.border_offset_z            # + = paramagnetic
    if abs(net) < rules.min_z or (net > 0) != bool(fit.paramagnetic):
        return None
    para = bool(fit.paramagnetic)
    conf = combined_confidence(float(np.log1p(fit.abs_z)), float(np.log1p(abs(net))), None)
    return replace(border, classification=classification_for(para), paramagnetic=para, basis="border+fit",
                   fit_call=para, fit_z=fit.abs_z, confidence=conf,
                   reason=f"{border.reason}; the borders' pooled mean phase offset z {net:+.1f} (+ = paramagnetic: "
                          f"the stronger border) and {_fit_words(fit)} agree: together they decide")


def stronger_border_call(border: Interpretation, fit: Optional[FitEvidence],
                         rules: InterpretRules = InterpretRules()) -> Optional[Interpretation]:
    """A call for a spot whose two readable borders disagree and whose dipole fit is not decisive
    (``|z| < fit_min_z``, or residuals above ``fit_max_rms_override``: the dipole model does not
    describe the field there), when the weaker border could not decide alone (its mean phase offset
    below ``min_single_border_z`` noise s.d.) while the borders' pooled mean offset
    (:func:`border_offset_z`, Stouffer: the stronger border outweighs the weaker) reaches it; None
    otherwise.

    Why: a reading too weak to make a call alone (a single border needs ``|z| >= min_single_border_z``
    or the dominance evidence) is not enough to veto a border that clears that bar by the pooled
    offset either, just as a non-decisive fit of either sign is no evidence against a border call
    elsewhere in :func:`combine`. Two borders that would each decide alone and disagree are
    conflicting evidence and stay ``indeterminate`` (development seed 53 of the realistic 3D SWI
    cohort, 2026-12-02: a 1.68 mm, 0.04 ppm microbleed with borders -11.8 / +4.1 on left-handed phase,
    both beyond the bar, and a fit of z 2.5 that sided with the stronger, wrong one: a first version
    that let any net offset of >= 5 decide called it a calcification). Held-out seed 23: a 2.30 mm,
    0.19 ppm microbleed next to the superior sagittal sinus, borders +2.9 (one slice beyond its centre)
    / -19.3 on right-handed phase, fit z 2.6 with residuals 2.4 noise s.d. The confidence is the
    combined logistic of the net offset and the fit's signed z (against the call when it points the
    other way; no both-borders bonus: the borders disagree)."""
    if not border.borders_disagree or border.z_evidence >= rules.min_single_border_z:
        return None
    net = border.border_offset_z            # + = paramagnetic
    if abs(net) < rules.min_single_border_z:
        return None
    para = net > 0
    usable = fit is not None and fit.usable and fit.paramagnetic is not None
    if usable and fit.abs_z >= rules.fit_min_z and fit.residual_rms <= rules.fit_max_rms_override:  # type: ignore[union-attr]
        return None                         # a decisive fit: conflicting_borders_call's business
    zf = float(fit.z) if usable else 0.0    # type: ignore[union-attr]
    f_ev = float(np.copysign(np.log1p(abs(zf)), zf * net)) if zf else 0.0
    conf = combined_confidence(f_ev, float(np.log1p(abs(net))), None)
    fit_words = (f"{_fit_words(fit)}, not decisive" if usable else "no usable dipole fit")  # type: ignore[arg-type]
    return replace(border, classification=classification_for(para), paramagnetic=para, basis="border",
                   confidence=conf,
                   reason=f"{border.reason}; the weaker border (|z| {border.z_evidence:.1f} < "
                          f"{rules.min_single_border_z:g}) could not decide alone and the borders' pooled mean phase "
                          f"offset z {net:+.1f} (+ = paramagnetic: the stronger border) decides ({fit_words})")


def fit_sides_with_a_foreign_reading(dropped: PatternReading, fit: Optional[FitEvidence], convention: str) -> bool:
    """Does a decisive-looking fit share its sign with a border reading that was left out as another
    source's field (``plugin.method.borderexplained``: the fitted dipole cannot produce that offset on
    that slice)?

    That foreign field lies inside the fit's window (the fit uses every slice around the spot) and
    has the fit's sign, so the fit's moment is not independent of it: it may be that field, absorbed
    into the moment because the model (a dipole and a smooth background) has nothing else to put it
    in. Then the fit is no evidence against the border reading that remains. Development seed 11 of
    the realistic cohort (3D SWI): a 1.90 mm, -0.17 ppm calcification 8.5 mm from an in-plane
    medullary vein (+0.4 ppm; a cylinder's field falls as 1/r^2, not 1/r^3): upper border diamagnetic
    z 11.6, lower border paramagnetic z 5.1 (the vein's field, left out), fit paramagnetic z 4.5.

    ``dropped``: the reading as read (before it was left out); its mean phase offset gives its sign.

    >>> from plugin.method.patterns import PatternReading
    >>> r = PatternReading(None, 0.0, 0.0, 9, 0, 0.0, -0.2, z_score=-5.1)
    >>> class Fit: usable, paramagnetic = True, True
    >>> fit_sides_with_a_foreign_reading(r, Fit(), "right-handed"), fit_sides_with_a_foreign_reading(r, Fit(), "left-handed")
    (True, False)
    """
    if fit is None or not fit.usable or fit.paramagnetic is None or dropped.z_score == 0.0:
        return False
    return is_paramagnetic(dropped.z_score < 0.0, convention) == fit.paramagnetic


def fit_over_conflicting_borders(border: Interpretation, fit: Optional[FitEvidence], slice_mm: Optional[float],
                                 rules: InterpretRules = InterpretRules()) -> Optional[Interpretation]:
    """A call from a decisive dipole fit for a spot whose two readable borders disagree and whose
    borders' net offset does not side with the fit (:func:`conflicting_borders_call` covers the
    case where it does), on slices of at most ``fit_over_conflict_max_slice_mm``; None otherwise.

    Why: two border slices that contradict each other are no evidence for either sign, and on thin
    slices the fit models every slice around the spot. Over the twenty-first session's realistic
    dumps (swi3d with one and six echoes, gre3d_1mm; 16 runs of 2 studies, GE and Siemens
    renderings) every such spot left ``indeterminate`` had a fit of the right sign: 9 of 9 (fit z
    3.3-9.9, 0.017-0.22 ppm), as had every one decided by the net offset and the fit together (21
    of 21). On 5 mm slices the fit of such spots was right 3 times in 6 (benchmarks/realistic.md,
    twenty-second session): a
    thick slice holds a spot's whole field in one or two slices, and the fit's centre along the
    slice axis is not identified. The fit must also describe the field (residuals within
    ``fit_max_rms_override``). The confidence is the fit's own, as when the border reading gives
    no call: the two borders cancel."""
    if slice_mm is None or slice_mm > rules.fit_over_conflict_max_slice_mm or not border.borders_disagree:
        return None
    if fit is None or not fit.usable or fit.paramagnetic is None or fit.abs_z < rules.fit_min_z:
        return None
    if fit.residual_rms > rules.fit_max_rms_override:
        return None
    para = bool(fit.paramagnetic)
    return replace(border, classification=classification_for(para), paramagnetic=para, basis="fit",
                   fit_call=para, fit_z=fit.abs_z,
                   confidence=combined_confidence(float(np.log1p(fit.abs_z)), 0.0, None),
                   reason=f"{border.reason}; {_fit_words(fit)} decides: two disagreeing borders are no evidence "
                          f"either way, and on {slice_mm:g} mm slices the fit models every slice around the spot")


def read_beyond_disagreeing_borders(it: Interpretation) -> Interpretation:
    """A call on the slices one further out than two disagreeing borders (plugin.method.spotread's
    aliasing rescue) says so, with a confidence of at most ``ALIASING_RESCUE_CONFIDENCE``: it rests
    on a conflict resolved, not on two borders that agreed as read.

    >>> it = Interpretation(Classification.MICROBLEED, 0.999, "border dark-dominant", None, 2.0, True)
    >>> r = read_beyond_disagreeing_borders(it)
    >>> r.confidence == ALIASING_RESCUE_CONFIDENCE, r.reason.endswith("read one slice further out")
    (True, True)
    """
    return replace(it, reason=it.reason + "; borders disagreed (aliasing), read one slice further out",
                   confidence=min(it.confidence, ALIASING_RESCUE_CONFIDENCE))


def combine_after_discount(border: Interpretation, fit: Optional[FitEvidence], convention: str,
                           rules: "InterpretRules", dropped: Optional[PatternReading] = None, note: str = "",
                           slice_mm: Optional[float] = None) -> Interpretation:
    """:func:`combine`, after ``plugin.method.borderexplained`` may have left one border reading out
    (``dropped``: that reading as read; ``note``: why). A fit that shares the left-out reading's sign
    (:func:`fit_sides_with_a_foreign_reading`) is not used; the remaining border decides by the
    single-border rules of :func:`interpret`, and the reason says so. ``slice_mm``: as for :func:`combine`."""
    if note and dropped is not None and fit_sides_with_a_foreign_reading(dropped, fit, convention):
        it = combine(border, None, convention, rules, slice_mm=slice_mm)
        return replace(it, reason=f"{it.reason}; {note}; the dipole fit ({fit.abs_z:.1f} s.d. "  # type: ignore[union-attr]
                                  f"{'paramagnetic' if fit.paramagnetic else 'diamagnetic'}) has that field's sign "  # type: ignore[union-attr]
                                  f"and lies over it: not used")
    # a border left out as another source's field is not an unreadable one: on the cohorts the one
    # wrong call on a single border agreeing with the fit was such a spot, so no class floor then
    it = combine(border, fit, convention, rules, slice_mm=slice_mm, one_border_floor=not note)
    return replace(it, reason=f"{it.reason}; {note}") if note else it


def combine(border: Interpretation, fit: Optional[FitEvidence], convention: str,
            rules: InterpretRules = InterpretRules(), slice_mm: Optional[float] = None,
            one_border_floor: bool = True) -> Interpretation:
    """The border reading (:func:`interpret`) and the dipole fit -> one call (module docstring).
    ``slice_mm``: the slice spacing (None: unknown; the rules that depend on it are not applied).
    ``one_border_floor``: a call on one readable border and an agreeing decisive fit is at least
    :func:`one_border_fit_agrees_confidence` (off when the other border's reading was left out as
    another source's field: :func:`combine_after_discount`)."""
    border_call = border.paramagnetic if border.classification != Classification.INDETERMINATE else None
    fit_z = fit.abs_z if fit is not None else 0.0
    fit_call = fit.paramagnetic if fit is not None and fit.usable and fit_z >= rules.fit_min_z else None
    base = replace(border, border_call=border_call, fit_call=fit_call, fit_z=fit_z)
    if is_paramagnetic(True, convention) is None:
        return replace(base, basis="none")      # unknown convention: the border's reason says so
    f_ev = float(np.log1p(fit_z)) if fit_call is not None else 0.0
    b_ev = border.evidence if border_call is not None else 0.0
    both_z = border.z_evidence if border.n_readable_borders == 2 else None
    if fit is None or not fit.usable:
        why_fit = "no dipole fit" if fit is None else f"dipole fit not usable: {fit.reason}"
    else:
        why_fit = f"dipole fit not decisive (z {fit_z:.1f} < {rules.fit_min_z:g})"
    if border_call is None and fit_call is None:
        weak = border.weak_border_call
        if (weak is not None and fit is not None and fit.usable and fit_z >= rules.fit_support_z
                and fit.paramagnetic == weak):
            # two independent readings (the border's footprint pixels, the fit's surrounding
            # voxels) agreeing, each too weak alone: on the realistic cohort every such call was right
            return replace(base, classification=classification_for(weak), paramagnetic=weak, basis="border+fit",
                           fit_call=weak,
                           reason=f"{border.reason}; {_fit_words(fit)} agrees (z >= {rules.fit_support_z:g}): "
                                  f"together they decide",
                           confidence=combined_confidence(float(np.log1p(fit_z)), float(np.log1p(border.z_evidence)),
                                                          None))
        pooled = pooled_offset_call(base, fit, rules) or stronger_border_call(base, fit, rules)
        if pooled is not None:
            return pooled
        return replace(base, basis="none", reason=f"{border.reason}; {why_fit}")
    if border.borders_disagree and fit_call is not None:
        # opposite borders are conflicting evidence, not missing evidence: on the cohorts the fit
        # alone was wrong on most such spots (aliasing or background-removal artefacts fool both),
        # unless the borders' net offset sides with it (:func:`conflicting_borders_call`)
        resolved = (conflicting_borders_call(base, fit, rules) or stronger_border_call(base, fit, rules)
                    or fit_over_conflicting_borders(base, fit, slice_mm, rules))
        if resolved is not None:
            return resolved
        return replace(base, basis="none",
                       reason=f"{border.reason}; {_fit_words(fit)} (not decisive against conflicting borders)")
    if fit_call is None:
        return replace(base, basis="border", reason=f"{border.reason}; {why_fit}",
                       confidence=min(combined_confidence(0.0, b_ev, both_z),
                                      BORDERS_WITHOUT_FIT_CONFIDENCE if both_z is not None else 1.0))
    words = _fit_words(fit)  # type: ignore[arg-type]
    weak = border.weak_border_call
    if border_call is None and weak is not None and weak != fit_call:
        # a single readable border too weak to decide alone, against the fit: conflicting
        # evidence, weighed as a disagreement (the weak border's evidence: log(1 + its |z|))
        w_ev = float(np.log1p(border.z_evidence))
        for_fit, for_border = combined_logit(f_ev, -w_ev, None), combined_logit(-f_ev, w_ev, None)
        if for_fit - for_border >= rules.override_margin and fit.residual_rms <= rules.fit_max_rms_override:  # type: ignore[union-attr]
            return replace(base, classification=classification_for(fit_call), paramagnetic=fit_call, basis="fit",
                           reason=f"{words} overrides a weak single border ({border.reason}): calibrated logit "
                                  f"{for_fit:.1f} vs {for_border:.1f}",
                           confidence=min(CONFIDENCE_CAP, _logistic(for_fit)))
        pooled = pooled_offset_call(base, fit, rules)     # the weak border's mean offset may side with the fit
        if pooled is not None:
            return pooled
        return replace(base, basis="none",
                       reason=f"weak border and dipole fit disagree: {border.reason}; {words}")
    if border_call is None:
        return replace(base, classification=classification_for(fit_call), paramagnetic=fit_call, basis="fit",
                       reason=f"{words} decides: border reading gives no call ({border.reason})",
                       confidence=combined_confidence(f_ev, 0.0, None))
    if border_call == fit_call:
        confidence = combined_confidence(f_ev, b_ev, both_z)
        if both_z is None and one_border_floor:   # one readable border: the class's own fraction right
            confidence = max(confidence, one_border_fit_agrees_confidence(slice_mm))
        return replace(base, basis="border+fit", reason=f"{border.reason}; {words} agrees", confidence=confidence)
    # Disagreement: the side with clearly more calibrated evidence, else no call.
    for_fit = combined_logit(f_ev, -b_ev, None)
    for_border = combined_logit(-f_ev, b_ev, both_z)
    if for_fit - for_border >= rules.override_margin and fit.residual_rms <= rules.fit_max_rms_override:  # type: ignore[union-attr]
        return replace(base, classification=classification_for(fit_call), paramagnetic=fit_call, basis="fit",
                       reason=f"{words} overrides the border reading ({border.reason}): the fit is the more "
                              f"reliable here (calibrated logit {for_fit:.1f} vs {for_border:.1f})",
                       confidence=min(CONFIDENCE_CAP, _logistic(for_fit)))
    if for_border - for_fit >= rules.override_margin:
        return replace(base, basis="border",
                       reason=f"{border.reason}; {words} disagrees, the border reading is the more reliable here "
                              f"(calibrated logit {for_border:.1f} vs {for_fit:.1f})",
                       confidence=min(CONFIDENCE_CAP, _logistic(for_border),
                                      BORDERS_AGAINST_FIT_CONFIDENCE if both_z is not None else 1.0))
    if border.n_readable_borders == 1 and fit.residual_rms <= rules.fit_max_rms_override:  # type: ignore[union-attr]
        # one readable border against a decisive fit: the border slices' pooled mean offset (the
        # readable border's and the other's, :func:`border_offset_z`) and the fit decide together
        # when the offset does not point against the fit (:func:`pooled_offset_call`)
        pooled = pooled_offset_call(replace(base, reason=f"border reading and dipole fit disagree: {border.reason}"),
                                    fit, rules)
        if pooled is not None:
            return pooled
    return replace(base, classification=Classification.INDETERMINATE, confidence=0.0, paramagnetic=None, basis="none",
                   reason=f"border reading and dipole fit disagree: {border.reason}; {words}")
