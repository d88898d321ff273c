"""Border readings that stand alone against a decisive dipole fit (plugin.method.borderexplained):

* a lone readable border out of the spot's reach, contradicting the fit, is another structure's
  field and is left out; one within reach, or agreeing with the fit, is kept;
* the aliasing rescue (the slices beyond two disagreeing borders, plugin.method.spotread) is not
  used when a decisive fit gives the opposite sign: the borders as read are interpreted instead."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from plugin.method.borderexplained import check_border, discount_unexplained_borders, undo_refuted_rescue
from plugin.method.interpret import InterpretRules, combine, combine_after_discount, interpret, is_readable
from plugin.method.patterns import PatternReading, PhasePattern
from plugin.method.spotread import SpotReadings
from plugin.model import Classification
from tests.test_thickslice_evidence import spot_with_a_foreign_border

RH = "right-handed"    # paramagnetic dark


def only_upper_readable(rd: SpotReadings) -> SpotReadings:
    """The readings with the lower border made unreadable (no signed pixels, no offset)."""
    lower = replace(rd.lower, signed_weight=0.0, z_score=0.0, dark_fraction=0.0, bright_fraction=0.0)
    return replace(rd, lower=lower)


def test_a_lone_border_out_of_reach_against_a_decisive_fit_is_left_out():
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(0.6)   # upper: another source, bright
    rd = only_upper_readable(rd)
    assert rd.upper.dark_dominant is False and fit.paramagnetic is True
    before = combine(interpret(rd.upper, rd.lower, RH), fit, RH)
    assert before.classification != Classification.MICROBLEED, before.reason   # what main did
    without_convention = discount_unexplained_borders(rd, spot, fit, mag, vox, noise)
    assert without_convention.note == ""     # which side contradicts the fit is not known: kept
    kept = discount_unexplained_borders(rd, spot, fit, mag, vox, noise, convention=RH)
    assert "upper border reading" in kept.note and "another source" in kept.note
    assert kept.upper.pattern == rd.upper.pattern and kept.upper.z_score == 0.0
    after = combine_after_discount(interpret(kept.upper, kept.lower, RH), fit, RH, InterpretRules(),
                                   dropped=rd.upper, note=kept.note)
    assert after.classification == Classification.MICROBLEED and after.basis == "fit", after.reason
    assert 0.5 < after.confidence < 0.9


def test_a_lone_border_within_reach_is_kept():
    """A contradicting reading on the spot's own slice, where the fitted dipole is strong: kept,
    however it reads (the fit's prediction there is no ground to discard it)."""
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(0.0, extra_slices=0)   # the spot's own slice
    rd = only_upper_readable(rd)
    bright = replace(rd.upper, pattern=PhasePattern.TOTALLY_WHITE, dark_fraction=0.0, bright_fraction=1.0, z_score=6.0)
    rd = replace(rd, upper=bright)
    assert is_readable(rd.upper, InterpretRules()) and not is_readable(rd.lower, InterpretRules())
    assert check_border(spot, fit, mag, rd.upper, rd.upper_slice, rd.upper_slice, vox, noise).predicted_max_z > 1.0
    kept = discount_unexplained_borders(rd, spot, fit, mag, vox, noise, convention=RH)
    assert kept.note == "" and kept.upper is rd.upper


def test_a_lone_border_agreeing_with_the_fit_is_kept():
    rd, spot, fit, mag, vox, noise = spot_with_a_foreign_border(-0.6)   # far, out of reach, but dark
    rd = only_upper_readable(rd)
    assert rd.upper.dark_dominant is True
    kept = discount_unexplained_borders(rd, spot, fit, mag, vox, noise, convention=RH)
    assert kept.note == "" and kept.upper is rd.upper


def reading(dark: bool, z: float) -> PatternReading:
    """A clear reading: homogeneous, 3 tissue pixels of signed weight, offset ``z`` (right-handed)."""
    pattern = PhasePattern.TOTALLY_BLACK if dark else PhasePattern.TOTALLY_WHITE
    return PatternReading(pattern, float(dark), float(not dark), 12, 12, 3.0, -0.1 if dark else 0.1, z)


def rescued(outer_dark: bool) -> SpotReadings:
    """Borders that disagreed (upper dark z -4, lower bright z +5) and were read one slice further
    out, where both agreed."""
    own = SpotReadings(reading(True, -4.0), reading(False, 5.0), reading(True, -6.0), 31, 29)
    z = -2.5 if outer_dark else 2.5
    return SpotReadings(reading(outer_dark, z), reading(outer_dark, z), own.central, 31, 29, True,
                        upper_read_slice=32, lower_read_slice=28, unrescued=own)


def fit(paramagnetic: bool, z: float, rms: float = 1.0):
    moment = 0.01 if paramagnetic else -0.01
    return SimpleNamespace(usable=True, reason="", paramagnetic=paramagnetic, moment=moment, z=z if paramagnetic else -z,
                           abs_z=z, moment_ci95=(moment * 0.5, moment * 1.5), moment_unit="ppm*mm^3", residual_rms=rms)


def test_a_rescue_against_a_decisive_fit_is_not_used():
    rd, f = rescued(outer_dark=False), fit(True, 3.3)
    as_rescued = combine(interpret(rd.upper, rd.lower, RH), f, RH)
    # what the rescue alone calls: the wrong class (at 0.999 before the class cap
    # interpret.BORDERS_AGAINST_FIT_CONFIDENCE; still a call)
    assert as_rescued.classification == Classification.CALCIFICATION and as_rescued.confidence > 0.5
    undone, note = undo_refuted_rescue(rd, f, RH)
    assert undone is rd.unrescued and "not used" in note and "z 3.3" in note
    it = combine(interpret(undone.upper, undone.lower, RH), f, RH)
    assert it.classification != Classification.CALCIFICATION and it.borders_disagree, it.reason


def test_a_rescue_stands_with_an_agreeing_weak_or_unfitting_fit():
    agreeing = undo_refuted_rescue(rescued(outer_dark=True), fit(True, 20.0), RH)
    weak = undo_refuted_rescue(rescued(outer_dark=False), fit(True, 2.9), RH)
    unfitting = undo_refuted_rescue(rescued(outer_dark=False), fit(True, 20.0, rms=3.0), RH)
    unknown = undo_refuted_rescue(rescued(outer_dark=False), fit(True, 20.0), "unknown")
    for rd, note in (agreeing, weak, unfitting, unknown):
        assert rd.resolved_by_outer and note == ""
    plain = SpotReadings(reading(True, -4.0), reading(True, -5.0), reading(True, -6.0), 31, 29)
    assert undo_refuted_rescue(plain, fit(False, 20.0), RH) == (plain, "")


def test_a_rescued_call_carries_the_rescues_own_confidence():
    """Slices beyond disagreeing borders that agree: the call stands, at no more than the fraction
    of such calls that were right on the cohorts, and says how it was read; no call stays none."""
    from plugin.method.interpret import ALIASING_RESCUE_CONFIDENCE, read_beyond_disagreeing_borders

    rd = rescued(outer_dark=True)
    it = read_beyond_disagreeing_borders(combine(interpret(rd.upper, rd.lower, RH), None, RH))
    assert it.classification == Classification.MICROBLEED and it.confidence == ALIASING_RESCUE_CONFIDENCE < 0.999
    assert it.reason.endswith("borders disagreed (aliasing), read one slice further out")
    none = read_beyond_disagreeing_borders(combine(interpret(rd.unrescued.upper, rd.unrescued.lower, RH), None, RH))
    assert none.classification == Classification.INDETERMINATE and none.confidence == 0.0
