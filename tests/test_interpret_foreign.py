"""A dipole fit that shares its sign with a border reading left out as another source's field
(plugin.method.borderexplained) is not used against the remaining border
(plugin.method.interpret.combine_after_discount). Realistic cohort, development seed 11 (3D SWI): a
1.90 mm, -0.17 ppm calcification 8.5 mm from an in-plane vein; upper border diamagnetic z 11.6, lower
border paramagnetic z 5.1 (the vein's field, left out), fit paramagnetic z 4.5 (the vein's field
absorbed into the moment): indeterminate before, now the remaining border's call."""
from dataclasses import replace

import pytest

from plugin.method.dipolefit import DipoleFit
from plugin.method.interpret import InterpretRules, combine, combine_after_discount, fit_sides_with_a_foreign_reading, interpret
from plugin.method.patterns import PatternReading
from plugin.model import Classification, PhasePattern

NOTE = "lower border reading (slice 34, mean phase offset z -5.1) left out: another source's field"


def reading(pattern: int, z: float) -> PatternReading:
    dark = PhasePattern(pattern).dark_dominant
    return PatternReading(PhasePattern(pattern), 1.0 if dark else 0.0, 0.0 if dark else 1.0, 10, 10, 5.0,
                          -0.3 if dark else 0.3, z)


def left_out(r: PatternReading) -> PatternReading:
    """What borderexplained keeps of a left-out reading: its pattern, no evidence."""
    return replace(r, signed_weight=0.0, z_score=0.0, dark_fraction=0.0, bright_fraction=0.0)


def fit(paramagnetic: bool, z: float = 4.5) -> DipoleFit:
    m = 0.023 if paramagnetic else -0.023
    return DipoleFit(True, "", moment_rad_mm3=-m, moment_se_rad_mm3=abs(m) / z, moment=m, moment_se=abs(m) / z,
                     moment_ci95=(m - 2 * abs(m) / z, m + 2 * abs(m) / z), moment_unit="ppm*mm^3",
                     z=z if paramagnetic else -z, paramagnetic=paramagnetic, chi_ppm=3 * m, residual_rms=1.0, n_voxels=400)


@pytest.mark.parametrize("convention, kept, dropped", [
    ("right-handed", reading(2, +11.6), reading(1, -5.1)),     # GE / Philips: bright = diamagnetic
    ("left-handed", reading(1, -11.6), reading(2, +6.8)),      # Siemens / Canon: dark = diamagnetic
])
def test_fit_sharing_a_left_out_foreign_field_is_not_used(convention, kept, dropped):
    rules = InterpretRules()
    border = interpret(kept, left_out(dropped), convention, rules)
    # the old behaviour: one border against the fit, neither clearly stronger -> indeterminate
    assert combine(border, fit(True), convention, rules).classification == Classification.INDETERMINATE
    assert fit_sides_with_a_foreign_reading(dropped, fit(True), convention)
    res = combine_after_discount(border, fit(True), convention, rules, dropped, NOTE)
    assert res.classification == Classification.CALCIFICATION and res.basis == "border"
    assert "not used" in res.reason and NOTE in res.reason and 0.5 < res.confidence < 1.0


def test_fit_against_the_left_out_reading_is_still_used():
    """A fit of the other sign than the left-out reading is independent of that field: the ordinary
    rules (here fit and remaining border agree), as without a discount; no discount: plain combine."""
    rules = InterpretRules()
    kept, dropped = reading(2, +11.6), reading(1, -5.1)
    border = interpret(kept, left_out(dropped), "right-handed", rules)
    assert not fit_sides_with_a_foreign_reading(dropped, fit(False), "right-handed")
    res = combine_after_discount(border, fit(False), "right-handed", rules, dropped, NOTE)
    plain = combine(border, fit(False), "right-handed", rules)
    assert res.classification == plain.classification == Classification.CALCIFICATION
    assert res.basis == plain.basis == "border+fit" and res.confidence == plain.confidence and NOTE in res.reason
    assert combine_after_discount(border, fit(True), "right-handed", rules) == combine(border, fit(True), "right-handed", rules)
    assert not fit_sides_with_a_foreign_reading(dropped, fit(True), "unknown")
