"""Accuracy of the border-slice analysis on the phantom's paper cohort, per vendor.

    python benchmarks/accuracy_benchmark.py                 # default: 4 vendors x (default, filtered, snr15)
    python benchmarks/accuracy_benchmark.py --conditions default --vendors GE
    python benchmarks/accuracy_benchmark.py --calibrate     # also fit the confidence logistic

For each condition the paper cohort (plugin.phantom.cohort.paper_cohort: 128 microbleeds and 62
calcifications with the paper's size/susceptibility distribution, spread over 4 studies of
512 x 512 x 60, 0.45 x 0.45 x 2.5 mm, 3 T, TE 25 ms, plus 3 veins per study) is rendered once
per phase handedness (right-handed for GE/Philips, left-handed for Siemens/Canon). In the
``default`` condition every study is written through ``dicom_io.phantom_writer.classic`` the way that vendor
writes it, and read back through ``dicom_io.read.series`` (scan, pairing, vendor scaling, convention
from the headers), so the whole chain is exercised; the other conditions analyse the arrays
with the vendor's default convention (``--dicom-all`` writes DICOM for them too).

Conditions: ``default`` (raw phase with background, SNR 40), ``filtered`` (the scanner's
homodyne-filtered phase, as SWI/SWAN deliver), ``snr15``, ``homodyne`` (raw phase, our own
homodyne high pass instead of the Laplacian method).

Scoring: a truth lesion is detected when a spot's centre lies within max(3 mm, its diameter).
Table 1 counts patterns of detected lesions, shown in the paper's display (right-handed:
paramagnetic dark), so left-handed vendors' patterns are mirrored (1<->2, 3<->4, 5<->6).
Table 2: sensitivity and specificity for calcification; border = the classification
(indeterminate counts as "not calcification"), central = the central pattern's dominance through
the convention. Sizes are the truth diameters.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.phantom import render as phantom  # noqa: E402
from plugin.method.interpret import is_paramagnetic  # noqa: E402
from plugin.phantom.cohort import paper_cohort  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays  # noqa: E402

VENDOR_CONVENTION = {"GE": "right-handed", "Philips": "right-handed", "Siemens": "left-handed", "Canon": "left-handed"}
CONDITIONS = {
    "default": (dict(), "auto"),
    "filtered": (dict(filtered=True), "auto"),
    "snr15": (dict(snr=15.0), "auto"),
    "snr8": (dict(snr=8.0), "auto"),
    "homodyne": (dict(), "homodyne"),
    "laplacian": (dict(), "laplacian"),
    "nobg": (dict(), "none"),
}
MIRROR = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5}

# Method paper, Table 1 (counts) and Table 2 (%), for printing beside ours.
PAPER_T1 = {
    "border": {"microbleed": {"all": [128, 0, 0, 0, 0, 0], "<2.5": [74, 0, 0, 0, 0, 0], ">=2.5": [54, 0, 0, 0, 0, 0]},
               "calcification": {"all": [1, 61, 0, 0, 0, 0], "<2.5": [1, 25, 0, 0, 0, 0], ">=2.5": [0, 36, 0, 0, 0, 0]}},
    "central": {"microbleed": {"all": [80, 0, 10, 3, 17, 18], "<2.5": [73, 0, 0, 0, 1, 0], ">=2.5": [7, 0, 10, 3, 16, 18]},
                "calcification": {"all": [2, 27, 0, 9, 11, 13], "<2.5": [1, 25, 0, 0, 0, 0], ">=2.5": [1, 2, 0, 9, 11, 13]}},
}
PAPER_T2 = {"all": (98.4, 100, 79.0, 83.6), "<2.5": (96.2, 100, 96.2, 100), ">=2.5": (100, 100, 66.7, 61.1)}


@dataclass
class Record:
    vendor: str
    condition: str
    study: int
    truth_class: str
    diameter_mm: float
    chi_ppm: float
    visible: bool
    detected: bool = False
    classification: str = ""
    border_pattern: int | None = None        # as displayed in the vendor's convention
    central_pattern: int | None = None
    confidence: float = 0.0
    evidence: float = 0.0
    n_readable: int = 0
    z_evidence: float = 0.0
    reason: str = ""


@dataclass
class StudyResult:
    records: list[Record] = field(default_factory=list)
    false_positives: int = 0
    fp_where: list = field(default_factory=list)
    analysis_s: float = 0.0


def render(plan, convention: str, acq_kwargs: dict, seed: int):
    acq = replace(phantom.Acquisition(), **acq_kwargs)
    images, truth = phantom.make_study(plan.lesions, plan.veins, grid=plan.grid, head=plan.head, acquisition=acq,
                                       convention=convention, seed=seed)
    return images.magnitude[-1], images.phase_rad[-1], images.affine_lps, truth


def analyze_through_dicom(vendor: str, mag, phase, affine, echo_time_ms: float, workdir: Path, background: str):
    """Write as ``vendor`` writes, read back through dicom_io, analyse; returns (ArrayAnalysis, note)."""
    from pydicom.uid import generate_uid

    from dicom_io import convention as dconv
    from dicom_io.read import series as dseries
    from dicom_io.phantom_writer import StackToWrite, StudyInfo, write_acquisition
    from plugin.pairing import pair_series

    study = StudyInfo(study_instance_uid=generate_uid(), frame_of_reference_uid=generate_uid())
    stacks = [StackToWrite("magnitude", 1, echo_time_ms, mag), StackToWrite("phase", 1, echo_time_ms, phase)]
    write_acquisition(workdir, vendor=vendor, style="classic", stacks=stacks, affine_lps=affine, study=study,
                      series_description="SWAN phantom", series_number=5)
    scan = dseries.scan([workdir])
    pairs, skipped = pair_series(scan.series)
    if len(pairs) != 1:
        raise RuntimeError(f"{vendor}: expected one magnitude/phase pair, got {len(pairs)} (skipped: {skipped})")
    m = dseries.load_volume(pairs[0].magnitude)
    p = dseries.load_volume(pairs[0].phase)
    conv, source = dconv.resolve_convention(p.frames[0], p.vendor)
    t0 = time.perf_counter()
    res = analyze_arrays(m.data, p.data, m.affine_lps, convention=conv, options=AnalysisOptions(background=background))
    return res, time.perf_counter() - t0, f"{p.vendor} {conv} ({source}); phase {p.phase_scaling}"


def score(vendor: str, condition: str, study: int, truth: dict, res, convention: str) -> StudyResult:
    out = StudyResult()
    centres = np.array([l.center_lps_mm for l in res.lesions]) if res.lesions else np.zeros((0, 3))
    used: set[int] = set()
    for t in truth["lesions"]:
        rec = Record(vendor, condition, study, t["class"], t["diameter_mm"], t["chi_ppm"], t.get("n_slices", 0) > 0)
        if len(centres):
            d = np.linalg.norm(centres - np.asarray(t["center_lps_mm"]), axis=1)
            d[list(used)] = np.inf
            k = int(np.argmin(d))
            if d[k] <= max(3.0, t["diameter_mm"]):
                used.add(k)
                les, it = res.lesions[k], res.interpretations[k]
                rec.detected = True
                rec.classification = les.classification.value
                rec.border_pattern = None if les.border_pattern is None else int(les.border_pattern)
                rec.central_pattern = None if les.central_pattern is None else int(les.central_pattern)
                rec.confidence = les.confidence
                rec.evidence = it.evidence
                rec.n_readable = it.n_readable_borders
                rec.z_evidence = it.z_evidence
                rec.reason = les.reason
        out.records.append(rec)
    out.false_positives = len(res.lesions) - len(used)
    out.fp_where = [(tuple(round(v, 1) for v in res.lesions[i].center_lps_mm), res.lesions[i].diameter_mm,
                     res.lesions[i].n_slices) for i in range(len(res.lesions)) if i not in used]
    return out


def displayed_rh(pattern: int | None, vendor: str) -> int | None:
    """Pattern as the paper (right-handed GE) would display it."""
    if pattern is None:
        return None
    return pattern if VENDOR_CONVENTION[vendor] == "right-handed" else MIRROR[pattern]


def size_bin(d: float) -> str:
    return "<2.5" if d < 2.5 else ">=2.5"


def central_says_calcification(rec: Record) -> bool:
    if rec.central_pattern is None:
        return False
    dark = rec.central_pattern in (1, 3, 5)
    para = is_paramagnetic(dark, VENDOR_CONVENTION[rec.vendor])
    return para is False


def pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}" if b else "  n/a"


def table1(recs: list[Record], scale: int = 1) -> str:
    lines = [f"Table 1: phase patterns of detected lesions (paper's display: paramagnetic dark); ours (paper"
             + (f" x {scale}: {scale} vendor-cohorts pooled)" if scale != 1 else ")"),
             f"{'pattern':<28}" + "".join(f"{c[:5] + ' ' + s:>16}" for c in ("microbleed", "calcification")
                                          for s in ("all", "<2.5", ">=2.5"))]
    names = ["1 totally black", "2 totally white", "3 black circle white core", "4 white circle black core",
             "5 heterog. black", "6 heterog. white"]
    det = [r for r in recs if r.detected]
    for which in ("border", "central"):
        lines.append(f"{which} phase pattern")
        for p in range(1, 7):
            row = f"  {names[p - 1]:<26}"
            for cls in ("microbleed", "calcification"):
                for s in ("all", "<2.5", ">=2.5"):
                    sel = [r for r in det if r.truth_class == cls and (s == "all" or size_bin(r.diameter_mm) == s)]
                    n = sum(1 for r in sel if displayed_rh(getattr(r, f"{which}_pattern"), r.vendor) == p)
                    row += f"{n:>9d} ({PAPER_T1[which][cls][s][p - 1] * scale:>3d})"
            lines.append(row)
        row = f"  {'none (no signed pixels)':<26}"
        for cls in ("microbleed", "calcification"):
            for s in ("all", "<2.5", ">=2.5"):
                sel = [r for r in det if r.truth_class == cls and (s == "all" or size_bin(r.diameter_mm) == s)]
                row += f"{sum(1 for r in sel if getattr(r, f'{which}_pattern') is None):>9d}      "
        lines.append(row)
    return "\n".join(lines)


def table2(recs: list[Record], label: str) -> list[str]:
    out = []
    for s in ("all", "<2.5", ">=2.5"):
        sel = [r for r in recs if r.detected and (s == "all" or size_bin(r.diameter_mm) == s)]
        ca = [r for r in sel if r.truth_class == "calcification"]
        mb = [r for r in sel if r.truth_class == "microbleed"]
        b_tp = sum(r.classification == "calcification" for r in ca)
        b_tn = sum(r.classification != "calcification" for r in mb)
        c_tp = sum(central_says_calcification(r) for r in ca)
        c_tn = sum(not central_says_calcification(r) for r in mb)
        ind = sum(r.classification == "indeterminate" for r in sel)
        p = PAPER_T2[s]
        out.append(f"{label:<18}{s:<7}{len(sel):>5} {pct(b_tp, len(ca))} ({p[0]:5.1f}) {pct(b_tn, len(mb))} ({p[1]:5.1f})"
                   f"  {pct(c_tp, len(ca))} ({p[2]:5.1f}) {pct(c_tn, len(mb))} ({p[3]:5.1f}) {ind:>6}")
    return out


def detection_line(label: str, results: list[StudyResult]) -> str:
    recs = [r for sr in results for r in sr.records]
    big = [r for r in recs if r.diameter_mm >= 2.0]
    small = [r for r in recs if r.diameter_mm < 2.0]
    fp = [sr.false_positives for sr in results]
    wrong = sum(1 for r in recs if r.detected and r.classification not in (r.truth_class, "indeterminate"))
    return (f"{label:<18}{len(results):>4} {sum(r.detected for r in big):>4}/{len(big):<4} {pct(sum(r.detected for r in big), len(big))}"
            f"   {sum(r.detected for r in small):>4}/{len(small):<4} {pct(sum(r.detected for r in small), len(small))}"
            f"   {sum(fp):>3} ({np.mean(fp):.2f}/study, max {max(fp)})   {wrong:>5}")


def reliability(recs: list[Record]) -> list[str]:
    calls = [r for r in recs if r.detected and r.classification in ("microbleed", "calcification")]
    bins = [(0.0, 0.9), (0.9, 0.98), (0.98, 0.99), (0.99, 0.995), (0.995, 0.999), (0.999, 1.01)]
    out = ["confidence bin   calls  mean confidence  fraction right"]
    for lo, hi in bins:
        sel = [r for r in calls if lo <= r.confidence < hi]
        if sel:
            right = np.mean([r.classification == r.truth_class for r in sel])
            out.append(f"[{lo:.3f}, {min(hi, 1.0):.3f})  {len(sel):>6}  {np.mean([r.confidence for r in sel]):15.4f}  {right:14.4f}")
    return out


def fit_calibration(recs: list[Record]) -> tuple[float, float, float]:
    """Logistic fit of P(right | log(1 + z), both borders readable) by maximum likelihood (scipy)."""
    from scipy.optimize import minimize
    calls = [r for r in recs if r.detected and r.classification in ("microbleed", "calcification")]
    x = np.array([r.evidence for r in calls])
    both = np.array([r.n_readable == 2 for r in calls], float)
    y = np.array([r.classification == r.truth_class for r in calls], float)

    def nll(p):
        z = p[0] + p[1] * x + p[2] * both
        return float(np.sum(np.logaddexp(0, z) - y * z))
    # slopes bounded to [0, 3]: more evidence never means less confidence, and with very few
    # wrong calls the unbounded maximum likelihood runs off to infinity
    fit = minimize(nll, [2.0, 1.0, 1.0], method="L-BFGS-B", bounds=[(-20, 20), (0, 3), (0, 3)])
    return float(fit.x[0]), float(fit.x[1]), float(fit.x[2])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vendors", nargs="+", default=list(VENDOR_CONVENTION))
    ap.add_argument("--conditions", nargs="+", default=["default", "filtered", "snr15"], choices=list(CONDITIONS))
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="cohort seed(s); several are pooled")
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--dicom-all", action="store_true", help="write/read DICOM in every condition, not only default")
    ap.add_argument("--no-dicom", action="store_true", help="analyse arrays only (faster)")
    ap.add_argument("--calibrate", action="store_true", help="fit the confidence logistic on these results")
    ap.add_argument("--json", metavar="FILE", help="write every record as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="list misses, wrong calls and false positives")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    plans = []
    for seed in args.seed:
        for plan in paper_cohort(seed, n_studies=args.studies):
            plans.append(replace(plan, index=len(plans)))
    results: dict[tuple[str, str], list[StudyResult]] = defaultdict(list)
    notes: dict[str, str] = {}
    analysis_times: list[float] = []
    for cond in args.conditions:
        acq_kwargs, background = CONDITIONS[cond]
        for convention in ("right-handed", "left-handed"):
            vendors = [v for v in args.vendors if VENDOR_CONVENTION[v] == convention]
            if not vendors:
                continue
            for plan in plans:
                mag, ph, aff, truth = render(plan, convention, acq_kwargs, seed=args.seed[plan.index // args.studies] * 1000
                                             + plan.index % args.studies)
                for vendor in vendors:
                    use_dicom = not args.no_dicom and (cond == "default" or args.dicom_all)
                    if use_dicom:
                        with tempfile.TemporaryDirectory(prefix="bp_acc_") as tmp:
                            res, secs, note = analyze_through_dicom(vendor, mag, ph, aff, 25.0, Path(tmp), background)
                        notes[vendor] = note
                    else:
                        t0 = time.perf_counter()
                        res = analyze_arrays(mag, ph, aff, convention=convention, options=AnalysisOptions(background=background))
                        secs = time.perf_counter() - t0
                    analysis_times.append(secs)
                    sr = score(vendor, cond, plan.index, truth, res, convention)
                    sr.analysis_s = secs
                    results[(cond, vendor)].append(sr)
                    print(f"  {cond:<9} {vendor:<8} study {plan.index}: {len(res.lesions)} spots, "
                          f"{sr.false_positives} FP, {secs:.1f} s", file=sys.stderr, flush=True)
                del mag, ph

    all_recs = [r for srs in results.values() for sr in srs for r in sr.records]
    print(f"\nborderphase accuracy benchmark: paper cohort (seed {' '.join(map(str, args.seed))}, "
          f"{len(plans)} studies/vendor/condition: {sum(len(p.lesions) for p in plans)} lesions), "
          f"{time.perf_counter() - t_start:.0f} s in all, "
          f"analysis {np.median(analysis_times):.1f} s median per study")
    for v, n in notes.items():
        print(f"  read back: {n}")
    print("\nDetection (truth lesions; recall for diameter >= 2 mm and < 2 mm; false positives; wrong calls)")
    print(f"{'vendor/condition':<18}{'st':>4} {'>=2mm detected':>16}   {'<2mm detected':>16}   {'false positives':<24} {'wrong':>5}")
    for (cond, vendor), srs in results.items():
        print(detection_line(f"{vendor}/{cond}", srs))
    print("\nTable 2: sensitivity / specificity for calcification, ours (paper), detected lesions; 'ind' = indeterminate calls")
    print(f"{'vendor/condition':<18}{'size':<7}{'n':>5} {'border SEN':>14} {'border SPE':>14}  {'central SEN':>14} {'central SPE':>14} {'ind':>6}")
    for (cond, vendor), srs in results.items():
        for line in table2([r for sr in srs for r in sr.records], f"{vendor}/{cond}"):
            print(line)
    for cond in args.conditions:
        recs = [r for r in all_recs if r.condition == cond]
        if recs:
            scale = len({(r.vendor, r.study) for r in recs}) // max(1, args.studies)
            print(f"\n[{cond}, all vendors pooled] " + table1(recs, scale))
    print("\nConfidence reliability (all decided calls, all conditions)")
    print("\n".join(reliability(all_recs)))
    if args.calibrate:
        a, b, c = fit_calibration(all_recs)
        print(f"\ncalibration fit: CALIBRATION_INTERCEPT = {a:.3f}, CALIBRATION_SLOPE = {b:.3f}, "
              f"CALIBRATION_BOTH_BORDERS = {c:.3f}")
    if args.verbose:
        print("\nMisses, wrong or indeterminate calls:")
        for r in all_recs:
            if not r.detected or r.classification != r.truth_class:
                print(f"  {r.vendor}/{r.condition} study {r.study}: {r.truth_class} d={r.diameter_mm:.2f} chi={r.chi_ppm:+.3f} "
                      f"visible={r.visible} detected={r.detected} -> {r.classification} {r.reason}")
        for (cond, vendor), srs in results.items():
            for sr in srs:
                for fp in sr.fp_where:
                    print(f"  FP {vendor}/{cond}: {fp}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in all_recs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
