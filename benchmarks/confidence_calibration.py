"""Refit the calibrated confidence from the realistic benchmark's per-lesion dumps, and check it on held-out ones.

    python benchmarks/realistic_benchmark.py ... --json DIR/NAME.json          # one dump per run
    python benchmarks/confidence_calibration.py --fit DIR/dev_*.json --held-out DIR/fresh_*.json

Every decided call of a detected lesion is one sample: right or wrong against the truth. Its features are
those of ``plugin.method.interpret.combined_logit``, rebuilt from what findings.json reports per lesion
(``border``: the border reading's own call, its evidence, readable borders and each border's mean
phase offset z; ``fit``: its call and z):

* ``f`` = +-log(1 + |fit z|) when the fit made a call (+ when it supports the final call);
* ``b`` = +-the border's evidence (log(1 + the weaker readable border's |z|)) when the border reading made a call;
* ``both`` = both borders readable and supporting the call;
* ``both_z`` = log(1 + the weaker border's |z|) on those calls (0 otherwise).

Printed, for the fitted and the held-out dumps each: the reliability of the confidences as the dumps
report them (the method as run) and their log loss; the calls per evidence class (two agreeing borders with a decisive fit
that agrees, with no decisive fit, against a decisive fit; the aliasing rescue; the rest) with their right fraction and its
posterior under a uniform prior (the source of ``interpret.BORDERS_AGAINST_FIT_CONFIDENCE``,
``BORDERS_WITHOUT_FIT_CONFIDENCE``, ``ALIASING_RESCUE_CONFIDENCE`` and, one readable border with an agreeing decisive
fit by slice thickness, ``ONE_BORDER_FIT_AGREES_THIN_CONFIDENCE`` / ``_THICK_CONFIDENCE``); two-border calls by the weaker border's |z|. Then the both-borders term
refitted by maximum likelihood on the fitted set (``interpret.COMBINED_BOTH_AT_ZERO``,
``COMBINED_BOTH_PER_LOG_Z``; the other terms held), and every wrong call with its numbers.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring import calibration_features  # noqa: E402
from plugin.method.borderexplained import LEFT_OUT_WORDS  # noqa: E402
from plugin.method.interpret import (COMBINED_BORDER, COMBINED_FIT, COMBINED_INTERCEPT,  # noqa: E402
                                     ONE_BORDER_FIT_THIN_SLICE_MAX_MM)

BINS = ((0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 0.99), (0.99, 0.995), (0.995, 1.01))


@dataclass(frozen=True)
class Call:
    source: str        # dump file stem, protocol, vendor, study
    right: bool
    confidence: float  # as reported
    f: float
    b: float
    both: bool
    both_z: float
    words: str         # what to print for a wrong call
    slice_mm: float | None = None   # the protocol's slice thickness (None: not a realistic-cohort protocol)


def slice_mm_of(protocol: str) -> float | None:
    """Slice thickness (mm) of a realistic-cohort protocol (plugin.phantom.realistic), None for another name."""
    from plugin.phantom.realistic import PROTOCOLS
    p = PROTOCOLS.get(protocol)
    return None if p is None else float(p.grid.voxel_mm[0])


def calls_of(path: Path) -> list[Call]:
    """The decided calls of detected lesions in one ``realistic_benchmark.py --json`` dump."""
    out = []
    try:
        dump = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: not a readable realistic_benchmark.py --json dump ({e})") from None
    if not isinstance(dump, dict):
        raise SystemExit(f"{path}: not a realistic_benchmark.py --json dump (a {type(dump).__name__} at the top)")
    for protocol, vendors in dump.items():
        for vendor, studies in vendors.items():
            for s in studies:
                for r in s["records"]:
                    if not r.get("detected") or r["classification"] == "indeterminate":
                        continue
                    if "border_call" not in r:
                        raise SystemExit(f"{path}: a dump without the confidence's inputs (border_call ...): "
                                         "re-run realistic_benchmark.py on a newer main")
                    f, b, both, both_z = calibration_features(
                        r["classification"] == "microbleed", r["fit_call"], r["fit_z"], r["border_call"],
                        r["border_evidence"], r["n_readable_borders"], min(abs(r["upper_border_z"]), abs(r["lower_border_z"])))
                    out.append(Call(f"{path.stem} {protocol} {vendor} study {r['study']}", r["classification"] == r["truth_class"],
                                    float(r["confidence"]), f, b, both, both_z,
                                    f"{r['kind']} {r['truth_class']} d={r['diameter_mm']:.2f} chi={r['chi_ppm']:+.3f} -> "
                                    f"{r['classification']} by {r['decided_by']}; fit z {r['fit_z']:+.1f}, border z "
                                    f"{r['upper_border_z']:+.1f} / {r['lower_border_z']:+.1f} ({r['n_readable_borders']} readable), "
                                    f"evidence {r['border_evidence']:.2f}; {r['reason']}",
                                    slice_mm_of(protocol)))
    return out


def log_loss(conf: np.ndarray, right: np.ndarray) -> float:
    c = np.clip(conf, 1e-6, 1 - 1e-6)
    return float(-np.mean(right * np.log(c) + (1 - right) * np.log(1 - c)))


def reliability(conf: np.ndarray, right: np.ndarray) -> list[str]:
    out = ["    confidence bin   calls  mean confidence  fraction right  wrong"]
    for lo, hi in BINS:
        sel = (conf >= lo) & (conf < hi)
        if sel.any():
            out.append(f"    [{lo:.3f}, {min(hi, 1.0):.3f})  {int(sel.sum()):>6}  {conf[sel].mean():15.4f}  "
                       f"{right[sel].mean():14.4f}  {int((~right[sel].astype(bool)).sum()):>5}")
    return out


RESCUE_WORDS = "borders disagreed (aliasing), read one slice further out"
TWO_BORDERS_FIT_AGREES = "two borders, a decisive fit agrees"
TWO_BORDERS_NO_FIT_CALL = "two borders, no decisive fit"
TWO_BORDERS_FIT_AGAINST = "two borders, a decisive fit against"
RESCUE = "slices beyond disagreeing borders (aliasing rescue)"
ONE_BORDER_FIT_AGREES_THIN = "one border, a decisive fit agrees, thin slices"
ONE_BORDER_FIT_AGREES_THICK = "one border, a decisive fit agrees, thick slices"
OTHER = "other (one border, the fit, pooled)"
CLASSES = (TWO_BORDERS_FIT_AGREES, TWO_BORDERS_NO_FIT_CALL, TWO_BORDERS_FIT_AGAINST, RESCUE,
           ONE_BORDER_FIT_AGREES_THIN, ONE_BORDER_FIT_AGREES_THICK, OTHER)


def evidence_class(c: Call) -> str:
    """Which kind of evidence a call rests on (the classes of the table this script prints)."""
    if RESCUE_WORDS in c.words:
        return RESCUE
    if c.both:
        return TWO_BORDERS_FIT_AGAINST if c.f < 0 else TWO_BORDERS_FIT_AGREES if c.f > 0 else TWO_BORDERS_NO_FIT_CALL
    if c.f > 0 and c.b > 0 and LEFT_OUT_WORDS not in c.words:
        # one readable border (the other not read, not left out) and the fit agreeing: the class of
        # interpret.ONE_BORDER_FIT_AGREES_THIN_CONFIDENCE / _THICK_CONFIDENCE
        thin = c.slice_mm is not None and c.slice_mm <= ONE_BORDER_FIT_THIN_SLICE_MAX_MM
        return ONE_BORDER_FIT_AGREES_THIN if thin else ONE_BORDER_FIT_AGREES_THICK
    return OTHER


def class_table(calls: list[Call]) -> list[str]:
    """Per evidence class: calls, wrong, mean reported confidence, the fraction right, and the
    fraction right's posterior mean and 2.5 % quantile under a uniform prior (Beta(right + 1, wrong + 1))."""
    from scipy.stats import beta
    out = ["    evidence class                                        calls  wrong  mean conf  right    posterior mean  2.5 %"]
    for k in CLASSES:
        sel = [c for c in calls if evidence_class(c) == k]
        if sel:
            n, r = len(sel), sum(c.right for c in sel)
            out.append(f"    {k:<52} {n:>6} {n - r:>6}  {np.mean([c.confidence for c in sel]):9.4f}  {r / n:.4f}  "
                       f"{(r + 1) / (n + 2):14.4f}  {beta.ppf(0.025, r + 1, n - r + 1):.4f}")
    return out


