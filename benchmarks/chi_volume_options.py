"""Lesion chi = total susceptibility / volume: which volume (issue 11), measured against the truth.

For every matched spot of the realistic cohort the pipeline runs as in production
(``benchmarks/qsm_moment_volume.py``'s matching) and the script keeps, per spot, the readings the
pipeline reports and a crop of the QSM map and of the magnitude around it. Then it sets each
option for the volume (and the moment) against the truth, spots >= 2 mm:

* ``fit, bloom volume (reported)`` / ``QSM, bloom volume (reported)``: findings.json ``chi_ppm`` /
  ``qsm_chi_ppm`` (the dipole fit's / the map's total over the bloom model's source volume,
  plugin.method.bloom; the detected diameter's sphere where the size is not resolved);
* ``QSM half-peak mean``: the QSM map's mean over the region connected to the spot's extreme value
  where chi has at least half of it (a segmentation that is not the magnitude void);
* ``fit moment / half-peak volume``, ``QSM total / half-peak volume``;
* ``QSM peak``: the spot's extreme QSM value;
* ``QSM sphere total / bloom volume``: the map's integral over a generous sphere (radius the detected
  diameter, at least 2.5 mm) minus its shell's median level: the moment from the map, robust to the
  segmentation;
* the ceilings: the fit's moment over the true volume, the true moment over the bloom volume.

It also counts how often the truth lies inside the reported 95 % intervals (``chi_ppm_ci``,
``qsm_chi_ppm_ci``, ``moment_ci``), split by whether the source size was resolved.

    PYTHONPATH=. nice -n 5 python3 benchmarks/chi_volume_options.py --protocol swi3d --studies 1 --seed 0 --cache /tmp/chi3/swi3d_0.npz
    PYTHONPATH=. python3 benchmarks/chi_volume_options.py --from-cache /tmp/chi3/swi3d_0.npz
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.phantom import realistic as R  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays  # noqa: E402
from benchmarks.scoring import analysis_inputs, match_spot  # noqa: E402

CROP_MM = 9.0          # in-plane half-width of the kept crops
CROP_SLICES_MM = 6.0   # through-plane half-width


def _fit(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return float("nan"), float("nan"), float("nan")
    slope, icpt = np.polyfit(x, y, 1)
    r2 = 1.0 - np.sum((y - (slope * x + icpt)) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12)
    return float(slope), float(icpt), float(r2)


def _crop(vol, centre, half):
    """``vol`` around ``centre`` (index), ``half`` voxels each side per axis, zero-padded."""
    out = np.zeros(tuple(2 * h + 1 for h in half), vol.dtype)
    c = [int(round(v)) for v in centre]
    src, dst = [], []
    for ax, (ci, h) in enumerate(zip(c, half)):
        lo, hi = ci - h, ci + h + 1
        s0, s1 = max(lo, 0), min(hi, vol.shape[ax])
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s0 - lo + (s1 - s0)))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def collect(protocol: str, studies: int, seed: int, options: AnalysisOptions = AnalysisOptions()):
    plans = R.realistic_cohort(seed, protocol=protocol, n_studies=studies)
    acq = R.PROTOCOLS[protocol].acquisition()
    conv = "right-handed"
    rows, qcrops, mcrops, kcrops = [], [], [], []
    for plan in plans:
        images, truth = R.make_study(plan, acquisition=acq, convention=conv, seed=seed * 1000 + plan.index)
        mag, ph, te, background, mag_echoes = analysis_inputs(images, plan.grid.voxel_mm)
        mag_copy = np.array(mag, np.float32, copy=True)
        opts = replace(options, background=background)
        res = analyze_arrays(mag, ph, images.affine_lps, convention=conv, options=opts, echo_time_ms=te,
                             field_strength_t=acq.b0_t, magnitude_echoes=mag_echoes)
        vox = tuple(float(v) for v in truth["voxel_mm_slice_row_column"])
        half = (int(np.ceil(CROP_SLICES_MM / vox[0])), int(np.ceil(CROP_MM / vox[1])), int(np.ceil(CROP_MM / vox[2])))
        centres = np.array([s.center_lps_mm for s in res.lesions]) if res.lesions else np.zeros((0, 3))
        used: set[int] = set()
        for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
            k = match_spot(t, centres, used, vox[0])
            if k is None:
                continue
            used.add(k)
            les, sp, fit = res.lesions[k], res.spots[k], res.fits[k]
            v_true = np.pi / 6 * t["diameter_mm"] ** 3
            s_fit = 4 * np.pi * les.moment if (les.moment is not None and les.moment_unit.startswith("ppm")) else None
            s_fit_ci = (None if les.moment_ci is None or s_fit is None
                        else [4 * np.pi * les.moment_ci[0], 4 * np.pi * les.moment_ci[1]])
            centre = fit.center_index if fit.usable and fit.center_index is not None else sp.center_index
            note = les.source_size_note or ""
            rows.append(dict(study=plan.index, cls=t["class"], d_true=t["diameter_mm"], chi_true=t["chi_ppm"],
                             s_true=t["chi_ppm"] * v_true, v_true=v_true, d_det=les.diameter_mm,
                             d_src=les.source_diameter_mm, d_src_ci=les.source_diameter_mm_ci,
                             size_not_resolved="not resolved" in note,
                             s_qsm=les.qsm_total_ppm_mm3, s_qsm_ci=les.qsm_total_ppm_mm3_ci, s_fit=s_fit, s_fit_ci=s_fit_ci,
                             chi_qsm=les.qsm_chi_ppm, chi_qsm_ci=les.qsm_chi_ppm_ci,
                             chi_fit=les.chi_ppm, chi_fit_ci=les.chi_ppm_ci,
                             chi_core=les.qsm_core_chi_ppm, chi_core_ci=les.qsm_core_chi_ppm_ci,
                             fit_frac=les.fit_recovery_fraction, qsm_frac=les.qsm_recovery_fraction,
                             n_slices=len(sp.slice_indices), cored=bool(t.get("core_diameter_mm")),
                             call=les.classification.value, voxel_mm=vox,
                             centre_in_crop=[float(c - round(c) + h) for c, h in zip(centre, half)]))
            qcrops.append(_crop(res.qsm.chi_ppm, centre, half) if res.qsm is not None else np.zeros(tuple(2 * h + 1 for h in half), np.float32))
            kcrops.append(_crop(res.qsm.mask, centre, half) if res.qsm is not None else np.zeros(tuple(2 * h + 1 for h in half), bool))
            mcrops.append(_crop(mag_copy, centre, half))
        print(f"  {protocol} study {plan.index}: {len(res.lesions)} spots", file=sys.stderr, flush=True)
        del images, res, mag_copy
    return rows, qcrops, kcrops, mcrops


def save(path: Path, rows, qcrops, kcrops, mcrops):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, rows=json.dumps(rows), q=np.stack(qcrops), k=np.stack(kcrops), m=np.stack(mcrops))


def load(path: Path):
    z = np.load(path, allow_pickle=False)
    return json.loads(str(z["rows"])), list(z["q"]), list(z["k"]), list(z["m"])


def half_peak(q: np.ndarray, mask: np.ndarray, centre, sign: float, voxel_mm, d_det_mm: float):
    """(volume mm^3, mean chi, peak chi) of the region connected to the spot's extreme value (the
    sign's, within the detected radius + one voxel of the centre) where sign x chi >= half of it,
    chi relative to the median of a shell 1-2 detected diameters out; None where there is no peak."""
    idx = np.indices(q.shape).astype(float)
    dist = np.sqrt(sum(((idx[a] - centre[a]) * voxel_mm[a]) ** 2 for a in range(3)))
    shell = mask & (dist >= max(d_det_mm, 2.0)) & (dist <= 2.0 * max(d_det_mm, 2.0))
    if shell.sum() < 10:
        return None
    level = float(np.median(q[shell]))
    s = sign * (q - level)
    near = mask & (dist <= d_det_mm / 2 + max(voxel_mm))
    if not near.any():
        return None
    peak_idx = np.unravel_index(np.argmax(np.where(near, s, -np.inf)), q.shape)
    peak = float(s[peak_idx])
    if not peak > 0:
        return None
    lab, _ = ndi.label(mask & (s >= 0.5 * peak) & (dist <= 2.0 * max(d_det_mm, 2.0)))
    region = lab == lab[peak_idx]
    vol = float(region.sum() * np.prod(voxel_mm))
    return vol, float(np.mean(q[region] - level)), sign * peak


def sphere_total(q: np.ndarray, mask: np.ndarray, centre, voxel_mm, radius_mm: float):
    """The map's integral (ppm mm^3) over a sphere of ``radius_mm`` minus its 1-1.5 radius shell's median level."""
    idx = np.indices(q.shape).astype(float)
    dist = np.sqrt(sum(((idx[a] - centre[a]) * voxel_mm[a]) ** 2 for a in range(3)))
    inside = mask & (dist <= radius_mm)
    shell = mask & (dist > radius_mm) & (dist <= 1.5 * radius_mm)
    if shell.sum() < 10 or not inside.any():
        return None
    return float((q[inside] - np.median(q[shell])).sum() * np.prod(voxel_mm))


def options_of(rows, qcrops, kcrops):
    """Per spot, the extra readings (half-peak region, peak, sphere total) from the crops."""
    for r, q, k in zip(rows, qcrops, kcrops):
        vox = r["voxel_mm"]
        s_ref = r["s_fit"] if r["s_fit"] is not None else r["s_qsm"]
        sign = 1.0 if (s_ref or 0) >= 0 else -1.0
        hp = half_peak(q, k, r["centre_in_crop"], sign, vox, r["d_det"]) if np.any(k) else None
        r["v_half"], r["chi_half"], r["chi_peak"] = hp if hp else (None, None, None)
        r["s_sphere"] = sphere_total(q, k, r["centre_in_crop"], vox, max(r["d_det"], 2.5)) if np.any(k) else None
        r["v_bloom"] = np.pi / 6 * (r["d_src"] or r["d_det"]) ** 3
    return rows


def summarise(rows, label: str) -> list[str]:
    big = [r for r in rows if r["d_true"] >= 2.0]
    out = [f"## {label}: {len(big)} matched spots >= 2 mm "
           f"({sum(r['size_not_resolved'] for r in big)} with the source size not resolved)"]

    def reading(name, fn, subset=None):
        pts = []
        for r in (subset if subset is not None else big):
            try:
                v = fn(r)
            except (TypeError, ZeroDivisionError):
                v = None
            if v is not None and np.isfinite(v):
                pts.append((r["chi_true"], v))
        s, i, r2 = _fit(*zip(*pts)) if len(pts) >= 3 else (np.nan,) * 3
        out.append(f"  {name}: n {len(pts)}, slope {s:.2f}, intercept {i:+.3f} ppm, R^2 {r2:.3f}")

    reading("fit, bloom volume (reported chi_ppm)", lambda r: r["chi_fit"])
    reading("QSM, bloom volume (reported qsm_chi_ppm)", lambda r: r["chi_qsm"])
    reading("QSM core (reported qsm_core_chi_ppm)", lambda r: r.get("chi_core"))
    reading("QSM half-peak mean", lambda r: r["chi_half"])
    reading("fit moment / half-peak volume", lambda r: r["s_fit"] / r["v_half"])
    reading("QSM total / half-peak volume", lambda r: r["s_qsm"] / r["v_half"])
    reading("QSM peak", lambda r: r["chi_peak"])
    reading("QSM sphere total / bloom volume", lambda r: r["s_sphere"] / r["v_bloom"])
    reading("ceiling: fit moment / true volume", lambda r: r["s_fit"] / r["v_true"])
    reading("ceiling: true moment / bloom volume", lambda r: r["s_true"] / r["v_bloom"])
    res = [r for r in big if not r["size_not_resolved"]]
    out.append(f" size resolved only ({len(res)} spots):")
    reading("fit, bloom volume (reported chi_ppm)", lambda r: r["chi_fit"], res)
    reading("QSM, bloom volume (reported qsm_chi_ppm)", lambda r: r["chi_qsm"], res)

    def ratio(name, fn):
        q = []
        for r in big:
            try:
                v = fn(r)
            except (TypeError, ZeroDivisionError):
                v = None
            if v is not None and np.isfinite(v) and v > 0 and not r["cored"]:
                q.append(v)
        q = np.array(q)
        if len(q):
            out.append(f"  {name}: n {len(q)}, median {np.median(q):.2f}, IQR {np.percentile(q, 25):.2f}-"
                       f"{np.percentile(q, 75):.2f}, s.d. of log {np.std(np.log(q)):.2f}")
    out.append(" ratios to the truth (cored lesions left out):")
    ratio("S_fit / S_true", lambda r: r["s_fit"] / r["s_true"])
    ratio("S_QSM / S_true", lambda r: r["s_qsm"] / r["s_true"])
    ratio("S_QSM sphere / S_true", lambda r: r["s_sphere"] / r["s_true"])
    ratio("V_bloom / V_true", lambda r: r["v_bloom"] / r["v_true"])
    ratio("V_half-peak / V_true", lambda r: r["v_half"] / r["v_true"])

    def coverage(name, key_ci, key_truth, subset):
        inside = n = 0
        for r in subset:
            ci = r.get(key_ci)
            if ci is None:
                continue
            n += 1
            inside += ci[0] <= r[key_truth] <= ci[1]
        return f"{name} {inside}/{n}" + (f" = {inside / n:.2f}" if n else "")
    out.append(" truth inside the reported 95 % interval (spots >= 2 mm; cored left out):")
    res_plain = [r for r in big if not r["cored"] and not r["size_not_resolved"] and r["d_src_ci"]]
    inside = sum(r["d_src_ci"][0] <= r["d_true"] <= r["d_src_ci"][1] for r in res_plain)
    out.append(f"  true diameter inside source_diameter_mm_ci (size resolved): {inside}/{len(res_plain)}"
               + (f" = {inside / len(res_plain):.2f}" if res_plain else ""))
    plain = [r for r in big if not r["cored"]]
    for lab, sub in (("size resolved", [r for r in plain if not r["size_not_resolved"]]),
                     ("size not resolved", [r for r in plain if r["size_not_resolved"]])):
        out.append(f"  {lab}: " + "; ".join([coverage("chi_ppm_ci", "chi_fit_ci", "chi_true", sub),
                                             coverage("qsm_chi_ppm_ci", "chi_qsm_ci", "chi_true", sub),
                                             coverage("qsm_core_chi_ppm_ci", "chi_core_ci", "chi_true", sub),
                                             coverage("4 pi moment_ci", "s_fit_ci", "s_true", sub)]))
    def width(name, key, key_ci, subset):
        w = [(r[key_ci][1] - r[key_ci][0]) / abs(r[key]) for r in subset
             if r.get(key_ci) is not None and r.get(key) not in (None, 0)]
        return f"{name} {np.median(w):.2f} (p90 {np.percentile(w, 90):.2f})" if w else f"{name} -"
    for lab, sub in (("size resolved", [r for r in big if not r["size_not_resolved"]]),
                     ("size not resolved", [r for r in big if r["size_not_resolved"]])):
        out.append(f"  interval width / |value|, median, {lab}: " + "; ".join(
            [width("chi_ppm", "chi_fit", "chi_fit_ci", sub), width("qsm_chi_ppm", "chi_qsm", "chi_qsm_ci", sub),
             width("qsm_core_chi_ppm", "chi_core", "chi_core_ci", sub)]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="swi3d")
    ap.add_argument("--studies", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="write the per-spot rows and crops here (.npz)")
    ap.add_argument("--from-cache", type=Path, help="summarise a cache instead of running the pipeline")
    args = ap.parse_args(argv)
    if args.from_cache:
        rows, q, k, m = load(args.from_cache)
        label = args.from_cache.stem
    else:
        rows, q, k, m = collect(args.protocol, args.studies, args.seed)
        if args.cache:
            save(args.cache, rows, q, k, m)
        label = f"{args.protocol}, seed {args.seed}, {args.studies} studies"
    print("\n".join(summarise(options_of(rows, q, k), label)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
