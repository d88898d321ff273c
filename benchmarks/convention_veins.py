"""What detection makes of the phantom's medullary veins along B0 (issue 12: why the data's
convention was undecided on some gre2d_5mm studies): per truth through-plane vein, the detected
candidate on it (within 1 mm of its axis) and its reason: ``vein along B0`` (voted before),
``too small`` or a kept spot (vote as thin tubes along B0 when >= 15 mm tall, >= 8x taller than
wide), or nothing.

    PYTHONPATH=. nice -n 10 python3 benchmarks/convention_veins.py --protocol gre2d_5mm --studies 8 [--cache DIR]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.convention_benchmark import rendered  # noqa: E402
from plugin.method.dataconvention import DataConventionParams  # noqa: E402
from plugin.method.detect import brain_mask, detect_spots  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="gre2d_5mm")
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None)
    a = ap.parse_args()
    p = DataConventionParams()
    total: Counter = Counter()
    for plan in R.realistic_cohort(a.seed, protocol=a.protocol, n_studies=a.studies):
        conv = ("right-handed", "left-handed")[plan.index % 2]
        mag, _ph, aff, _te, _b0, _truth = rendered(plan, conv, a.cache, a.seed)
        vox = np.array([float(np.linalg.norm(aff[:3, i])) for i in range(3)])
        det = detect_spots(mag, tuple(vox), mask=brain_mask(mag, tuple(vox)))
        cands = [(c.center_index, c.n_slices, c.diameter_mm, c.reason.value) for c in det.rejected]
        cands += [(s.center_index, len(s.slice_indices), s.diameter_mm, "kept as a spot") for s in det.spots]
        inv = np.linalg.inv(aff)
        found: Counter = Counter()
        for v in plan.mimics.veins:
            if plan.mimics.vein_kinds[v.id] != "medullary vein through-plane":
                continue
            a0 = (np.r_[v.start_lps_mm, 1] @ inv.T)[:3]
            b0 = (np.r_[v.end_lps_mm, 1] @ inv.T)[:3]
            best = None
            for centre, n, d, why in cands:
                q = np.asarray(centre, float)
                seg = b0 - a0
                t = np.clip(np.dot(q - a0, seg) / np.dot(seg, seg), 0, 1)
                dist = float(np.linalg.norm((q - (a0 + t * seg)) * vox))
                if dist < 1.0 and (best is None or n > best[1]):
                    best = (why, n, d)
            if best is None:
                key = "not found"
            elif best[0] == "vein along B0":
                key = "vein along B0"
            else:
                length = best[1] * vox[0]
                tube = length >= p.thin_tube_min_length_mm and length >= p.thin_tube_min_aspect * best[2]
                key = f"{best[0]}, {'a thin tube (votes)' if tube else 'too short to vote'}"
            found[key] += 1
        total.update(found)
        print(f"study {plan.index} ({conv}): " + ", ".join(f"{k} {n}" for k, n in sorted(found.items())), flush=True)
    print(f"all {sum(total.values())} through-plane veins: " + ", ".join(f"{k} {n}" for k, n in sorted(total.items())))


if __name__ == "__main__":
    main()
