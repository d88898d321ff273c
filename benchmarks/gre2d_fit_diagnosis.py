"""Per-spot diagnosis of the dipole fit on the realistic 2D T2*-GRE 5 mm protocol (issue 10).

For every detected truth lesion of ``gre2d_5mm`` (the realistic cohort of
``benchmarks/realistic_benchmark.py``, same renders, same analysis, same matching) this lists the
call and the fit: truth chi and size, where the source sits in its slice (``depth``: offset of the
truth centre from the nearest slice centre, in slices, -0.5..0.5), the fit's signed z (+ =
paramagnetic), moment, fitted centre, residual, the two border readings, and how the call was
decided. It prints every wrong decided call, and a calibration line for the fit alone: among
usable fits with |z| above 3 and 5, how many had the wrong sign (a fit whose z means what it says
has almost none).

    python benchmarks/gre2d_fit_diagnosis.py --seeds 0 7 --studies 2 --vendors GE Siemens
    python benchmarks/gre2d_fit_diagnosis.py --seeds 61 --studies 2 --all      # every lesion, not just wrong ones

Renders are cached under ``--cache`` (default /tmp/bp_gre2d_cache) as the benchmark would make
them (``R.make_study`` with seed ``seed * 1000 + study``), so a method change is re-measured on
identical data. GE = right-handed rendering, Siemens = left-handed (as ``--array-vendors``).
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring import match_spot  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays  # noqa: E402

CONVENTION = {"GE": "right-handed", "Siemens": "left-handed"}


def render(seed: int, plan, convention: str, cache: Path):
    path = cache / f"gre2d_5mm_s{seed}_p{plan.index}_{convention}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    acq = R.PROTOCOLS["gre2d_5mm"].acquisition()
    images, truth = R.make_study(plan, acquisition=acq, convention=convention, seed=seed * 1000 + plan.index)
    out = (images.magnitude[-1], images.phase_rad[-1], images.affine_lps, images.echo_times_ms[-1], acq.b0_t, truth)
    cache.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(out, f)
    return out


def diagnose(seed: int, n_studies: int, vendors, cache: Path, options: AnalysisOptions) -> list[dict]:
    rows = []
    plans = R.realistic_cohort(seed, protocol="gre2d_5mm", n_studies=n_studies)
    for plan in plans:
        for vendor in vendors:
            conv = CONVENTION[vendor]
            mag, ph, aff, te, b0, truth = render(seed, plan, conv, cache)
            res = analyze_arrays(mag, ph, aff, convention=conv, options=options, echo_time_ms=te, field_strength_t=b0)
            z_lps = plan.grid.axes_lps_mm()[2]
            slice_mm = truth["voxel_mm_slice_row_column"][0]
            centres = np.array([les.center_lps_mm for les in res.lesions]) if res.lesions else np.zeros((0, 3))
            used: set[int] = set()
            for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
                k = match_spot(t, centres, used, slice_mm)
                if k is None:
                    continue
                used.add(k)
                les, fit, rd, spot = res.lesions[k], res.fits[k], res.readings[k], res.spots[k]
                zt = float(t["center_lps_mm"][2])
                kz = int(np.argmin(np.abs(z_lps - zt)))
                step = float(z_lps[1] - z_lps[0]) if len(z_lps) > 1 else slice_mm
                para_true = t["class"] == "microbleed"
                fz = float(fit.z) if fit.usable else 0.0
                rows.append(dict(
                    seed=seed, study=plan.index, vendor=vendor, truth=t["class"], kind=t.get("kind", "paper"),
                    d_mm=round(float(t["diameter_mm"]), 2), chi=round(float(t["chi_ppm"]), 3),
                    truth_slice=kz, depth=round((zt - float(z_lps[kz])) / step, 2),
                    slices=list(spot.slice_indices), call=les.classification.value, conf=les.confidence,
                    decided_by=les.decided_by, right=les.classification.value == t["class"],
                    fit_usable=bool(fit.usable), fit_z=round(fz, 2), fit_moment=fit.moment,
                    fit_centre=None if fit.center_index is None else [round(v, 2) for v in fit.center_index],
                    fit_rms=round(float(fit.residual_rms), 2), fit_n=int(fit.n_voxels), fit_reason=fit.reason,
                    fit_sign_right=(fit.usable and fit.paramagnetic is not None and fit.paramagnetic == para_true),
                    up_z=round(float(rd.upper.z_score), 1), lo_z=round(float(rd.lower.z_score), 1),
                    up_slice=rd.upper_slice if rd.upper_read_slice is None else rd.upper_read_slice,
                    lo_slice=rd.lower_slice if rd.lower_read_slice is None else rd.lower_read_slice,
                    up_pat=None if rd.upper.pattern is None else int(rd.upper.pattern),
                    lo_pat=None if rd.lower.pattern is None else int(rd.lower.pattern),
                    reason=les.reason))
    return rows


def summary(rows: list[dict]) -> list[str]:
    det = len(rows)
    decided = [r for r in rows if r["call"] != "indeterminate"]
    right = sum(r["right"] for r in decided)
    out = [f"  detected {det}; decided right {right}/{len(decided)} = {right / max(len(decided), 1):.3f}; "
           f"indeterminate {det - len(decided)}/{det} = {(det - len(decided)) / max(det, 1):.3f}"]
    for lim in (3.0, 5.0):
        fits = [r for r in rows if r["fit_usable"] and abs(r["fit_z"]) >= lim]
        wrong = [r for r in fits if not r["fit_sign_right"]]
        out.append(f"  fits with |z| >= {lim:g}: {len(fits)}, wrong sign {len(wrong)}")
    bins = [(0, 0.8), (0.8, 0.9), (0.9, 0.99), (0.99, 1.01)]
    for lo, hi in bins:
        b = [r for r in decided if lo <= r["conf"] < hi]
        if b:
            out.append(f"  confidence [{lo:.2f}, {min(hi, 1):.2f}): {sum(r['right'] for r in b)}/{len(b)} right, "
                       f"mean {np.mean([r['conf'] for r in b]):.3f}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 7])
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--vendors", nargs="+", default=["GE", "Siemens"], choices=sorted(CONVENTION))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bp_gre2d_cache"))
    ap.add_argument("--all", action="store_true", help="print every detected lesion, not only wrong decided calls")
    ap.add_argument("--json", type=Path, help="write every row as JSON")
    args = ap.parse_args(argv)
    every = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        rows = diagnose(seed, args.studies, args.vendors, args.cache, AnalysisOptions())
        every += rows
        print(f"## seed {seed} ({time.perf_counter() - t0:.0f} s)")
        for vendor in args.vendors:
            mine = [r for r in rows if r["vendor"] == vendor]
            print(f" {vendor}")
            print("\n".join(summary(mine)))
            for r in mine:
                if args.all or (r["call"] != "indeterminate" and not r["right"]):
                    print(f"   {'WRONG' if r['call'] != 'indeterminate' and not r['right'] else '     '} "
                          f"s{r['study']} {r['truth']:<13} d {r['d_mm']:.2f} chi {r['chi']:+.3f} slice {r['truth_slice']} "
                          f"depth {r['depth']:+.2f} spot {r['slices']} -> {r['call']} {r['conf']:.2f} by {r['decided_by']}; "
                          f"fit z {r['fit_z']:+.1f} centre {r['fit_centre']} rms {r['fit_rms']} n {r['fit_n']}; "
                          f"borders up {r['up_pat']} z {r['up_z']:+.1f} (slice {r['up_slice']}) lo {r['lo_pat']} "
                          f"z {r['lo_z']:+.1f} (slice {r['lo_slice']})")
        print(" both:")
        print("\n".join(summary(rows)))
    if len(args.seeds) > 1:
        print("## all seeds")
        print("\n".join(summary(every)))
    if args.json:
        args.json.write_text(json.dumps(every, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
