"""benchmarks/compare_realistic.py: the before/after comparison behind benchmarks/accuracy.md's
per-lesion claims ("every record identical") names each changed call and each false spot that
went or came."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.compare_realistic import compare  # noqa: E402


def _rec(cls, detected=True, call=None):
    return {"study": 0, "truth_class": cls, "kind": "paper", "diameter_mm": 2.5, "chi_ppm": 0.2, "detected": detected,
            "classification": call or (cls if detected else ""), "reason": "because"}


def _run(records, false_spots):
    return {"swi3d": {"GE": [{"records": records, "false_spots": false_spots}]}}


def test_names_changed_calls_and_false_spots():
    sinus = ["dural sinus", {"center_lps_mm": [0.5, -3.4, 69.7], "diameter_mm": 2.44}]
    edge = ["brain edge", {"center_lps_mm": [70.0, 1.0, -11.0], "diameter_mm": 1.0}]
    before = _run([_rec("microbleed"), _rec("calcification")], [sinus])
    after = _run([_rec("microbleed", detected=False), _rec("calcification")], [edge])
    lines = compare(before, after)
    assert any("microbleed" in x and "-> missed" in x for x in lines)
    assert any("false spot gone" in x and "dural sinus" in x for x in lines)
    assert any("false spot new" in x and "brain edge" in x for x in lines)
    assert lines[-1].endswith("1 of 2 lesion records changed")
    assert compare(before, before)[-1].endswith("0 of 2 lesion records changed")


def test_refuses_different_cohorts():
    with pytest.raises(SystemExit, match="not the same cohort"):
        compare(_run([_rec("microbleed")], []), _run([_rec("microbleed"), _rec("microbleed")], []))
