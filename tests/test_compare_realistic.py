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


def test_scoring_names_the_rejection_nearest_a_missed_lesion_on_the_arrays_path():
    """realistic_benchmark.score_study with an ArrayAnalysis (RejectedSpot objects, not findings.json
    dicts): a missed lesion gets the nearest rejected candidate as its reason."""
    from types import SimpleNamespace

    from benchmarks.realistic_benchmark import score_study
    from plugin.model import RejectedSpot
    from plugin.phantom import realistic as R
    from plugin.phantom import render as P

    tiny = R.Protocol("tiny", P.Grid((32, 128, 128), (2.5, 1.8, 1.8)), 3.0, (25.0,), False, 30.0, (3, 3, 3), "test")
    plan = R.realistic_cohort(0, protocol=tiny, n_studies=1, lesion_specs=[("microbleed", 3.0, 0.3, "paper", None)],
                              anatomy_mm=2.0)[0]
    lesion = plan.lesions[0]
    truth = {"voxel_mm_slice_row_column": [2.5, 1.8, 1.8], "physiological_calcifications": [],
             "lesions": [{"class": "microbleed", "center_lps_mm": list(lesion.center_lps_mm), "diameter_mm": 3.0,
                          "chi_ppm": 0.3, "n_slices": 2}]}
    near = tuple(v + d for v, d in zip(lesion.center_lps_mm, (1.0, 0.0, 0.0)))
    res = SimpleNamespace(lesions=[], rejected=[RejectedSpot(near, 4.2, 3, "brain edge", "rim")])
    rec = score_study("tiny", "GE", plan, truth, res).records[0]
    assert not rec.detected and rec.reason == "rejected 1.0 mm away: brain edge (rim; 4.2 mm over 3 slices)"
