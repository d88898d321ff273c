"""benchmarks/confidence_calibration.py reads realistic-benchmark dumps: the calibration features it
rebuilds from them, and a clear error naming the file for a dump that is broken or too old."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.confidence_calibration import (ONE_BORDER_FIT_AGREES_THICK, ONE_BORDER_FIT_AGREES_THIN,  # noqa: E402
                                               OTHER, TWO_BORDERS_FIT_AGAINST, TWO_BORDERS_FIT_AGREES,
                                               TWO_BORDERS_NO_FIT_CALL, calls_of, evidence_class)

RECORD = {"study": 0, "kind": "paper", "truth_class": "microbleed", "diameter_mm": 2.0, "chi_ppm": 0.1,
          "detected": True, "classification": "microbleed", "confidence": 0.999, "decided_by": "border",
          "reason": "border dark-dominant", "border_call": True, "border_evidence": 1.2, "n_readable_borders": 2,
          "upper_border_z": -6.0, "lower_border_z": -2.5, "fit_call": False, "fit_z": -4.0}


def dump(tmp_path, records, name="d.json", protocol="swi3d"):
    p = tmp_path / name
    p.write_text(json.dumps({protocol: {"GE": [{"records": records, "false_spots": [], "physiological": []}]}}))
    return p


def test_features_of_a_two_border_call_against_a_decisive_fit(tmp_path):
    undecided = dict(RECORD, classification="indeterminate")
    (c,) = calls_of(dump(tmp_path, [RECORD, undecided]))
    assert c.right and c.both and c.b == pytest.approx(1.2)
    assert c.f == pytest.approx(-np.log1p(4.0)) and c.both_z == pytest.approx(np.log1p(2.5))
    assert evidence_class(c) == TWO_BORDERS_FIT_AGAINST


@pytest.mark.parametrize("fit_call, fit_z, cls", [(True, 4.0, TWO_BORDERS_FIT_AGREES), (None, 2.1, TWO_BORDERS_NO_FIT_CALL)])
def test_two_border_calls_are_told_apart_by_whether_a_decisive_fit_backs_them(tmp_path, fit_call, fit_z, cls):
    # a two-border call that no decisive fit backs is a class of its own (its ceiling:
    # interpret.BORDERS_WITHOUT_FIT_CONFIDENCE), not one with the fit-backed calls
    (c,) = calls_of(dump(tmp_path, [dict(RECORD, fit_call=fit_call, fit_z=fit_z)]))
    assert c.both and evidence_class(c) == cls


@pytest.mark.parametrize("content, words", [("{\"swi3d\": {\"GE\": [", "not a readable"), ("[1, 2]", "a list at the top")])
def test_a_broken_dump_is_refused_with_its_name(tmp_path, content, words):
    p = tmp_path / "broken.json"
    p.write_text(content)
    with pytest.raises(SystemExit, match=f"broken.json: .*{words}"):
        calls_of(p)


def test_a_dump_from_before_the_features_were_recorded_is_refused(tmp_path):
    old = {k: v for k, v in RECORD.items() if k not in ("border_call", "fit_call")}
    with pytest.raises(SystemExit, match="old.json: a dump without the confidence's inputs"):
        calls_of(dump(tmp_path, [old], "old.json"))


@pytest.mark.parametrize("protocol, reason, cls", [
    ("swi3d", "border dark-dominant (1 of 2 border slices readable)", ONE_BORDER_FIT_AGREES_THIN),
    ("gre3d_1mm", "border dark-dominant (1 of 2 border slices readable)", ONE_BORDER_FIT_AGREES_THIN),
    ("gre2d_5mm", "border dark-dominant (1 of 2 border slices readable)", ONE_BORDER_FIT_AGREES_THICK),
    ("swi3d", "border dark-dominant; upper border reading (slice 7, mean phase offset z +6.1) left out: the fitted "
              "dipole produces at most |z| 0.7 there", OTHER)])
def test_one_border_calls_backed_by_the_fit_are_a_class_by_slice_thickness(tmp_path, protocol, reason, cls):
    # the classes of interpret.ONE_BORDER_FIT_AGREES_THIN_CONFIDENCE / _THICK_CONFIDENCE; a border
    # left out as another source's field is not an unread one
    one = dict(RECORD, n_readable_borders=1, fit_call=True, fit_z=5.0, reason=reason)
    (c,) = calls_of(dump(tmp_path, [one], protocol=protocol))
    assert not c.both and c.f > 0 and c.b > 0 and evidence_class(c) == cls
