"""QSM on the realistic cohort (plugin.phantom.realistic), per protocol: the QSM map's time, lesion
chi against truth (QSM and dipole fit), deep-nuclei chi against the phantom's values, and the QSM
call's sensitivity/specificity for calcification beside the border call.

    PYTHONPATH=. nice -n 10 python3 benchmarks/qsm_benchmark.py --studies 2 --protocols gre3d_1mm gre2d_5mm swi3d

Arrays path (as benchmarks/realistic_benchmark.py's array branch: echoes combined, SMV background
removal for raw phase), right-handed convention. Times are wall seconds on a shared 2-core machine
(provisional under load).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.phantom import realistic as R  # noqa: E402
from plugin.method.qsm import ITERATIVE, QsmParams, TKD, compute_qsm, qsm_call, spot_susceptibility  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays, reported_qsm_key  # noqa: E402
from benchmarks.scoring import analysis_inputs, line_fit, match_spot  # noqa: E402


def nuclei_chi(chi: np.ndarray, affine_lps: np.ndarray, nuclei: list[dict]) -> dict[str, list[float]]:
    """Mean of the QSM map over the inner 60 % of each deep nucleus ellipsoid (truth semi-axes, LPS)."""
    inv = np.linalg.inv(affine_lps)
    out: dict[str, list[float]] = {}
    for n in nuclei:
        c, ax = np.asarray(n["center_lps_mm"], float), 0.6 * np.asarray(n["semi_axes_mm"], float)
        corners = np.array([[c[0] + sx * ax[0], c[1] + sy * ax[1], c[2] + sz * ax[2]]
                            for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        idx = corners @ inv[:3, :3].T + inv[:3, 3]
        lo = np.clip(np.floor(idx.min(0)).astype(int), 0, np.array(chi.shape) - 1)
        hi = np.clip(np.ceil(idx.max(0)).astype(int) + 1, 1, np.array(chi.shape))
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
        p = grid @ affine_lps[:3, :3].T + affine_lps[:3, 3]
        inside = (((p - c) / ax) ** 2).sum(-1) <= 1
        if inside.sum() < 3:
            continue
        vals = chi[tuple(grid[inside].T)]
        out.setdefault(n["tissue"], []).append(float(vals.mean()))
    return out


def run(protocol: str, studies: int, seed: int, with_options: bool = True, recovery: bool = True) -> list[str]:
    plans = R.realistic_cohort(seed, protocol=protocol, n_studies=studies)
    acq = R.PROTOCOLS[protocol].acquisition()
    rows, qsm_s, tkd_s, nuclei_all, truth_nuclei, wl2_s, nuclei_wl2, size_s = [], [], [], {}, {}, [], {}, []
    rec_s: list[float] = []
    edge_slices: list[int] = []
    conv = "right-handed"
    for plan in plans:
        images, truth = R.make_study(plan, acquisition=acq, convention=conv, seed=seed * 1000 + plan.index)
        mag, ph, te, background, mag_echoes = analysis_inputs(images, plan.grid.voxel_mm)
        res = analyze_arrays(mag, ph, images.affine_lps, convention=conv,
                             options=AnalysisOptions(background=background, qsm_recovery=recovery),
                             echo_time_ms=te, field_strength_t=acq.b0_t, magnitude_echoes=mag_echoes)
        if res.qsm is None:
            return [f"{protocol}: no QSM map ({res.notes})"]
        qsm_s.append(res.qsm.seconds)
        edge_slices.append(len(res.qsm_unreliable_slices))
        size_s.append(res.size_seconds)
        rec_s.append(res.recovery_seconds)
        if with_options:
            t0 = time.perf_counter()
            compute_qsm(res.local_phase_rad, res.qsm.mask, images.affine_lps, echo_time_ms=te, field_strength_t=acq.b0_t,
                        convention=conv, params=QsmParams(method=TKD))
            tkd_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            wmap = compute_qsm(res.local_phase_rad, res.qsm.mask, images.affine_lps, echo_time_ms=te, field_strength_t=acq.b0_t,
                               convention=conv, params=QsmParams(method=ITERATIVE))
            wl2_s.append(time.perf_counter() - t0)
        else:   # --skip-options: the wl2 rows repeat the fast default's map (not reported)
            wmap, tkd_s, wl2_s = res.qsm, [float("nan")], [float("nan")]
        for tis, vals in nuclei_chi(wmap.chi_ppm, images.affine_lps, truth.get("nuclei", [])).items():
            nuclei_wl2.setdefault(tis, []).extend(vals)
        for tis, vals in nuclei_chi(res.qsm.chi_ppm, images.affine_lps, truth.get("nuclei", [])).items():
            nuclei_all.setdefault(tis, []).extend(vals)
        for n in truth.get("nuclei", []):
            truth_nuclei[n["tissue"]] = n["chi_ppm"]
        centres = np.array([s.center_lps_mm for s in res.lesions]) if res.lesions else np.zeros((0, 3))
        used: set[int] = set()
        for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
            k = match_spot(t, centres, used, truth["voxel_mm_slice_row_column"][0])
            if k is None:
                continue
            used.add(k)
            les = res.lesions[k]
            # chi over the truth's sphere: the spot's total susceptibility (QSM: its integral; fit: 4 pi m)
            # over the true volume, separates the total's accuracy from the volume's; and over the
            # detected diameter's sphere (what was reported before the bloom model)
            v_true, v_det = np.pi / 6 * t["diameter_mm"] ** 3, np.pi / 6 * les.diameter_mm ** 3
            s_fit = None if les.moment is None or not les.moment_unit.startswith("ppm") else 4 * np.pi * les.moment
            s_q = les.qsm_total_ppm_mm3
            sp = res.spots[k]
            s_w = spot_susceptibility(wmap, sp.footprint, sp.bbox, plan.grid.voxel_mm, sp.diameter_mm).sum_ppm_mm3
            v_src = np.pi / 6 * (les.source_diameter_mm or les.diameter_mm) ** 3
            f_rec = les.qsm_recovery_fraction
            key = reported_qsm_key(les)
            rows.append(dict(cls=t["class"], d=t["diameter_mm"], chi=t["chi_ppm"], qsm=les.qsm_chi_ppm, fit=les.chi_ppm,
                             core=les.qsm_core_chi_ppm, reported=None if key is None else getattr(les, key),
                             call_total=qsm_call(les.qsm_chi_ppm_ci) if les.qsm_chi_ppm is not None else "unclear",
                             qsm_raw=None if les.qsm_chi_ppm is None else les.qsm_chi_ppm * (f_rec or 1.0),
                             qsm_true_d=None if s_q is None else s_q / v_true,
                             fit_true_d=None if s_fit is None else s_fit / v_true,
                             qsm_det_d=None if s_q is None else s_q / v_det,
                             fit_det_d=None if s_fit is None else s_fit / v_det,
                             wl2=None if s_w is None else s_w / v_src, wl2_true_d=None if s_w is None else s_w / v_true,
                             src_d=les.source_diameter_mm, det_d=les.diameter_mm,
                             call=les.qsm_call, border=les.classification.value, reason=les.reason))
        print(f"  {protocol} study {plan.index}: shape {res.qsm.chi_ppm.shape}, QSM {res.qsm.seconds:.2f} s, "
              f"{len(res.lesions)} spots", file=sys.stderr, flush=True)
        del images, res, wmap
    raw = "" if not R.PROTOCOLS[protocol].filtered else ", scanner-filtered phase"
    out = [f"## {protocol} ({studies} studies, seed {seed}, {conv}{raw}{'' if recovery else ', no recovery fractions'})",
           f"QSM map (L2, fast default) wall s: median {np.median(qsm_s):.2f} (max {max(qsm_s):.2f}); "
           f"TKD option: median {np.median(tkd_s):.2f}; wl2 (iterative) option: median {np.median(wl2_s):.2f}",
           f"source size (bloom model) of every spot, wall s per study: median {np.median(size_s):.2f} (max {max(size_s):.2f})",
           f"QSM recovery fraction of every spot, wall s per study: median {np.median(rec_s):.2f} (max {max(rec_s):.2f})",
           f"QSM unreliable end slices marked per study: {edge_slices}"]
    big = [r for r in rows if r["d"] >= 2.0]
    for name, key in (("QSM as reported (SR DCM 126396, summary: findings qsm_reported)", "reported"),
                      ("QSM core (qsm_core_chi_ppm)", "core"),
                      ("QSM, total over the source volume (qsm_chi_ppm)", "qsm"),
                      ("QSM, source volume, without the recovery correction", "qsm_raw"),
                      ("dipole fit, source volume (reported)", "fit"),
                      ("QSM, detected diameter", "qsm_det_d"), ("dipole fit, detected diameter", "fit_det_d"),
                      ("QSM, true diameter", "qsm_true_d"), ("dipole fit, true diameter", "fit_true_d"),
                      ("QSM wl2 (iterative), source volume", "wl2"), ("QSM wl2 (iterative), true diameter", "wl2_true_d")):
        if not with_options and key.startswith("wl2"):
            continue
        pts = [(r["chi"], r[key]) for r in big if r[key] is not None]
        s, i, r2 = line_fit([p[0] for p in pts], [p[1] for p in pts])
        out.append(f"lesion chi vs truth, spots >= 2 mm, {name}: n {len(pts)}, slope {s:.2f}, intercept {i:+.3f} ppm, R^2 {r2:.3f}")
    res_d = [(r["d"], r["src_d"]) for r in big if r["src_d"] is not None]
    s, i, r2 = line_fit([p[0] for p in res_d], [p[1] for p in res_d])
    s0, i0, r20 = line_fit([r["d"] for r in big], [r["det_d"] for r in big])
    out.append(f"source diameter (bloom model) vs truth, spots >= 2 mm: resolved {len(res_d)}/{len(big)}, slope {s:.2f}, "
               f"intercept {i:+.2f} mm, R^2 {r2:.2f}; detected diameter: slope {s0:.2f}, intercept {i0:+.2f} mm, R^2 {r20:.2f}")
    n_q_ind = sum("the readings disagree" in r["reason"] for r in rows)
    n_q_kept = sum(" disagrees: " in r["reason"] and "QSM reads it" in r["reason"] for r in rows)
    out.append(f"QSM disagreement: {n_q_ind} spots made indeterminate, {n_q_kept} calls kept as the more reliable reading")

    def sens_spec(pred):
        calc = [r for r in rows if r["cls"] == "calcification"]
        bleed = [r for r in rows if r["cls"] != "calcification"]
        tp = sum(pred(r) == "calc" for r in calc)
        tn = sum(pred(r) == "bleed" for r in bleed)
        dec_c = sum(pred(r) is not None for r in calc)
        dec_b = sum(pred(r) is not None for r in bleed)
        wrong = dec_c - tp + dec_b - tn
        return (f"sens {tp}/{len(calc)} = {tp / max(len(calc), 1):.3f}, spec {tn}/{len(bleed)} = {tn / max(len(bleed), 1):.3f} "
                f"(decided {dec_c + dec_b}/{len(rows)}, wrong sign {wrong})")
    qmap = {"diamagnetic": "calc", "paramagnetic": "bleed"}
    bmap = {"calcification": "calc", "microbleed": "bleed"}
    out.append("calcification, detected lesions: QSM call (the map's core, reported) " + sens_spec(lambda r: qmap.get(r["call"])))
    out.append("calcification, detected lesions: QSM call from the total's 95 % interval (before) "
               + sens_spec(lambda r: qmap.get(r["call_total"])))
    out.append("calcification, detected lesions: border call " + sens_spec(lambda r: bmap.get(r["border"])))
    for tis in sorted(nuclei_all):
        v = nuclei_all[tis]
        w = nuclei_wl2.get(tis, [float("nan")])
        out.append(f"deep nucleus {tis:<12} QSM {np.mean(v):+.3f} ppm (n {len(v)}), wl2 {np.mean(w):+.3f}, "
                   f"phantom {truth_nuclei.get(tis, float('nan')):+.3f}")
    errs = [(np.mean(nuclei_all[t]) - truth_nuclei[t], np.mean(nuclei_wl2.get(t, [np.nan])) - truth_nuclei[t])
            for t in nuclei_all if t in truth_nuclei]
    if errs:
        e = np.array(errs)
        out.append(f"deep nuclei, mean |error| ppm: L2 {np.mean(np.abs(e[:, 0])):.3f}, wl2 {np.mean(np.abs(e[:, 1])):.3f}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", nargs="+", default=["gre3d_1mm", "gre2d_5mm", "swi3d"])
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-options", action="store_true",
                    help="leave out the TKD and wl2 (iterative) maps (their rows are then not reported)")
    ap.add_argument("--raw-phase", action="store_true",
                    help="render the protocols' phase raw (swi3d's is the scanner's filtered phase otherwise): "
                         "2.5 mm slices, 3 T, TE 25 ms through the in-plane unwrap, with signal voids")
    ap.add_argument("--no-recovery", action="store_true",
                    help="AnalysisOptions(qsm_recovery=False): the QSM and fit readings without the recovery fractions")
    args = ap.parse_args(argv)
    if args.raw_phase:
        import dataclasses
        for name in args.protocols:
            R.PROTOCOLS[name] = dataclasses.replace(R.PROTOCOLS[name], filtered=False)
    for p in args.protocols:
        print("\n".join(run(p, args.studies, args.seed, not args.skip_options, not args.no_recovery)), flush=True)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
