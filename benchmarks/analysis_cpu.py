"""CPU of the analysis on a loaded host: the least of several warm runs in one process, two checkouts alternating.

    python benchmarks/analysis_cpu.py --baseline /tmp/old --cache /tmp/six_cache
    python benchmarks/analysis_cpu.py --baseline /tmp/old --cache /tmp/six_cache --with-qsm --runs 3

On a shared host the wall time and even one run's CPU time swing by 50 % with the load; the least
CPU time of ``--runs`` warm calls in one process is what the code costs, and alternating fresh
children of this checkout and ``--baseline`` (another checkout: ``git archive <commit> | tar -x -C
DIR``) gives both the same load. Per child: the six-echo swi3d pair of
``benchmarks/analysis_speed.py --six-echo`` (``--cache``: the folder it rendered it to) combined
once (``combine_echoes``), then ``--runs`` times detection alone (``detect_spots`` with the brain
mask) and ``analyze_arrays`` as the pipeline runs it (``--with-qsm``: with TE, B0 and the echo
weights, so with the QSM map, chi and source sizes). Reported: the least CPU seconds of each.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from benchmarks.warm_children import add_checkout_args, six_echo_npz  # noqa: E402

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from plugin.method.detect import brain_mask, detect_spots
from plugin.method.echoes import combine_echoes
from plugin.pipeline import analyze_arrays
d = np.load({npz!r})
aff = d["aff"]
voxel = tuple(float(np.linalg.norm(aff[:3, i])) for i in range(3))
combo = combine_echoes(list(d["mag"]), list(d["ph"]), [float(t) for t in d["te"]], voxel)
m, p = combo.magnitude, combo.phase_rad
full = dict(echo_time_ms=combo.reference_te_ms, field_strength_t=3.0,
            magnitude_echoes=tuple(zip(combo.echo_times_ms, getattr(combo, "darkness_weights", combo.magnitude_weights)))) if {with_qsm!r} else {{}}
mask = brain_mask(m, voxel)
det, ana = [], []
for _ in range({runs!r}):
    c = time.process_time(); detect_spots(m, voxel, mask=mask); det.append(time.process_time() - c)
    c = time.process_time(); n = len(analyze_arrays(m, p, aff, convention="right-handed", **full).lesions)
    ana.append(time.process_time() - c)
print(json.dumps(dict(detection=min(det), analysis=min(ana), load=os.getloadavg()[0], n=n)))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkout_args(ap, runs=5, runs_help="warm calls per child (the least CPU time is kept)")
    args = ap.parse_args(argv)
    npz = six_echo_npz(ap, args.cache)
    roots = [("this checkout", ROOT)] + ([("baseline " + args.baseline, Path(args.baseline).resolve())] if args.baseline else [])
    print("command: python benchmarks/analysis_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    for i in range(args.rounds):
        for label, root in (roots if i % 2 == 0 else roots[::-1]):
            code = CHILD.format(root=str(root), npz=str(npz), runs=args.runs, with_qsm=args.with_qsm)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, PYTHONPATH=str(root)))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{label}: least CPU of {args.runs} warm runs: detection {r['detection']:.2f} s, analyze_arrays"
                  f"{' with QSM' if args.with_qsm else ''} {r['analysis']:.2f} s ({r['n']} spots; load {r['load']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