def weaker_border_table(calls: list[Call]) -> list[str]:
    """Two supporting borders: the fraction right by the weaker border's |z| (the both-borders term is
    flat in it: is it right to be?)."""
    out = ["    weaker border |z|   calls  wrong"]
    both = [c for c in calls if c.both]
    edges = (0.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, np.inf)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [c for c in both if lo <= np.expm1(c.both_z) < hi]
        if sel:
            out.append(f"    [{lo:4.1f}, {hi:4.1f})    {len(sel):>6} {sum(not c.right for c in sel):>6}")
    return out


def fit_both_term(calls: list[Call]) -> tuple[float, float, int, int]:
    """Maximum-likelihood ``both_0 + both_z * log(1 + weaker border |z|)`` (each bounded to [0, 8]) on
    the calls resting on two supporting borders that no decisive fit contradicts, the other terms of
    ``combined_logit`` held at the pipeline's constants: the both-borders term graded by how strong
    the weaker border is. Returns (both_0, both_z, calls, wrong)."""
    from scipy.optimize import minimize
    sel = [c for c in calls if evidence_class(c) in (TWO_BORDERS_FIT_AGREES, TWO_BORDERS_NO_FIT_CALL)]
    off = np.array([COMBINED_INTERCEPT + COMBINED_FIT * c.f + COMBINED_BORDER * c.b for c in sel])
    x = np.array([c.both_z for c in sel])
    y = np.array([c.right for c in sel], float)

    def nll(p):
        z = off + p[0] + p[1] * x
        return float(np.sum(np.logaddexp(0, z) - y * z))
    res = minimize(nll, [4.0, 1.0], method="L-BFGS-B", bounds=[(0, 8), (0, 8)])
    return float(res.x[0]), float(res.x[1]), len(sel), int(len(sel) - y.sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", nargs="+", type=Path, required=True, help="dumps the logistic is fitted on")
    ap.add_argument("--held-out", nargs="*", type=Path, default=[], help="dumps it is only checked on")
    args = ap.parse_args(argv)
    print("$ python benchmarks/confidence_calibration.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    sets = {"fitted": [c for p in args.fit for c in calls_of(p)], "held out": [c for p in args.held_out for c in calls_of(p)]}
    for name, calls in sets.items():
        if calls:
            right = np.array([c.right for c in calls], float)
            print(f"\n{name}: {len(calls)} decided calls, {int(len(calls) - right.sum())} wrong; "
                  f"as reported: log loss {log_loss(np.array([c.confidence for c in calls]), right):.4f}")
            print("\n".join(reliability(np.array([c.confidence for c in calls]), right)))
    for name, calls in sets.items():
        if calls:
            print(f"\n{name}: by the evidence the call rests on")
            print("\n".join(class_table(calls)))
            print(f"{name}: two supporting borders, by the weaker border's |z|")
            print("\n".join(weaker_border_table(calls)))
    b0, bz, n, wrong = fit_both_term(sets["fitted"])
    print(f"\nboth-borders term refitted on {n} calls ({wrong} wrong) resting on two supporting borders, no decisive "
          f"fit against: COMBINED_BOTH_AT_ZERO = {b0:.3f}, COMBINED_BOTH_PER_LOG_Z = {bz:.3f}")
    print("\nwrong calls (confidence as reported)")
    for name, calls in sets.items():
        for c in calls:
            if not c.right:
                print(f"  [{name}] {c.source}: {c.confidence:.3f} [{evidence_class(c)}] {c.words}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
