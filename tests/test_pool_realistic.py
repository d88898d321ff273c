"""benchmarks/pool_realistic.py: several realistic runs pooled per protocol and rendering with Wilson
intervals (benchmarks/accuracy.md's pooled issue-10 figures come from it)."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.pool_realistic import Count, load_runs, pooled, report  # noqa: E402


def _rec(cls, call, chi, d=2.5, detected=True, conf=0.99):
    return {"study": 0, "truth_class": cls, "kind": "paper", "diameter_mm": d, "chi_ppm": chi, "detected": detected,
            "classification": call if detected else "", "confidence": conf, "chi_reported_ppm": chi * 0.9,
            "reason": "because"}


def _write(path, records, false_spots=()):
    path.write_text(json.dumps({"swi3d": {"GE": [{"records": records, "false_spots": list(false_spots)}]}}))
    return path


def test_wilson_interval_matches_the_textbook_values():
    lo, hi = Count(0, 10).wilson95()
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = Count(60, 61).wilson95()
    assert (round(lo, 3), round(hi, 3)) == (0.913, 0.997)


def test_runs_are_pooled_by_their_counts(tmp_path):
    a = _write(tmp_path / "s1.json", [_rec("calcification", "calcification", -0.2), _rec("microbleed", "indeterminate", 0.1),
                                      _rec("microbleed", "microbleed", 0.02, d=1.5)],
               [["vein", {"center_lps_mm": [0, 0, 0]}]])
    b = _write(tmp_path / "s2.json", [_rec("calcification", "microbleed", -0.1, conf=0.7), _rec("microbleed", "microbleed", 0.3),
                                      _rec("microbleed", "", 0.3, d=3.5, detected=False)])
    groups = load_runs([a, b])
    runs = groups[("swi3d", "GE")]
    tot = pooled(runs)
    assert tot.counts["calc_sens"] == Count(1, 2)
    assert tot.counts["calc_spec"] == Count(2, 3)             # the indeterminate microbleed counts wrong
    assert tot.counts["strong_spec"] == Count(1, 2)           # the 0.02 ppm microbleed is outside |chi| >= 0.03
    assert tot.counts["decided_right"] == Count(3, 4)
    assert tot.counts["indeterminate"] == Count(1, 5)
    assert tot.counts["recall_3mm"] == Count(0, 1)
    assert tot.false_per_study == pytest.approx(0.5)
    text = "\n".join(report(groups))
    assert "| s1 |" in text and "| **pooled** |" in text and "0.667 (2/3) [" in text
    assert "| 0.70-0.80 | 1 | 0.700 | 0.000 (0/1) [0.000, 0.793] |" in text    # the wrong call at confidence 0.7


def test_refuses_runs_of_different_renderings(tmp_path):
    a = _write(tmp_path / "a.json", [_rec("microbleed", "microbleed", 0.3)])
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"swi3d": {"Siemens": [{"records": [], "false_spots": []}]}}))
    with pytest.raises(SystemExit, match="same protocols and renderings"):
        load_runs([a, b])
    c = tmp_path / "c.json"
    c.write_text("{not json")
    with pytest.raises(SystemExit, match="c.json: not a realistic_benchmark --json file"):
        load_runs([c])
