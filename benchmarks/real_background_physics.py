"""What each injected lesion physically puts into the real series, and how much of it survives (issue 10).

    python benchmarks/real_background_physics.py [--studies 4] [--seed 0]

Same placements as ``real_background_benchmark.py`` (same seeds; the placement does not depend on
``--lesion-te-ms``). Per lesion, from the injection's own voxel-averaged complex factor F on the
series' grid (:func:`plugin.inject.lesion_signal`: Lorentz-corrected dipole on a ~0.5 mm grid,
complex averaging, void), at the series' real echo times (``own``) and as at TE 25 ms (``te25``):

* ``contrast``: the darkest |F| of the analysed magnitude echo (1 = invisible, 0 = black voxel);
* ``dip_sd``: that deficit in the detector's noise s.d. (pixel differences in the brain: thermal noise
  and the head's texture at 3 mm) (tissue level / noise s.d. x (1 - contrast));
* ``phase_max``: the largest |arg F| of the analysed phase (for a Siemens phase difference:
  F(TE2) conj F(TE1), i.e. at dTE) over voxels whose |F| > 0.5 (signal there to read the phase);
* ``phase_sd``: phase noise s.d. (thermal noise from the air around the head / tissue level; x sqrt 2
  for a phase difference);
* ``n3``: voxels whose lesion phase exceeds 3 phase-noise s.d. (what a dipole fit pools);
* ``kept``: the fraction of the lesion's phase that the pipeline's background removal keeps
  near the lesion, <removed(injected) - removed(original), true> / <true, true> over the voxels
  with |true phase| > 2 noise s.d., for the method the pipeline uses on this series, and beside
  it for the other one (``smv``: variable radius SMV, what the pipeline uses on raw phase and on
  phase differences; ``laplacian``: the Gaussian high pass sigma 4 mm used on phase differences before);
* last column: the largest |arg F| one echo at the magnitude's TE would hold (|F| > 0.5): what a
  single-echo GRE phase at that TE would show; a Siemens field map delivers only the difference.

Nothing here is tuned: it measures. Shared 2-core machine: no timings.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_background_benchmark import VENDOR_DICOM  # noqa: E402
from dicom_io.phase import wrap_rad  # noqa: E402
from dicom_io.read import series as dseries  # noqa: E402
from dicom_io.vocabulary import PhaseKind  # noqa: E402
from plugin import inject as I  # noqa: E402
from plugin.method.background import remove_background  # noqa: E402
from plugin.method.detect import brain_mask, estimate_noise_sigma, sample_inside  # noqa: E402


def lesions_of(acq, mag, ph, seed: int, n_mb: int = 3, n_ca: int = 3):
    """The lesions inject_study places for ``seed`` (same rng calls, in the same order)."""
    rng = np.random.default_rng(seed)
    allowed = I.allowed_centres(mag, ph, acq.voxel_mm)
    return I.place(I.draw_specs(rng, n_mb, n_ca), allowed, acq, rng)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--acquisitions", nargs="+", default=list(I.KNOWN_ACQUISITIONS))
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(f"$ python benchmarks/real_background_physics.py --studies {args.studies} --seed {args.seed}")
    for name in args.acquisitions:
        paths = [VENDOR_DICOM / f for f in I.KNOWN_ACQUISITIONS[name]]
        acq = I.open_acquisition(paths)
        mag = np.asarray(dseries.load_volume(acq.pair.magnitude).data, np.float32)
        ph = np.asarray(dseries.load_volume(acq.pair.phase).data, np.float32)
        vox = acq.voxel_mm
        mask = brain_mask(mag, vox)
        tissue = float(np.median(sample_inside(mag, mask)))
        noise = estimate_noise_sigma(mag, mask)
        # the thermal noise alone, from the air around the head (Rayleigh: E[m^2] = 2 sigma^2); the
        # pixel-difference estimate above also holds the head's texture at 3 mm and is what the
        # detector uses; the phase noise below is from the thermal one
        head = ndi.binary_dilation(mag > 0.1 * np.percentile(mag, 98), iterations=3)
        air = mag[~head]
        zeroed = air.size > 100 and float(np.mean(air == 0)) > 0.2    # background set to 0 by the scanner
        noise_air = noise if (air.size <= 100 or zeroed) else float(np.sqrt(np.mean(air.astype(np.float64) ** 2) / 2.0))
        thermal = ("not measurable: the scanner zeroed the air" if zeroed else "thermal, from the air")
        diff = acq.pair.phase.kind == PhaseKind.PHASE_DIFFERENCE
        phase_sd = noise_air / tissue * (np.sqrt(2.0) if diff else 1.0)
        te_ph = float(acq.pair.phase.effective_echo_time_ms or acq.pair.phase.echo_time_ms)
        te_mag = float(acq.pair.magnitude.echo_time_ms)
        used, other = "smv", "laplacian"     # the pipeline's (raw phase and phase differences alike) / the old one
        base = {m: remove_background(ph, mag, mask, vox, method=m)[0] for m in (used, other)}
        print(f"\n{name}: {acq.shape} voxels of {tuple(round(v, 2) for v in vox)} mm, B0 {acq.b0_t:g} T; magnitude TE "
              f"{te_mag:g} ms, phase {'difference, dTE' if diff else 'TE'} {te_ph:g} ms; tissue SNR {tissue / noise_air:.0f} "
              f"({thermal}; {tissue / noise:.0f} with texture, the detector's), "
              f"phase noise {phase_sd:.3f} rad; background removal used: {used}")
        print("  study class  d_mm   chi  | own: contrast dip_sd phase_max n3 | te25: contrast dip_sd phase_max n3 "
              f"| kept own: {used} {other} | phase_max of one echo at the magnitude's TE (not delivered)")
        seed = args.seed * 100 + zlib.crc32(name.encode()) % 100
        for i in range(args.studies):
            lesions = lesions_of(acq, mag, ph, seed * 1000 + i)
            rows = {}
            for label, te in (("own", None), ("te25", 25.0)):
                scale = 1.0 if te is None else te / te_ph
                mscale = None if te is None else te / te_mag
                signal, local = I.lesion_signal(acq, lesions, scale, mscale)
                fm = signal.magnitude_factor(te_mag)
                fp = signal.phase_factor(acq.pair.phase)
                true_phase = np.angle(fp)
                if label == "own":
                    inj = wrap_rad(ph + true_phase.astype(np.float32))
                    injm = mag * np.abs(fm)
                    kept_maps = {m: remove_background(inj, injm, mask, vox, method=m)[0] - base[m] for m in (used, other)}
                for L, lg in zip(lesions, local):
                    s, r, c = (int(round(float(v))) for v in signal.grid.index_of(lg.center_lps_mm))
                    h = [max(2, int(np.ceil((lg.radius_mm + 6.0) / v))) for v in vox]
                    win = tuple(slice(max(a - b, 0), a + b + 1) for a, b in zip((s, r, c), h))
                    con = float(np.abs(fm[win]).min())
                    readable = np.abs(fp[win]) > 0.5
                    tp = true_phase[win]
                    pmax = float(np.abs(tp[readable]).max()) if readable.any() else 0.0
                    n3 = int(np.count_nonzero(readable & (np.abs(tp) > 3 * phase_sd)))
                    row = rows.setdefault(L.id, [L, [], None, None])
                    row[1].append((con, (1 - con) * tissue / noise, pmax, n3))
                    if label == "own":
                        sel = readable & (np.abs(tp) > 2 * phase_sd)
                        kept = []
                        for m in (used, other):
                            got = kept_maps[m][win][sel]
                            got = np.angle(np.exp(1j * got))
                            t = tp[sel]
                            kept.append(float(np.dot(got, t) / np.dot(t, t)) if sel.any() else float("nan"))
                        row[2] = kept
                        f1 = signal.factor(te_mag)[win]
                        ok1 = np.abs(f1) > 0.5
                        row[3] = float(np.abs(np.angle(f1[ok1])).max()) if ok1.any() else 0.0
            for L, vals, kept, p_single in rows.values():
                (c1, d1, p1, n1), (c2, d2, p2, n2) = vals
                print(f"  s{i + 1} {L.lesion_class[:5]:5s} {L.diameter_mm:4.1f} {L.chi_ppm:+.2f} | "
                      f"own: {c1:.2f} {d1:5.1f} {p1:5.2f} {n1:3d} | te25: {c2:.2f} {d2:5.1f} {p2:5.2f} {n2:3d} | "
                      + " ".join("  n/a" if np.isnan(k) else f"{k:5.2f}" for k in kept) + f" | {p_single:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
