"""Where lesion chi goes wrong, split as chi = total susceptibility / volume, per spot (issue 11).

For every matched spot >= 2 mm of the realistic cohort: the true total susceptibility
``S_true = chi_true x V_true`` (ppm mm^3; = 4 pi x the dipole moment) against the QSM map's
integral and the dipole fit's ``4 pi m``, and the source volume the pipeline divides by (the bloom
model's when resolved, else the detected diameter's sphere) against ``V_true``. Prints the median
and the log-s.d. of each ratio, the chi regression (slope / intercept / R^2) of each reading and
of each reading with one factor replaced by the truth, and the spots that spoil R^2 most.

    PYTHONPATH=. nice -n 5 python3 benchmarks/qsm_moment_volume.py --protocol swi3d --studies 1 --seed 0 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.phantom import realistic as R  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays  # noqa: E402
from benchmarks.scoring import analysis_inputs, match_spot  # noqa: E402


def _fit(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return float("nan"), float("nan"), float("nan")
    slope, icpt = np.polyfit(x, y, 1)
    r2 = 1.0 - np.sum((y - (slope * x + icpt)) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12)
    return float(slope), float(icpt), float(r2)


def spot_rows(protocol: str, studies: int, seed: int, options: AnalysisOptions = AnalysisOptions()) -> list[dict]:
    plans = R.realistic_cohort(seed, protocol=protocol, n_studies=studies)
    acq = R.PROTOCOLS[protocol].acquisition()
    conv = "right-handed"
    rows = []
    for plan in plans:
        images, truth = R.make_study(plan, acquisition=acq, convention=conv, seed=seed * 1000 + plan.index)
        mag, ph, te, background, mag_echoes = analysis_inputs(images, plan.grid.voxel_mm)
        opts = replace(options, background=background)
        res = analyze_arrays(mag, ph, images.affine_lps, convention=conv, options=opts, echo_time_ms=te,
                             field_strength_t=acq.b0_t, magnitude_echoes=mag_echoes)
        centres = np.array([s.center_lps_mm for s in res.lesions]) if res.lesions else np.zeros((0, 3))
        used: set[int] = set()
        vox = truth["voxel_mm_slice_row_column"]
        for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
            k = match_spot(t, centres, used, vox[0])
            if k is None:
                continue
            used.add(k)
            les, sp = res.lesions[k], res.spots[k]
            v_true = np.pi / 6 * t["diameter_mm"] ** 3
            d_src = les.source_diameter_mm or les.diameter_mm
            s_fit = 4 * np.pi * les.moment if (les.moment is not None and les.moment_unit.startswith("ppm")) else None
            # the centre's offset from the slice centre, in slices (0 = on a slice centre, 0.5 = on a boundary)
            ci = np.linalg.solve(images.affine_lps[:3, :3], np.asarray(t["center_lps_mm"]) - images.affine_lps[:3, 3])
            rows.append(dict(study=plan.index, cls=t["class"], d_true=t["diameter_mm"], chi_true=t["chi_ppm"],
                             s_true=t["chi_ppm"] * v_true, v_true=v_true, d_det=les.diameter_mm,
                             d_src=les.source_diameter_mm, v_used=np.pi / 6 * d_src ** 3,
                             s_qsm=les.qsm_total_ppm_mm3, s_fit=s_fit, chi_qsm=les.qsm_chi_ppm, chi_fit=les.chi_ppm,
                             fit_frac=les.fit_recovery_fraction, qsm_frac=les.qsm_recovery_fraction,
                             n_slices=len(sp.slice_indices), z_off=float(ci[0] - round(ci[0])),
                             z_true=float(ci[0]), z_spot=float(sp.center_index[0]),
                             z_fit=float(res.fits[k].center_index[0]) if res.fits[k].usable else None,
                             cored=bool(t.get("core_diameter_mm")), call=les.classification.value,
                             qsm_call=les.qsm_call,
                             center_lps=list(t["center_lps_mm"])))
        print(f"  {protocol} study {plan.index}: {len(res.lesions)} spots", file=sys.stderr, flush=True)
        del images, res
    return rows


def summarise(rows: list[dict], label: str) -> list[str]:
    big = [r for r in rows if r["d_true"] >= 2.0]
    out = [f"## {label}: {len(big)} matched spots >= 2 mm"]

    def ratio_line(name, key_num, key_den):
        q = np.array([r[key_num] / r[key_den] for r in big if r[key_num] is not None and r[key_den]
                      and not (r.get("cored") and "s_" in key_num)])
        q = q[np.isfinite(q) & (q > 0)]
        if not len(q):
            return f"{name}: none"
        return (f"{name}: n {len(q)}, median {np.median(q):.2f}, IQR {np.percentile(q, 25):.2f}-{np.percentile(q, 75):.2f}, "
                f"s.d. of log {np.std(np.log(q)):.2f}")
    out.append("(total-susceptibility ratios leave out the cored lesions: their truth chi is the rim's)")
    out.append(ratio_line("S_QSM / S_true", "s_qsm", "s_true"))
    out.append(ratio_line("S_fit / S_true", "s_fit", "s_true"))
    out.append(ratio_line("V_used / V_true", "v_used", "v_true"))
    out.append(ratio_line("d_detected / d_true", "d_det", "d_true"))
    for name, num, den in (("QSM reported", "s_qsm", "v_used"), ("fit reported", "s_fit", "v_used"),
                           ("QSM moment / true V", "s_qsm", "v_true"), ("fit moment / true V", "s_fit", "v_true"),
                           ("true moment / V_used", "s_true", "v_used")):
        pts = [(r["chi_true"], r[num] / r[den]) for r in big if r[num] is not None and r[den]]
        s, i, r2 = _fit(*zip(*pts)) if pts else (np.nan,) * 3
        out.append(f"chi vs truth, {name}: n {len(pts)}, slope {s:.2f}, intercept {i:+.3f} ppm, R^2 {r2:.3f}")
    calls = {}
    for r in rows:
        calls[(r["cls"], r["call"])] = calls.get((r["cls"], r["call"]), 0) + 1
    out.append("border/final call of every matched spot (truth class, call): "
               + ", ".join(f"{k[0][:5]}->{k[1]} {v}" for k, v in sorted(calls.items())))
    # the spots that spoil R^2 of the fit reading most (largest |residual| of the reported chi)
    pts = [r for r in big if r["s_fit"] is not None]
    if len(pts) >= 3:
        x = np.array([r["chi_true"] for r in pts])
        y = np.array([r["s_fit"] / r["v_used"] for r in pts])
        s, i = np.polyfit(x, y, 1)
        res = y - (s * x + i)
        out.append("largest residuals (fit reading): study, class, d_true, d_det, d_src, chi_true, chi_fit, "
                   "S_fit/S_true, V_used/V_true, n_slices, z offset (slices)")
        for j in np.argsort(-np.abs(res))[:6]:
            r = pts[j]
            out.append(f"  {r['study']} {r['cls'][:5]} {r['d_true']:.2f} {r['d_det']:.2f} "
                       f"{r['d_src'] if r['d_src'] is not None else float('nan'):.2f} {r['chi_true']:+.3f} {y[j]:+.3f} "
                       f"{r['s_fit'] / r['s_true']:.2f} {r['v_used'] / r['v_true']:.2f} {r['n_slices']} {r['z_off']:+.2f}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="swi3d")
    ap.add_argument("--studies", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the per-spot rows here")
    args = ap.parse_args(argv)
    rows = spot_rows(args.protocol, args.studies, args.seed)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n".join(summarise(rows, f"{args.protocol}, seed {args.seed}, {args.studies} studies")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
