"""Speed and memory of the analysis of one 512 x 512 x 60 magnitude + phase pair (reading excluded).

    python benchmarks/analysis_speed.py            # renders one phantom study (paper cohort, study 0)
    python benchmarks/analysis_speed.py --repeat 5

The pair is rendered once by plugin.phantom.render (47-48 lesions + 3 veins, 0.45 x 0.45 x 2.5 mm) as
raw phase and as the scanner's filtered phase, saved to .npy, and each case is timed in a fresh
child process that loads the arrays (not timed) and runs ``plugin.pipeline.analyze_arrays``:
detection, background removal, pattern reading, interpretation. Reported: wall time (median of
``--repeat`` runs), CPU time, and peak memory: the child's peak RSS above its RSS after loading
the arrays, and tracemalloc's peak (numpy reports its buffers to tracemalloc).
Machine load is printed beside: the host is shared, so wall times vary with it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
sys.path.insert(0, {root!r})
from plugin.pipeline import AnalysisOptions, analyze_arrays
mag = np.load({mag!r}); ph = np.load({ph!r}); aff = np.load({aff!r})
import gc; gc.collect()
rss_now = int(open("/proc/self/statm").read().split()[1]) * 4096 // 1024
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.perf_counter(); c0 = time.process_time()
res = analyze_arrays(mag, ph, aff, convention="right-handed", options=AnalysisOptions(background={bg!r}))
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
peak = tracemalloc.get_traced_memory()[1]
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(wall_s=wall, cpu_s=cpu, tracemalloc_peak_mb=peak / 2**20, rss_peak_above_load_mb=(rss1 - rss_now) / 1024, rss_after_load_mb=rss_now / 1024,
                      rss_peak_mb=rss1 / 1024, n_lesions=len(res.lesions), notes=res.notes)))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from dataclasses import replace

    from plugin.phantom import render as phantom
    from plugin.phantom.cohort import paper_cohort

    plan = paper_cohort(0)[0]
    cases = []
    with tempfile.TemporaryDirectory(prefix="bp_speed_") as tmp:
        for label, acq in (("raw phase", phantom.Acquisition()), ("filtered phase", replace(phantom.Acquisition(), filtered=True))):
            images, _ = phantom.make_study(plan.lesions, plan.veins, grid=plan.grid, head=plan.head, acquisition=acq, seed=0)
            stem = Path(tmp) / label.replace(" ", "_")
            np.save(f"{stem}_mag.npy", images.magnitude[-1])
            np.save(f"{stem}_ph.npy", images.phase_rad[-1])
            np.save(f"{stem}_aff.npy", images.affine_lps)
            shape = images.magnitude[-1].shape
            del images
            for bg in (("auto", "homodyne") if label == "raw phase" else ("auto",)):
                runs = []
                for _ in range(args.repeat):
                    code = CHILD.format(root=str(ROOT), mag=f"{stem}_mag.npy", ph=f"{stem}_ph.npy", aff=f"{stem}_aff.npy", bg=bg)
                    load = os.getloadavg()[0]
                    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    r["load"] = load
                    runs.append(r)
                runs.sort(key=lambda r: r["wall_s"])
                med = runs[len(runs) // 2]
                cases.append((label, bg, shape, med, runs))
    print(f"borderphase analysis speed: one {shape[2]} x {shape[1]} x {shape[0]} pair, reading excluded, "
          f"{os.cpu_count()} cores, median of {args.repeat} runs")
    print(f"{'input':<16}{'background':<12}{'wall s':>8}{'(min-max)':>14}{'cpu s':>8}{'peak RSS above load MB':>24}"
          f"{'tracemalloc peak MB':>21}{'spots':>7}{'load avg':>10}")
    for label, bg, shape, med, runs in cases:
        print(f"{label:<16}{bg:<12}{med['wall_s']:8.2f}{'(' + format(runs[0]['wall_s'], '.2f') + '-' + format(runs[-1]['wall_s'], '.2f') + ')':>14}"
              f"{med['cpu_s']:8.2f}{med['rss_peak_above_load_mb']:24.0f}{med['tracemalloc_peak_mb']:21.0f}{med['n_lesions']:7d}"
              f"{med['load']:10.1f}")
    print("input pair: 2 x %.0f MB float32" % (np.prod(shape) * 4 / 2**20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
