"""Is a thick-slice spot's chi identified? A complex forward-model fit on the 2D T2*-GRE 5 mm cohort (issue 11).

Issue 11's chi target (slope 0.9-1.1, R^2 >= 0.9, spots >= 2 mm) is met on gre3d and swi3d and not on
gre2d_5mm, where the reported chi (the QSM map's core) reads 0.78 / 0.897 (seed 0) and 0.73 / 0.839
(held-out seed 61). Both the map and the node's dipole fit read the *phase*, and on 5 mm slices at 1.5 T,
TE 20 ms the phase near a 2-4 mm source is not linear in the field: the voxel's spins dephase through the
slice (8 rad per ppm at this echo), so a linear model loses the near field.

This script fits what the scanner measured instead: the complex signal of 3 slices x a 13-voxel disc
around each detected spot, modelled as a uniform sphere (radius ``a``, chi, centre) whose Lorentz-
corrected field is averaged over a sub-voxel grid (9 x 3 x 3 samples per voxel; the phantom renders
with 7 x 3 x 3, so the two grids differ), a signal void inside the sphere (hemosiderin and calcium:
T2* of a few ms; the phantom uses 10 ms, so the model's void differs from the rendering too), a
complex tissue level per slice solved in closed form, and an in-plane background phase gradient.
``scipy.optimize.least_squares`` from four starts (chi +-0.3 ppm, a 0.8 / 1.5 mm), the crop centred on the
*detected* spot. Nothing here reads the truth but the scoring.

It prints, against the truth (spots >= 2 mm): the fitted total susceptibility S = chi 4/3 pi a^3
(the moment, which the exterior field identifies), chi from the fit's own radius, chi as S over the
true volume (the ceiling a perfect volume would give), the fitted and detected diameters, the core
reading the node reports today, the sign of the fit on the spots the node left indeterminate, and the
time per spot. It is a measurement, not a method of the node (the node's fit is
``plugin.method.dipolefit``; its core reading ``plugin.method.qsmcore``).

    PYTHONPATH=. python3 benchmarks/gre2d_complex_fit.py --seed 0 --studies 2
    PYTHONPATH=. python3 benchmarks/gre2d_complex_fit.py --seed 61 --studies 2      # held out
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring import analysis_inputs, match_spot  # noqa: E402
from plugin import physics  # noqa: E402
from plugin.method.dipolefit import b0_in_array_axes  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays  # noqa: E402

SUBSAMPLES = (9, 3, 3)          # per voxel (slice, row, column); the phantom renders with (7, 3, 3)
DISC_RADIUS_VOXELS = 6          # in-plane radius of the fitted region
STARTS = [(chi, a) for chi in (0.3, -0.3) for a in (0.8, 1.5)]


@dataclass(frozen=True)
class SphereFit:
    chi_ppm: float
    radius_mm: float
    centre_mm: np.ndarray       # fitted centre minus the crop's centre voxel, array axes (mm)
    cost: float
    nfev: int

    @property
    def total_ppm_mm3(self) -> float:
        return self.chi_ppm * 4.0 / 3.0 * np.pi * self.radius_mm ** 3


def _subsample_offsets(voxel_mm) -> np.ndarray:
    g = [((np.arange(n) + 0.5) / n - 0.5) * v for n, v in zip(SUBSAMPLES, voxel_mm)]
    return np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 3)


def fit_sphere(signal: np.ndarray, centre_vox: tuple[int, int, int], voxel_mm, b0_axes: np.ndarray,
               rad_per_ppm: float) -> SphereFit:
    """Least-squares sphere (chi, radius, centre) + per-slice complex level + in-plane phase gradient
    on the complex ``signal`` around ``centre_vox``. ``rad_per_ppm`` is signed (the handedness)."""
    vox = np.asarray(voxel_mm, float)
    c0 = np.asarray(centre_vox, int)
    r = DISC_RADIUS_VOXELS
    zs = np.arange(max(0, c0[0] - 1), min(signal.shape[0], c0[0] + 2))
    vz, vy, vx = np.meshgrid(zs, np.arange(c0[1] - r, c0[1] + r + 1), np.arange(c0[2] - r, c0[2] + r + 1), indexing="ij")
    keep = ((vy - c0[1]) ** 2 + (vx - c0[2]) ** 2 <= r * r) & (vy >= 0) & (vx >= 0) & \
           (vy < signal.shape[1]) & (vx < signal.shape[2])
    vz, vy, vx = vz[keep], vy[keep], vx[keep]
    data = signal[vz, vy, vx]
    pts = (np.stack([vz, vy, vx], -1) * vox)[:, None, :] + _subsample_offsets(vox)[None]
    slices = [vz == z for z in zs]
    scale = max(float(np.median(np.abs(data))), 1e-12)
    dy, dx = (vy - c0[1]).astype(float), (vx - c0[2]).astype(float)

    def residual(p):
        chi, a, cz, cy, cx, gy, gx = p
        rel = pts - (c0 * vox + np.array([cz, cy, cx]))
        field = physics.sphere_field_ppm(rel, diameter_mm=2 * a, chi_ppm=chi, b0_direction=b0_axes)
        e = np.exp(1j * rad_per_ppm * field)
        e[np.einsum("...i,...i->...", rel, rel) <= a * a] = 0.0          # the void
        model = e.mean(axis=1) * np.exp(1j * (gy * dy + gx * dx))
        res = np.empty_like(data)
        for m in slices:
            level = np.vdot(model[m], data[m]) / max(np.vdot(model[m], model[m]).real, 1e-12)
            res[m] = data[m] - level * model[m]
        return np.r_[res.real, res.imag] / scale

    lb = [-4.0, 0.2, -0.7 * vox[0], -2.5, -2.5, -0.5, -0.5]
    ub = [4.0, 4.0, 0.7 * vox[0], 2.5, 2.5, 0.5, 0.5]
    best = None
    for chi0, a0 in STARTS:
        s = least_squares(residual, [chi0, a0, 0, 0, 0, 0, 0], bounds=(lb, ub),
                          x_scale=[0.2, 0.5, 1, 0.5, 0.5, 0.05, 0.05], max_nfev=200)
        if best is None or s.cost < best.cost:
            best = s
    return SphereFit(float(best.x[0]), float(best.x[1]), best.x[2:5].copy(), float(best.cost), int(best.nfev))


def _line(x, y) -> str:
    x, y = np.asarray(x, float), np.asarray(y, float)
    s, i = np.linalg.lstsq(np.c_[x, np.ones_like(x)], y, rcond=None)[0]
    r2 = 1 - np.sum((y - (s * x + i)) ** 2) / np.sum((y - y.mean()) ** 2)
    return f"n {len(x)}, slope {s:.2f}, intercept {i:+.3f}, R^2 {r2:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--studies", type=int, default=2)
    args = ap.parse_args(argv)
    protocol, conv = "gre2d_5mm", "right-handed"
    acq = R.PROTOCOLS[protocol].acquisition()
    rows = []
    t_fit, n_fit = 0.0, 0
    for plan in R.realistic_cohort(args.seed, protocol=protocol, n_studies=args.studies):
        images, truth = R.make_study(plan, acquisition=acq, convention=conv, seed=args.seed * 1000 + plan.index)
        mag, ph, te, background, mag_echoes = analysis_inputs(images, plan.grid.voxel_mm)
        res = analyze_arrays(mag, ph, images.affine_lps, convention=conv, options=AnalysisOptions(background=background),
                             echo_time_ms=te, field_strength_t=acq.b0_t, magnitude_echoes=mag_echoes)
        signal = np.asarray(mag, np.float64) * np.exp(1j * np.asarray(ph, np.float64))
        k = physics.handedness_sign(conv) * physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=te)
        b0 = b0_in_array_axes(images.affine_lps)
        inv = np.linalg.inv(images.affine_lps)
        centres = np.array([s.center_lps_mm for s in res.lesions]) if res.lesions else np.zeros((0, 3))
        used: set[int] = set()
        for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
            j = match_spot(t, centres, used, plan.grid.voxel_mm[0])
            if j is None:
                continue
            used.add(j)
            if t["diameter_mm"] < 2.0:
                continue
            les = res.lesions[j]
            c = np.round((inv @ np.r_[les.center_lps_mm, 1.0])[:3]).astype(int)
            t0 = time.perf_counter()
            f = fit_sphere(signal, tuple(c), plan.grid.voxel_mm, b0, k)
            t_fit += time.perf_counter() - t0
            n_fit += 1
            rows.append(dict(chi=t["chi_ppm"], d=t["diameter_mm"], fit=f, det_d=les.diameter_mm,
                             core=les.qsm_core_chi_ppm, cls=les.classification.value))
        print(f"  study {plan.index}: {len(res.lesions)} spots", file=sys.stderr, flush=True)

    chi = [r["chi"] for r in rows]
    s_true = [r["chi"] * np.pi / 6 * r["d"] ** 3 for r in rows]
    print(f"## gre2d_5mm, seed {args.seed}, {args.studies} studies, {conv}: spots >= 2 mm")
    print(f"command: python benchmarks/gre2d_complex_fit.py --seed {args.seed} --studies {args.studies}")
    print(f"complex fit, wall s per spot (one core): {t_fit / max(n_fit, 1):.2f}")
    print("| reading vs truth | fit |\n|---|---|")
    print(f"| total susceptibility S (ppm mm^3), complex fit | {_line(s_true, [r['fit'].total_ppm_mm3 for r in rows])} |")
    print(f"| chi, complex fit with its own radius | {_line(chi, [r['fit'].chi_ppm for r in rows])} |")
    print(f"| chi, complex fit S / detected diameter's sphere | "
          f"{_line(chi, [r['fit'].total_ppm_mm3 / (np.pi / 6 * r['det_d'] ** 3) for r in rows])} |")
    print(f"| chi, complex fit S / **true** volume (ceiling) | "
          f"{_line(chi, [r['fit'].total_ppm_mm3 / (np.pi / 6 * r['d'] ** 3) for r in rows])} |")
    core = [(r["chi"], r["core"]) for r in rows if r["core"] is not None]
    print(f"| chi, QSM core as the node reports it | {_line([c[0] for c in core], [c[1] for c in core])} |")
    print(f"| diameter (mm), complex fit | {_line([r['d'] for r in rows], [2 * r['fit'].radius_mm for r in rows])} |")
    print(f"| diameter (mm), detected | {_line([r['d'] for r in rows], [r['det_d'] for r in rows])} |")
    wrong = sum(np.sign(r["fit"].chi_ppm) != np.sign(r["chi"]) for r in rows)
    ind = [r for r in rows if r["cls"] == "indeterminate"]
    ind_right = sum(np.sign(r["fit"].chi_ppm) == np.sign(r["chi"]) for r in ind)
    ind_chi = ", ".join(f"{r['chi']:+.3f}" for r in ind)
    print(f"complex fit's sign wrong on {wrong} of {len(rows)} spots; on the node's indeterminate spots right on "
          f"{ind_right} of {len(ind)} (truth chi {ind_chi})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
