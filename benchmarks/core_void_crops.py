"""The QSM core reading with and without the magnitude's signal void left out (issue 11), on the
crops ``benchmarks/chi_volume_options.py --cache`` keeps (QSM map, brain mask, magnitude around each
matched spot): the same map and the same ``plugin.method.qsmcore.core_susceptibility``; for the
"void left out" reading the map's voxels where the magnitude is below ``VOID_FRACTION`` of the crop's
brain median (the signal void, plugin.method.spotread's level) are set far to the other sign, so
they neither make the core's extreme nor add to the column. No pipeline run is needed.

The crops are 9 mm in plane and 6 mm through plane each side of the centre; they are padded with
voxels outside the brain mask so that the level's shell (1-2 spot diameters out) is read where the
crop has it. The shifted readings (the interval) mostly leave the crop: only the value is compared.
The reported figures (with the interval) come from ``chi_volume_options.py`` itself.

    PYTHONPATH=. python3 benchmarks/core_void_crops.py /tmp/core2/swi3d_0.npz /tmp/chi3/gre3d_7.npz ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.chi_volume_options import _fit, load  # noqa: E402
from plugin.method.qsmcore import core_susceptibility  # noqa: E402

PAD = 40             # voxels of padding (outside the mask) on every side
VOID_FRACTION = 0.3  # magnitude below this fraction of the brain's median: signal void


def readings(path: Path):
    rows, qs, ks, ms = load(path)
    out = []
    for r, q, k, m in zip(rows, qs, ks, ms):
        if r["d_true"] < 2.0:
            continue
        ref = r["s_fit"] if r["s_fit"] is not None else r["s_qsm"]
        if not ref:
            continue
        sign = 1.0 if ref > 0 else -1.0
        pad = [(PAD, PAD)] * 3
        qp, kp, mp = np.pad(q, pad), np.pad(k, pad), np.pad(m, pad)
        c = np.asarray(r["centre_in_crop"], float) + PAD
        d_src = r["d_src"] or r["d_det"]
        void = kp & (mp < VOID_FRACTION * float(np.median(m[k])))
        vals = []
        for chi in (qp, np.where(void, np.float32(-sign * 1e3), qp)):
            got = core_susceptibility(chi, kp, c, r["voxel_mm"], r["d_det"], sign, source_diameter_mm=d_src)
            vals.append(got.chi_ppm)
        out.append((r, *vals))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("caches", nargs="+", type=Path)
    a = ap.parse_args(argv)
    for path in a.caches:
        got = readings(path)
        print(f"## {path}: {len(got)} matched spots >= 2 mm")
        for j, name in ((1, "core, void kept (main)"), (2, "core, void left out")):
            pts = [(r["chi_true"], v[j - 1]) for r, *v in got if v[j - 1] is not None]
            s, i, r2 = _fit(*zip(*pts))
            err = np.median([abs(v / t - 1) for t, v in pts if t])
            print(f"  {name}: n {len(pts)}, slope {s:.2f}, intercept {i:+.3f} ppm, R^2 {r2:.3f}, median |ratio-1| {err:.3f}")
        changed = [(r, a_, b_) for r, a_, b_ in got if a_ != b_]
        print(f"  spots whose reading changed: {len(changed)}" + "".join(
            f"\n    d {r['d_true']:.1f} mm truth {r['chi_true']:+.3f}: {a_} -> {b_}" for r, a_, b_ in changed[:8]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
