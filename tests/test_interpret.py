"""Interpretation (plugin.method.interpret): convention mapping for all four vendors, indeterminate
cases, confidence calibration behaviour."""
from pathlib import Path

import pytest

from dicom_io.convention import resolve_convention
from dicom_io.frames import FrameHeader
from plugin.method.interpret import confidence_from_evidence, interpret, is_paramagnetic
from plugin.model import Classification, PhasePattern
from plugin.method.patterns import PatternReading


def frame(manufacturer):
    return FrameHeader(path=Path("x.dcm"), frame_index=None, sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                       sop_instance_uid="1.2.3", series_instance_uid="1.2", study_instance_uid="1",
                       frame_of_reference_uid=None, modality="MR", manufacturer=manufacturer, model=None,
                       software_versions=None, series_description=None, protocol_name=None, image_type=(),
                       complex_component=None, echo_number=1, echo_time_ms=25.0, position_lps_mm=None,
                       orientation=None, pixel_spacing_mm=None, slice_thickness_mm=None, rows=8, columns=8,
                       bits_allocated=16, pixel_representation=1, rescale_slope=None, rescale_intercept=None,
                       rescale_type=None, transfer_syntax_uid=None, dataset=None)


def reading(pattern, margin=1.0, weight=5.0):
    fd = 0.5 + margin / 2 if PhasePattern(pattern).dark_dominant else 0.5 - margin / 2
    z = (1.0 if margin >= 0.5 else 0.3) * 10.0 * weight / 5.0
    return PatternReading(PhasePattern(pattern), fd, 1 - fd, 10, 10, weight, -0.3 if fd > 0.5 else 0.3,
                          -z if fd > 0.5 else z)


DARK = reading(1)
BRIGHT = reading(2)


@pytest.mark.parametrize("vendor, manufacturer, dark_call", [
    ("GE", "GE MEDICAL SYSTEMS", Classification.MICROBLEED),
    ("Philips", "Philips", Classification.MICROBLEED),
    ("Siemens", "SIEMENS", Classification.CALCIFICATION),
    ("Canon", "CANON_MEC", Classification.CALCIFICATION),
])
def test_convention_mapping_for_all_four_vendors(vendor, manufacturer, dark_call):
    convention, source = resolve_convention(frame(manufacturer), vendor)
    assert source
    dark = interpret(DARK, DARK, convention)
    bright = interpret(BRIGHT, BRIGHT, convention)
    assert dark.classification == dark_call
    assert bright.classification != dark_call and bright.classification != Classification.INDETERMINATE
    assert 0.5 < dark.confidence <= 1.0


def test_is_paramagnetic_table():
    assert is_paramagnetic(True, "right-handed") is True
    assert is_paramagnetic(False, "right-handed") is False
    assert is_paramagnetic(True, "left-handed") is False
    assert is_paramagnetic(False, "left-handed") is True
    assert is_paramagnetic(True, "unknown") is None


def test_unknown_convention_is_indeterminate_never_a_guess():
    convention, _ = resolve_convention(frame("ACME"), "unknown")
    assert convention == "unknown"
    res = interpret(DARK, DARK, convention)
    assert res.classification == Classification.INDETERMINATE
    assert "convention unknown" in res.reason
    assert res.confidence == 0.0


def test_disagreeing_borders_are_indeterminate():
    res = interpret(DARK, BRIGHT, "right-handed")
    assert res.classification == Classification.INDETERMINATE
    assert "disagree" in res.reason
    # heterogeneous patterns of opposite dominance disagree too
    res = interpret(reading(5, 0.3), reading(4, 0.3), "right-handed")
    assert res.classification == Classification.INDETERMINATE


def test_weak_evidence_is_indeterminate():
    weak = reading(5, margin=0.1)
    res = interpret(weak, weak, "right-handed")
    assert res.classification == Classification.INDETERMINATE and "weak" in res.reason
    none = PatternReading(None, 0.0, 0.0, 4, 0, 0.0, 0.0)
    assert interpret(none, none, "left-handed").classification == Classification.INDETERMINATE
    faint = reading(1, margin=1.0, weight=0.1)        # too few pixels with signal
    assert interpret(faint, faint, "right-handed").classification == Classification.INDETERMINATE
    # homogeneous sign but a mean phase offset within the noise: no phase signature
    no_signature = PatternReading(PhasePattern(1), 1.0, 0.0, 10, 10, 5.0, -0.05, -0.6)
    res = interpret(no_signature, no_signature, "right-handed")
    assert res.classification == Classification.INDETERMINATE and "weak" in res.reason


def test_single_readable_border_needs_strong_evidence():
    none = PatternReading(None, 0.0, 0.0, 4, 0, 0.0, 0.0)
    weak_single = reading(5, margin=0.4, weight=4.0)  # margin*sqrt(w) = 0.8 < 1.5
    res = interpret(weak_single, none, "right-handed")
    assert res.classification == Classification.INDETERMINATE and "only one border" in res.reason


def test_one_readable_border_is_enough_when_the_other_is_empty():
    none = PatternReading(None, 0.0, 0.0, 4, 0, 0.0, 0.0)
    res = interpret(DARK, none, "right-handed")
    assert res.classification == Classification.MICROBLEED


def test_confidence_grows_with_evidence():
    values = [confidence_from_evidence(x) for x in (0.0, 0.3, 1.0, 3.0)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values) and values[-1] > 0.9
    assert confidence_from_evidence(1.0, both_borders=False) < confidence_from_evidence(1.0, both_borders=True)
    strong = interpret(reading(1, 1.0, 9.0), reading(1, 1.0, 9.0), "right-handed").confidence
    weaker = interpret(reading(5, 0.3, 1.0), reading(5, 0.3, 1.0), "right-handed").confidence
    assert strong > weaker
