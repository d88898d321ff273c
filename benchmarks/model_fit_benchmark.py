"""Border pattern vs central slice vs dipole fit, side by side; calibration of the combined confidence.

    python benchmarks/model_fit_benchmark.py                                   # swi3d + gre2d_5mm, 4 studies each, + paper cohort
    python benchmarks/model_fit_benchmark.py --protocols gre2d_5mm --studies 2 --no-paper
    python benchmarks/model_fit_benchmark.py --calibrate                       # also fit the confidence logistic

Cohorts: the realistic head phantom (:func:`plugin.phantom.realistic.realistic_cohort`, seed 0) per
protocol, rendered once per handedness (right-handed: read as GE, left-handed: as Siemens), and the
paper cohort (:func:`plugin.phantom.cohort.paper_cohort`, raw phase SNR 40 and scanner-filtered
phase, right- and left-handed). Analysis: ``plugin.pipeline.analyze_arrays`` on the arrays (the last
echo) with the echo time and field strength given, default options. (``benchmarks/realistic_benchmark.py``
runs the swi3d protocol through every vendor's DICOM encoding; the arrays carry the same numbers.)

A truth lesion is detected when a spot's centre lies within max(3 mm, its diameter) in plane and
max(3 mm, its diameter, the slice thickness) along z. Per detected lesion four readings:

* ``border``: the paper's border-slice reading alone (``plugin.method.interpret.interpret``: what
  the pipeline called before the dipole fit), ``indeterminate`` counted as "not calcification";
* ``central``: the central slice's dominance through the convention (the paper's comparison);
* ``fit``: the dipole fit's sign alone when ``|z| >= fit_min_z``, else no call;
* ``combined``: the pipeline's call now (``interpret.combine``).

Printed per protocol: sensitivity / specificity for calcification, indeterminate fraction,
decided-right fraction (before = border, after = combined), the paper's Table 2 layout per size group
with all four readings, the fitted chi against the truth for spots >= 2 mm (slope and R^2; the chi
uses the detected radius, which blooming enlarges), and the reliability of the combined confidence.
``--calibrate`` fits ``interpret.COMBINED_*`` by maximum likelihood on every decided call.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring import calibration_features, match_spot  # noqa: E402
from plugin.method.interpret import InterpretRules, is_paramagnetic  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402
from plugin.phantom import render as phantom  # noqa: E402
from plugin.phantom.cohort import paper_cohort  # noqa: E402
from plugin.method.dipolefit import FitParams  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays  # noqa: E402

OPTIONS = AnalysisOptions()   # --fit-param replaces fields of its dipole_fit

PAPER_T2 = {"all": (98.4, 100, 79.0, 83.6), "<2.5": (96.2, 100, 96.2, 100), ">=2.5": (100, 100, 66.7, 61.1)}
SIZE_GROUPS = (("all", 0.0, 99.0), ("<2.5", 0.0, 2.5), (">=2.5", 2.5, 99.0))
READINGS = ("border", "central", "fit", "combined")


@dataclass
class Rec:
    cohort: str
    convention: str
    study: int
    truth_class: str
    kind: str
    diameter_mm: float
    chi_ppm: float
    detected: bool = False
    n_slices: int = 0
    calls: dict = None          # reading -> "microbleed" | "calcification" | "indeterminate"
    confidence: float = 0.0
    basis: str = ""
    fit_z: float = 0.0
    fit_chi: float | None = None
    f_feature: float = 0.0      # calibration features of the combined call (interpret.combined_logit)
    b_feature: float = 0.0
    both: bool = False
    both_log_z: float = 0.0     # log(1 + the weaker border's |z|) when ``both``
    reason: str = ""


def _cls(para) -> str:
    return "indeterminate" if para is None else ("microbleed" if para else "calcification")


def score(cohort: str, convention: str, study: int, truth: dict, res, slice_mm: float) -> list[Rec]:
    spots = res.lesions
    centres = np.array([s.center_lps_mm for s in spots]) if spots else np.zeros((0, 3))
    used: set[int] = set()
    out = []
    for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
        rec = Rec(cohort, convention, study, t["class"], t.get("kind", "paper"), t["diameter_mm"], t["chi_ppm"])
        k = match_spot(t, centres, used, slice_mm)
        if k is not None:
            used.add(k)
            les, it, rd, fit = spots[k], res.interpretations[k], res.readings[k], res.fits[k]
            central = rd.central.pattern
            rec.detected, rec.n_slices = True, les.n_slices
            rec.calls = {"border": _cls(it.border_call),
                         "central": _cls(None if central is None else is_paramagnetic(central.dark_dominant, convention)),
                         "fit": _cls(it.fit_call), "combined": les.classification.value}
            rec.confidence, rec.basis, rec.reason = les.confidence, it.basis, les.reason
            rec.fit_z, rec.fit_chi = it.fit_z, fit.chi_ppm if fit.usable else None
            if it.paramagnetic is not None and les.classification.value != "indeterminate":
                rec.f_feature, rec.b_feature, rec.both, rec.both_log_z = calibration_features(
                    it.paramagnetic, it.fit_call, it.fit_z, it.border_call, it.evidence, it.n_readable_borders,
                    it.z_evidence)
        out.append(rec)
    return out


def run_realistic(protocol: str, args) -> list[Rec]:
    prot = R.PROTOCOLS[protocol]
    plans = R.realistic_cohort(args.seed, protocol=protocol, n_studies=args.studies)
    acq = prot.acquisition()
    recs = []
    for plan in plans:
        for convention in args.conventions:
            t0 = time.perf_counter()
            images, truth = R.make_study(plan, acquisition=acq, convention=convention, seed=args.seed * 1000 + plan.index)
            t1 = time.perf_counter()
            res = analyze_arrays(images.magnitude[-1], images.phase_rad[-1], images.affine_lps, convention=convention,
                                 options=OPTIONS, echo_time_ms=images.echo_times_ms[-1], field_strength_t=prot.b0_t)
            t2 = time.perf_counter()
            fit_s = getattr(res, "fit_seconds", float("nan"))
            recs += score(protocol, convention, plan.index, truth, res, prot.grid.voxel_mm[0])
            print(f"  {protocol:<10} {convention:<13} study {plan.index}: {len(res.lesions)} spots, render {t1 - t0:.1f} s, "
                  f"analysis {t2 - t1:.1f} s (dipole fits {fit_s:.3f} s)", file=sys.stderr, flush=True)
            del images
    return recs


def run_paper(args) -> list[Rec]:
    recs = []
    for cond, acq_kwargs in (("paper raw", {}), ("paper filtered", {"filtered": True})):
        for plan in paper_cohort(args.seed, n_studies=args.studies):
            for convention in args.conventions:
                acq = replace(phantom.Acquisition(), **acq_kwargs)
                images, truth = phantom.make_study(plan.lesions, plan.veins, grid=plan.grid, head=plan.head, acquisition=acq,
                                                   convention=convention, seed=args.seed * 1000 + plan.index)
                res = analyze_arrays(images.magnitude[-1], images.phase_rad[-1], images.affine_lps, convention=convention,
                                     options=OPTIONS, echo_time_ms=acq.echo_times_ms[-1], field_strength_t=acq.b0_t)
                recs += score(cond, convention, plan.index, truth, res, plan.grid.voxel_mm[0])
                print(f"  {cond:<14} {convention:<13} study {plan.index}: {len(res.lesions)} spots "
                      f"(dipole fits {getattr(res, 'fit_seconds', float('nan')):.3f} s)", file=sys.stderr, flush=True)
                del images
    return recs


def _rate(a: int, b: int) -> str:
    return f"{a / b:.3f} ({a}/{b})" if b else "n/a"


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}" if b else "  n/a"


def summary(recs: list[Rec], label: str) -> list[str]:
    det = [r for r in recs if r.detected]
    out = [f"\n## {label}: {len(det)} detected lesions of {len(recs)} ({len({(r.convention, r.study) for r in recs})} studies)"]
    for name, key in (("before (border only)", "border"), ("after (border + dipole fit)", "combined")):
        ca = [r for r in det if r.truth_class == "calcification"]
        mb = [r for r in det if r.truth_class == "microbleed"]
        strong = lambda rs: [r for r in rs if abs(r.chi_ppm) >= 0.03]  # noqa: E731
        decided = [r for r in det if r.calls[key] != "indeterminate"]
        out.append(f"  {name}: calcification sensitivity {_rate(sum(r.calls[key] == 'calcification' for r in ca), len(ca))}, "
                   f"specificity {_rate(sum(r.calls[key] == 'microbleed' for r in mb), len(mb))}; "
                   f"|chi| >= 0.03: {_rate(sum(r.calls[key] == 'calcification' for r in strong(ca)), len(strong(ca)))} / "
                   f"{_rate(sum(r.calls[key] == 'microbleed' for r in strong(mb)), len(strong(mb)))}")
        out.append(f"      indeterminate {_rate(len(det) - len(decided), len(det))}; decided right "
                   f"{_rate(sum(r.calls[key] == r.truth_class for r in decided), len(decided))}")
    basis = defaultdict(int)
    for r in det:
        basis[r.basis] += 1
    out.append("  decided by: " + ", ".join(f"{k} {v}" for k, v in sorted(basis.items())))
    by_slices = defaultdict(lambda: [0, 0, 0])
    for r in det:
        k = min(r.n_slices, 3)
        by_slices[k][0] += 1
        by_slices[k][1] += r.calls["combined"] == r.truth_class
        by_slices[k][2] += r.calls["border"] == r.truth_class
    out.append("  right by slices spanned (combined / border only): " + "; ".join(
        f"{'>=3' if k == 3 else k}: {v[1]}/{v[0]} vs {v[2]}/{v[0]}" for k, v in sorted(by_slices.items())))
    pts = [(r.chi_ppm, r.fit_chi) for r in det if r.diameter_mm >= 2.0 and r.fit_chi is not None]
    if len(pts) >= 3:
        x, y = np.array(pts).T
        slope, icpt = np.polyfit(x, y, 1)
        r2 = float(np.corrcoef(x, y)[0, 1] ** 2)
        out.append(f"  chi from the fit vs truth, spots >= 2 mm (n {len(pts)}): slope {slope:.3f}, intercept {icpt:+.4f} ppm, "
                   f"R^2 {r2:.3f}; sign right {np.mean(np.sign(x) == np.sign(y)):.3f}")
    out.append("  Table 2 layout: sensitivity / specificity for calcification (%), paper's border and central in ()")
    out.append(f"  {'size':<7}{'n':>5} {'border SEN':>14} {'border SPE':>14} {'central SEN':>14} {'central SPE':>14}"
               f" {'fit SEN':>8} {'fit SPE':>8} {'fit ind':>8} {'comb SEN':>9} {'comb SPE':>9} {'ind':>5}")
    for s, lo, hi in SIZE_GROUPS:
        sel = [r for r in det if lo <= r.diameter_mm < hi]
        ca = [r for r in sel if r.truth_class == "calcification"]
        mb = [r for r in sel if r.truth_class == "microbleed"]
        sen = {k: pct(sum(r.calls[k] == "calcification" for r in ca), len(ca)) for k in READINGS}
        spe = {k: pct(sum(r.calls[k] != "calcification" for r in mb), len(mb)) for k in READINGS}
        p = PAPER_T2[s]
        out.append(f"  {s:<7}{len(sel):>5} {sen['border']} ({p[0]:5.1f}) {spe['border']} ({p[1]:5.1f}) "
                   f"{sen['central']} ({p[2]:5.1f}) {spe['central']} ({p[3]:5.1f}) {sen['fit']:>8} {spe['fit']:>8} "
                   f"{sum(r.calls['fit'] == 'indeterminate' for r in sel):>8} {sen['combined']:>9} {spe['combined']:>9} "
                   f"{sum(r.calls['combined'] == 'indeterminate' for r in sel):>5}")
    out.append("  (fit SPE counts a fit without a call as 'not calcification', as the paper's border SPE does)")
    return out


def reliability(recs: list[Rec]) -> list[str]:
    calls = [r for r in recs if r.detected and r.calls["combined"] != "indeterminate"]
    bins = [(0.0, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 0.98), (0.98, 0.99), (0.99, 0.995), (0.995, 1.01)]
    out = ["confidence bin   calls  mean confidence  fraction right  wrong"]
    for lo, hi in bins:
        sel = [r for r in calls if lo <= r.confidence < hi]
        if sel:
            right = np.mean([r.calls["combined"] == r.truth_class for r in sel])
            out.append(f"[{lo:.3f}, {min(hi, 1.0):.3f})  {len(sel):>6}  {np.mean([r.confidence for r in sel]):15.4f}  "
                       f"{right:14.4f}  {sum(r.calls['combined'] != r.truth_class for r in sel):>5}")
    return out


def fit_calibration(recs: list[Rec]) -> tuple[float, ...]:
    """Maximum-likelihood logistic of P(right | f, b, both, both log(1 + weaker border z)) over every
    decided combined call: ``interpret.COMBINED_INTERCEPT, _FIT, _BORDER, _BOTH_AT_ZERO, _BOTH_PER_LOG_Z``."""
    from scipy.optimize import minimize
    calls = [r for r in recs if r.detected and r.calls["combined"] != "indeterminate"]
    X = np.array([[1.0, r.f_feature, r.b_feature, float(r.both), r.both_log_z] for r in calls])
    y = np.array([r.calls["combined"] == r.truth_class for r in calls], float)

    def nll(p):
        z = X @ p
        return float(np.sum(np.logaddexp(0, z) - y * z))
    # slopes bounded to [0, 8]: more evidence never means less confidence, and with few wrong
    # calls the unbounded maximum likelihood runs off to infinity
    fit = minimize(nll, [2.0, 1.0, 0.5, 1.0, 1.0], method="L-BFGS-B", bounds=[(-20, 20)] + [(0, 8)] * 4)
    return tuple(float(v) for v in fit.x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", nargs="*", default=["swi3d", "gre2d_5mm"], choices=list(R.PROTOCOLS))
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conventions", nargs="+", default=["right-handed", "left-handed"])
    ap.add_argument("--no-paper", action="store_true", help="leave out the paper cohort")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every lesion some reading got wrong")
    ap.add_argument("--calibrate", action="store_true", help="fit the combined confidence logistic on these results")
    ap.add_argument("--fit-param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a plugin.method.dipolefit.FitParams field (numbers only), e.g. model_error=0")
    args = ap.parse_args(argv)
    global OPTIONS
    if args.fit_param:
        over = {k: type(getattr(FitParams(), k))(float(v)) for k, v in (a.split("=", 1) for a in args.fit_param)}
        OPTIONS = replace(AnalysisOptions(), dipole_fit=replace(FitParams(), **over))
    command = "python benchmarks/model_fit_benchmark.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    all_recs: list[Rec] = []
    lines: list[str] = []
    for protocol in args.protocols:
        recs = run_realistic(protocol, args)
        all_recs += recs
        lines += summary(recs, f"{protocol}: {R.PROTOCOLS[protocol].description}")
    if not args.no_paper:
        recs = run_paper(args)
        all_recs += recs
        for cond in ("paper raw", "paper filtered"):
            lines += summary([r for r in recs if r.cohort == cond], f"{cond} (paper cohort, 0.45 x 0.45 x 2.5 mm, 3 T, TE 25 ms)")
    print(f"$ {command.strip()}")
    print(f"borderphase model-fit benchmark: seed {args.seed}, {args.studies} studies per cohort and convention, "
          f"{time.perf_counter() - t0:.0f} s in all; fit_min_z {InterpretRules().fit_min_z:g}")
    print("\n".join(lines))
    if args.verbose:
        print("\nLesions some reading got wrong or left open:")
        for r in all_recs:
            if r.detected and any(r.calls[k] != r.truth_class for k in ("border", "fit", "combined")):
                print(f"  {r.cohort} {r.convention} study {r.study}: {r.kind} {r.truth_class} d={r.diameter_mm:.2f} "
                      f"chi={r.chi_ppm:+.3f} slices={r.n_slices} fit chi={r.fit_chi} z={r.fit_z:.1f} "
                      + " ".join(f"{k}={v[:4]}" for k, v in r.calls.items()) + f" conf={r.confidence:.3f} | {r.reason}")
    print("\nReliability of the combined confidence (every decided call above)")
    print("\n".join(reliability(all_recs)))
    if args.calibrate:
        a, b, c, d, e = fit_calibration(all_recs)
        print(f"\ncalibration fit: COMBINED_INTERCEPT = {a:.3f}, COMBINED_FIT = {b:.3f}, COMBINED_BORDER = {c:.3f}, "
              f"COMBINED_BOTH_AT_ZERO = {d:.3f}, COMBINED_BOTH_PER_LOG_Z = {e:.3f} (the both-borders term: "
              "benchmarks/confidence_calibration.py refits it on the realistic benchmark's dumps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
