"""Detection alone on the realistic head phantom: recall by size, false spots by where they lie,
what was rejected and why, and the detector's time.

    python benchmarks/detection_benchmark.py                                  # all protocols, 4 studies each
    python benchmarks/detection_benchmark.py --protocols swi3d --studies 2 --cache /tmp/bp_det_cache -v

Renders the realistic cohort (``plugin.phantom.realistic``, seed 0, right-handed, last echo) as
``benchmarks/realistic_benchmark.py`` does, but runs only ``plugin.method.detect.detect_spots`` on
the magnitude (arrays; no DICOM round trip, no phase reading), so the detector can be tuned fast:
``--cache DIR`` keeps every rendered magnitude (and its truth) as ``.npz`` and reuses it.

Scoring is the realistic benchmark's (``score_study``/``place_spot``): a truth lesion is found when
a kept spot's centre lies within max(3 mm, its diameter) in-plane and max(3 mm, its diameter, the
slice thickness) along z; a spot on a physiological calcification is a true spot (listed apart);
every other kept spot is a false spot, placed on the mimic or the part of the head where it lies.
Detection time: ``detect_spots`` (brain mask included) per study, median, on this host under its load.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.realistic_benchmark import SIZE_GROUPS, _rate, place_spot  # noqa: E402
from benchmarks.scoring import match_spot  # noqa: E402
from plugin.method.detect import DetectionParams, detect_spots  # noqa: E402
from plugin.phantom import head as H  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402


def load_study(plan, protocol: str, seed: int, cache: Path | None):
    """(magnitude of the last echo, affine, truth) of one study, rendered or from the cache."""
    if cache is not None:
        f = cache / f"{protocol}_s{seed}_{plan.index}.npz"
        if f.exists():
            z = np.load(f)
            return z["magnitude"], z["affine"], json.loads(str(z["truth"]))
    acq = R.PROTOCOLS[protocol].acquisition()
    images, truth = R.make_study(plan, acquisition=acq, convention="right-handed", seed=seed * 1000 + plan.index)
    mag, aff = images.magnitude[-1], images.affine_lps
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(f, magnitude=mag, affine=aff, truth=json.dumps(truth))
    return mag, aff, truth


def score(spots, truth: dict, anat) -> tuple[list[tuple[float, bool]], list[tuple[str, dict]], int]:
    """(diameter, found) per truth lesion; false spots (where, spot); physiological calcifications found."""
    centres = np.array([s.center_lps_mm for s in spots]) if spots else np.zeros((0, 3))
    used: set[int] = set()
    slice_mm = truth["voxel_mm_slice_row_column"][0]

    found = []
    for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
        k = match_spot(t, centres, used, slice_mm)
        if k is not None:
            used.add(k)
        found.append((t["diameter_mm"], k is not None, t))
    n_phys = 0
    for t in truth["physiological_calcifications"]:
        k = match_spot(t, centres, used, slice_mm)
        if k is not None:
            used.add(k)
            n_phys += 1
    false = [(place_spot(s, truth, anat), {"center_lps_mm": [round(v, 1) for v in s.center_lps_mm],
                                           "diameter_mm": round(s.diameter_mm, 2), "n_slices": s.n_slices})
             for i, s in enumerate(spots) if i not in used]
    return found, false, n_phys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", nargs="+", default=list(R.PROTOCOLS), choices=list(R.PROTOCOLS))
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--only", type=int, nargs="+", help="study indices to run (of --studies)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="keep rendered magnitudes here and reuse them")
    ap.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE", help="override DetectionParams fields")
    ap.add_argument("-v", "--verbose", action="store_true", help="list misses and false spots")
    args = ap.parse_args(argv)
    command = "python benchmarks/detection_benchmark.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = []
    fields = DetectionParams.__dataclass_fields__
    params = DetectionParams(**{k: type(getattr(DetectionParams(), k))(v) for k, v in (a.split("=", 1) for a in args.set) if k in fields})
    for protocol in args.protocols:
        plans = R.realistic_cohort(args.seed, protocol=protocol, n_studies=args.studies)
        if args.only:
            plans = [p for p in plans if p.index in args.only]
        cpu = []
        found, false, secs, n_phys, n_phys_vis, n_ends = [], [], [], 0, 0, 0
        rejected = Counter()
        miss_lines = []
        for plan in plans:
            mag, aff, truth = load_study(plan, protocol, args.seed, args.cache)
            voxel = tuple(float(np.linalg.norm(aff[:3, i])) for i in range(3))
            t0, c0 = time.perf_counter(), time.process_time()
            det = detect_spots(mag, voxel, params)
            secs.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            for s in det.spots:
                s.center_lps_mm = tuple(float(v) for v in np.asarray(s.center_index) @ aff[:3, :3].T + aff[:3, 3])
            for r in det.rejected:
                rejected[_reason_key(r)] += 1
            anat = H.build_anatomy(plan.head_seed, plan.anatomy_mm)
            f, fs, nph = score(det.spots, truth, anat)
            found += f
            false += fs
            n_phys += nph
            n_phys_vis += sum(int(t.get("n_slices", 0) > 0) for t in truth["physiological_calcifications"])
            z0, z1 = aff[2, 3], aff[2, 3] + aff[2, 0] * (mag.shape[0] - 1)
            n_ends += sum(1 for _, sp in fs if min(abs(sp["center_lps_mm"][2] - z0), abs(sp["center_lps_mm"][2] - z1)) < 1.0)
            if args.verbose:
                for d, ok, t in f:
                    if not ok:
                        miss_lines.append(f"    study {plan.index} missed: {t.get('kind', 'paper')} {t['class']} d={d:.2f} "
                                          f"chi={t['chi_ppm']:+.3f} slices={t.get('n_slices')} at {[round(v, 1) for v in t['center_lps_mm']]}")
                for w, sp in fs:
                    miss_lines.append(f"    study {plan.index} false: {w} {sp}")
            print(f"  {protocol} study {plan.index}: {len(det.spots)} spots, {len(fs)} false, {secs[-1]:.2f} s", file=sys.stderr, flush=True)
        n = len(plans)
        lines.append(f"\n## {protocol}: {R.PROTOCOLS[protocol].description} ({n} studies)")
        rec = "  recall: all " + _rate(sum(ok for _, ok, _ in found), len(found))
        for name, lo, hi in SIZE_GROUPS:
            sel = [ok for d, ok, _ in found if lo <= d < hi]
            rec += f"; {name} " + _rate(sum(sel), len(sel))
        sel = [ok for d, ok, _ in found if d >= 2.0]
        rec += "; >=2 mm " + _rate(sum(sel), len(sel))
        lines.append(rec)
        lines.append(f"  false spots: {len(false)} ({len(false) / max(n, 1):.2f}/study)"
                     + (": " + ", ".join(f"{c} {w}" for w, c in Counter(w for w, _ in false).most_common()) if false else ""))
        lines.append(f"    on the first or last slice: {n_ends}")
        lines.append(f"  physiological calcifications found {n_phys} of {n_phys_vis} visible")
        lines.append("  rejected candidates: " + ", ".join(f"{c} {w}" for w, c in rejected.most_common()))
        lines.append(f"  detect_spots: {np.median(secs):.2f} s wall, {np.median(cpu):.2f} s CPU median per study (max {max(secs):.2f} s wall)")
        lines += miss_lines
    print(f"$ {command.strip()}")
    print("\n".join(lines))
    return 0


def _reason_key(r) -> str:
    """Reason of a rejected candidate without its numbers (a record or the old (centre, text) pair)."""
    import re
    text = getattr(r, "reason", None)
    text = text.value if hasattr(text, "value") else text
    if text is None:
        text = r[1]
    return re.sub(r"\b[0-9]+(\.[0-9]+)?\b", "#", str(text)).split("(")[0].strip()   # numbers, not the 0 of "B0"


if __name__ == "__main__":
    sys.exit(main())
