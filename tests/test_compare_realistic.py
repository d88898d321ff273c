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


def test_a_missed_lesion_is_given_the_nearest_listed_rejection():
    from benchmarks.scoring import nearest_rejection
    rejected = [{"center_lps_mm": [9.0, 0.0, 0.0], "reason": "too large", "detail": "10.1 mm", "diameter_mm": 10.1, "n_slices": 3},
                {"center_lps_mm": [1.0, 0.0, 0.0], "reason": "brain edge", "detail": "rim", "diameter_mm": 8.96, "n_slices": 4}]
    lesion = {"center_lps_mm": [0.0, 0.0, 0.0], "diameter_mm": 6.3}
    assert nearest_rejection(rejected, lesion) == "rejected 1.0 mm away: brain edge (rim; 8.96 mm over 4 slices)"
    assert nearest_rejection(rejected[:1], lesion) == "no candidate listed within 6 mm"     # 9 mm: out of reach
    assert nearest_rejection(rejected[:1], {"center_lps_mm": [0, 0, 0], "diameter_mm": 9.5}).startswith("rejected 9.0 mm away: too large")
