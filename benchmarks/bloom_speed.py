"""CPU of the bloom model's source sizes (plugin.method.bloom.source_diameter), per protocol geometry.

    python benchmarks/bloom_speed.py [--save FILE | --check FILE] [--repeats 3]

60 spots per geometry (seeded: total susceptibility 0.5-30 ppm mm^3 of either sign, detected
diameter 1-6 mm, source 0-0.5 slice off its slice's centre), the geometry cache emptied before each
pass; prints the least thread CPU seconds of ``--repeats`` passes. ``--save FILE`` pickles the
results; ``--check FILE`` (e.g. run in another tree with its ``PYTHONPATH``) says whether this
tree's results are equal to the saved ones.
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

GEOMETRIES = {   # voxel (slice, row, column) mm, magnitude echoes (TE ms, weight), B0 T
    "swi3d 0.45x0.45x2.5 mm": ((2.5, 0.45, 0.45), ((25.0, 1.0),), 3.0),
    "gre2d 0.9x0.9x5 mm": ((5.0, 0.9, 0.9), ((20.0, 1.0),), 1.5),
    "gre3d 1 mm, 5 echoes": ((1.0, 1.0, 1.0), ((5.0, .1), (10.0, .2), (15.0, .3), (20.0, .2), (25.0, .2)), 3.0),
    "2-echo phantom 0.45x0.45x2.5 mm": ((2.5, 0.45, 0.45), ((12.0, 0.3), (25.0, 0.7)), 3.0),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--save")
    ap.add_argument("--check")
    args = ap.parse_args(argv)
    from plugin.method import bloom
    rng = np.random.default_rng(0)
    spots = [(float(rng.choice([-1, 1]) * rng.uniform(0.5, 30)), float(rng.uniform(1.0, 6.0)), float(rng.uniform(-0.5, 0.5)))
             for _ in range(60)]
    results = {}
    for name, (vox, echoes, b0) in GEOMETRIES.items():
        best = np.inf
        for _ in range(max(args.repeats, 1)):
            bloom._GEOMETRY.clear()
            t = time.thread_time()
            out = [bloom.source_diameter(s, d, vox, (1.0, 0.0, 0.0), echoes, b0, slice_offset=z) for s, d, z in spots]
            best = min(best, time.thread_time() - t)
        results[name] = out
        print(f"{name}: {best:.3f} s CPU for {len(spots)} spots (least of {args.repeats})")
    if args.save:
        with open(args.save, "wb") as fh:
            pickle.dump(results, fh)
    if args.check:
        with open(args.check, "rb") as fh:
            saved = pickle.load(fh)
        same = {k: saved.get(k) == v for k, v in results.items()}
        print("equal to", args.check, ":", same)
        return 0 if all(same.values()) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
