"""Why injected lesions are missed on the real backgrounds: one line per lesion (issue 10).

    python benchmarks/real_background_diagnose.py [--lesion-te-ms 25] [--studies 4] [--lesion-diameter-mm 5 7] [--lesion-t2star-ms 10]

Same injection and seeds as ``real_background_benchmark.py``. Per lesion: class, diameter, chi;
the truth's slice count (visible per truth); the true magnitude contrast (darkest injected /
original magnitude within one voxel of the centre); that deficit in noise units (tissue level /
noise sigma x deficit); whether the centre is inside the brain mask; the detector's darkness
ratio there (x tissue ratio: candidates need < dark_ratio, cores < core_ratio); and what
detection did with it: kept (spot), or the nearest rejected candidate's reason.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real_background_benchmark import VENDOR_DICOM  # noqa: E402
from dicom_io.read import series as dseries  # noqa: E402
from plugin import inject as I  # noqa: E402
from plugin.method.detect import DetectionParams, detect_spots, sample_inside  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--acquisitions", nargs="+", default=list(I.KNOWN_ACQUISITIONS))
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lesion-te-ms", type=float, default=None)
    ap.add_argument("--lesion-diameter-mm", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    ap.add_argument("--lesion-t2star-ms", type=float, default=I.VOID_T2STAR_MS)
    args = ap.parse_args(argv)
    params = DetectionParams()
    summary: Counter = Counter()
    for name in args.acquisitions:
        paths = [VENDOR_DICOM / f for f in I.KNOWN_ACQUISITIONS[name]]
        orig_acq = I.open_acquisition(paths)
        orig = np.asarray(dseries.load_volume(orig_acq.pair.magnitude).data, np.float32)
        seed = args.seed * 100 + zlib.crc32(name.encode()) % 100
        with tempfile.TemporaryDirectory(prefix="bp_diag_") as tmp:
            truth = I.inject_into(paths, Path(tmp), seed=seed, n_studies=args.studies, lesion_echo_time_ms=args.lesion_te_ms,
                                  diameter_range_mm=args.lesion_diameter_mm, lesion_t2star_ms=args.lesion_t2star_ms)
            for i, st in enumerate(truth["studies"]):
                acq = I.open_acquisition([Path(tmp) / st["directory"]])
                mag = np.asarray(dseries.load_volume(acq.pair.magnitude).data, np.float32)
                vox = acq.voxel_mm
                det = detect_spots(mag, vox, params)
                tr = float(np.median(sample_inside(det.ratio, det.brain_mask)))
                snr = det.tissue_level / max(det.noise_sigma, 1e-9)
                inv = np.linalg.inv(acq.affine_lps)
                if i == 0:
                    print(f"\n{name}: shape {mag.shape}, voxel {tuple(round(v, 2) for v in vox)} mm, magnitude TE "
                          f"{acq.pair.magnitude.echo_time_ms} ms, tissue SNR {snr:.0f}, mask {det.brain_mask.sum()} voxels, "
                          f"tissue ratio {tr:.2f}")
                for L in st["lesions"]:
                    idx = inv[:3, :3] @ np.asarray(L["center_lps_mm"]) + inv[:3, 3]
                    s, r, c = (int(round(v)) for v in idx)
                    win = (slice(max(s - 1, 0), s + 2), slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2))
                    contrast = float(np.min(mag[win] / np.maximum(orig[win], 1e-6)))
                    in_mask = bool(det.brain_mask[s, r, c])
                    rmin = float(det.ratio[win].min()) / tr

                    def near(cidx):
                        d = (np.asarray(cidx) - idx) * np.asarray(vox)
                        return abs(d[0]) <= max(3.0, L["diameter_mm"], vox[0]) and np.hypot(d[1], d[2]) <= max(3.0, L["diameter_mm"])
                    if any(near(sp.center_index) for sp in det.spots):
                        fate = "KEPT"
                    else:
                        rej = [x for x in det.rejected if near(x.center_index)]
                        fate = ("rejected: " + rej[0].text[:90]) if rej else (
                            "no candidate" if rmin >= params.dark_ratio else "candidate without core" if rmin >= params.core_ratio else
                            "beside or merged with another dark structure (no spot or rejection within reach)")
                    key = fate.split(" (")[0]
                    summary[(name, key)] += 1
                    print(f"  s{i + 1} {L['class'][:5]} d={L['diameter_mm']:.1f} chi={L['chi_ppm']:+.2f} n_sl={L.get('n_slices', 0)} "
                          f"contrast {contrast:.2f} ({(1 - contrast) * snr:.1f} sigma) mask={int(in_mask)} "
                          f"ratio {rmin:.2f} -> {fate}")
    print("\nsummary:")
    for (name, key), n in sorted(summary.items()):
        print(f"  {name}: {n} x {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
