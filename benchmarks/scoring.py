"""Scoring shared by the accuracy benchmarks on phantoms with truth (realistic cohort, real backgrounds).

A truth lesion is detected when a spot's centre lies within max(3 mm, its diameter) of it in-plane
and within max(3 mm, its diameter, the slice thickness) along z (a spot's centre is quantised to
slice centres). Lesions are matched largest first, each spot once. Calcification sensitivity and
specificity are over detected lesions, an ``indeterminate`` call counted as wrong.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

SIZE_GROUPS = (("<2 mm", 0.0, 2.0), ("2-3 mm", 2.0, 3.0), (">=3 mm", 3.0, 99.0))
#: confidence bins of the reliability tables (decided calls)
CONFIDENCE_BINS = ((0.0, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.99), (0.99, 1.01))


def match_spot(truth_lesion: dict, centres_lps_mm: np.ndarray, used: set[int], slice_mm: float) -> Optional[int]:
    """Index of the nearest unused spot centre that matches ``truth_lesion`` (see module docstring), or None."""
    if not len(centres_lps_mm):
        return None
    diff = np.asarray(centres_lps_mm, float) - np.asarray(truth_lesion["center_lps_mm"], float)
    d = np.linalg.norm(diff, axis=1)
    ok = (np.linalg.norm(diff[:, :2], axis=1) <= max(3.0, truth_lesion["diameter_mm"])) & \
         (np.abs(diff[:, 2]) <= max(3.0, truth_lesion["diameter_mm"], slice_mm))
    d[~ok] = np.inf
    d[list(used)] = np.inf
    k = int(np.argmin(d))
    return k if np.isfinite(d[k]) else None


def match_lesions(truth_lesions: Sequence[dict], centres_lps_mm: np.ndarray, slice_mm: float,
                  used: Optional[set[int]] = None) -> dict[int, Optional[int]]:
    """Truth lesion index -> matched spot index (largest lesions first); ``used`` collects the spots."""
    used = set() if used is None else used
    out: dict[int, Optional[int]] = {}
    for i in sorted(range(len(truth_lesions)), key=lambda i: -truth_lesions[i]["diameter_mm"]):
        k = match_spot(truth_lesions[i], centres_lps_mm, used, slice_mm)
        if k is not None:
            used.add(k)
        out[i] = k
    return out


def nearest_rejection(rejected: Sequence[dict], lesion: dict) -> str:
    """What findings.json's ``rejected`` list says about a missed truth lesion: the nearest rejected
    candidate within max(6 mm, the lesion's diameter) of its centre, or that none is listed there
    (findings.json lists the most relevant rejected candidates, not all)."""
    reach = max(6.0, float(lesion["diameter_mm"]))
    c = np.asarray(lesion["center_lps_mm"], float)
    near = [(float(np.linalg.norm(np.asarray(r["center_lps_mm"], float) - c)), r) for r in rejected]
    near = [x for x in near if x[0] <= reach]
    if not near:
        return f"no candidate listed within {reach:.0f} mm"
    d, r = min(near, key=lambda x: x[0])
    return f"rejected {d:.1f} mm away: {r['reason']} ({r.get('detail', '')}; {r['diameter_mm']} mm over {r['n_slices']} slices)"


def line_fit(x, y) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the least-squares line y = slope x + intercept; NaN below 3 points."""
    if len(x) < 3:
        return float("nan"), float("nan"), float("nan")
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, icpt = np.polyfit(x, y, 1)
    r2 = 1.0 - np.sum((y - (slope * x + icpt)) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12)
    return float(slope), float(icpt), float(r2)


def calibration_features(final: bool, fit_call, fit_z: float, border_call, border_evidence: float,
                         n_readable_borders: int, weaker_border_z: float) -> tuple[float, float, bool, float]:
    """The features of ``plugin.method.interpret.combined_logit`` for a call of ``final``
    (paramagnetic?): f = +-log(1 + |fit z|) when the fit made a call, b = +-the border's evidence when
    the border reading made one (+ when that reading supports the call), both = both borders
    readable and supporting, and log(1 + the weaker border's |z|) on those calls (0 otherwise)."""
    f = 0.0 if fit_call is None else float(np.log1p(abs(fit_z))) * (1 if fit_call == final else -1)
    b = 0.0 if border_call is None else float(border_evidence) * (1 if border_call == final else -1)
    both = n_readable_borders == 2 and border_call == final
    return f, b, both, float(np.log1p(abs(weaker_border_z))) if both else 0.0


def rate(a: int, b: int) -> str:
    return f"{a / b:.3f} ({a}/{b})" if b else "n/a"


def call_rates(records: Iterable) -> dict:
    """Counts over lesion records (attributes ``truth_class``, ``detected``, ``classification``,
    ``diameter_mm``, ``chi_ppm``): calcification sensitivity / specificity over detected lesions
    (indeterminate = wrong), decided calls right, indeterminate, recall (all and per size group)."""
    recs = list(records)
    det = [r for r in recs if r.detected]
    ca = [r for r in det if r.truth_class == "calcification"]
    mb = [r for r in det if r.truth_class == "microbleed"]
    decided = [r for r in det if r.classification in ("microbleed", "calcification")]
    return {
        "sensitivity": (sum(r.classification == "calcification" for r in ca), len(ca)),
        "specificity": (sum(r.classification == "microbleed" for r in mb), len(mb)),
        "decided_right": (sum(r.classification == r.truth_class for r in decided), len(decided)),
        "indeterminate": (sum(r.classification == "indeterminate" for r in det), len(det)),
        "recall": (len(det), len(recs)),
        "recall_by_size": {name: (sum(r.detected for r in recs if lo <= r.diameter_mm < hi),
                                  sum(1 for r in recs if lo <= r.diameter_mm < hi)) for name, lo, hi in SIZE_GROUPS},
    }


def analysis_inputs(images, voxel_mm):
    """(magnitude, phase_rad, echo time ms, background, magnitude_echoes) of a rendered realistic
    study as ``analyze_paths`` hands them to ``analyze_arrays``: every echo combined
    (``combine_echoes``; the SMV background when the fit removed the phase offset), or the one
    echo as it is."""
    from plugin.method.echoes import combine_echoes
    if len(images.echo_times_ms) > 1:
        combo = combine_echoes(images.magnitude, images.phase_rad, images.echo_times_ms, voxel_mm)
        return (combo.magnitude, combo.phase_rad, combo.reference_te_ms, "smv" if combo.offset_removed else "auto",
                combo.darkness_echoes)
    return images.magnitude[-1], images.phase_rad[-1], images.echo_times_ms[-1], "auto", None
