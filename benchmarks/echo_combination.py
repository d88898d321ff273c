"""Multi-echo combination (plugin.method.echoes) on the paper's six-echo SWI: speed and effect.

    python benchmarks/echo_combination.py                 # one 512 x 512 x 60 six-echo study (seed 0)
    python benchmarks/echo_combination.py --repeats 3

Renders one realistic swi3d study with six echoes (4.2-25 ms, scanner-filtered phase;
``plugin.phantom.realistic``), then times ``combine_echoes`` and ``analyze_arrays`` on the combined
arrays (wall and CPU seconds; reading excluded), and scores the combined reading against the
single 25 ms echo's (detected lesions, right calls, indeterminate, false spots; the realistic
benchmark's matching). Wall times on a shared host are provisional: quote the load beside them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.realistic_benchmark import score_study  # noqa: E402
from plugin.method.echoes import combine_echoes  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402
from plugin.pipeline import analyze_arrays  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--echoes", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    plan = R.realistic_cohort(args.seed, protocol="swi3d", n_studies=1)[0]
    acq = R.PROTOCOLS["swi3d"].acquisition(echoes=args.echoes)
    images, truth = R.make_study(plan, acquisition=acq, convention="right-handed", seed=args.seed * 1000)
    print(f"swi3d {plan.grid.shape}, echoes {images.echo_times_ms} ms, {len(truth['lesions'])} lesions")
    print("| run | combine wall s | combine CPU s | analysis wall s | analysis CPU s | load |")
    print("|---|---|---|---|---|---|")
    for k in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        combo = combine_echoes(images.magnitude, images.phase_rad, images.echo_times_ms, plan.grid.voxel_mm)
        t1, c1 = time.perf_counter(), time.process_time()
        res = analyze_arrays(combo.magnitude, combo.phase_rad, images.affine_lps, convention="right-handed")
        t2, c2 = time.perf_counter(), time.process_time()
        print(f"| {k + 1} | {t1 - t0:.2f} | {c1 - c0:.2f} | {t2 - t1:.2f} | {c2 - c1:.2f} | {os.getloadavg()[0]:.1f} |")
    print(combo.note)
    single = analyze_arrays(images.magnitude[-1], images.phase_rad[-1], images.affine_lps, convention="right-handed")
    print("\n| reading | detected | right | indeterminate | wrong | false spots |")
    print("|---|---|---|---|---|---|")
    for name, r in ((f"{len(combo.echoes_used)} echoes combined", res), (f"TE {images.echo_times_ms[-1]:g} ms only", single)):
        sc = score_study("swi3d", "GE", plan, truth, r)
        det = [x for x in sc.records if x.detected]
        right = sum(x.classification == x.truth_class for x in det)
        ind = sum(x.classification == "indeterminate" for x in det)
        print(f"| {name} | {len(det)}/{len(sc.records)} | {right} | {ind} | {len(det) - right - ind} | {len(sc.false_spots)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
