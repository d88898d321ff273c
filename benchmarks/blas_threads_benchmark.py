"""CPU and wall seconds of N concurrent analyses of one study, as N node workers run them, with the
BLAS pools as loaded or limited (issue 15, ``[queue] blas_threads``, plugin/service/cputhreads.py):

    python benchmarks/blas_threads_benchmark.py STUDY_DIR [--concurrent 2] [--rounds 2]
                                                [--modes default,blas1,pin,pin_blas1]

Per round and mode, ``--concurrent`` processes start together; each preloads the analysis modules
(as a forked worker does), then analyses STUDY_DIR with :func:`plugin.pipeline.analyze_paths` and
prints its own CPU seconds (user + system, all threads), wall seconds and involuntary context
switches. Modes: ``default`` (numpy's and scipy's OpenBLAS pools as loaded: one thread per core),
``blas1`` (:func:`plugin.service.cputhreads.limit_blas_threads` ``(1)``, the worker's default),
``pin`` (process i bound to core i), ``pin_blas1`` (both). Rounds alternate the order of the
modes. CPU seconds carry across a loaded machine better than wall seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, os, resource, sys, tempfile, time
mode, idx, study = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from plugin.service.worker import preload_analysis_modules
preload_analysis_modules()
if "blas1" in mode:
    from plugin.service.cputhreads import limit_blas_threads
    limit_blas_threads(1)
if "pin" in mode:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[idx % len(os.sched_getaffinity(0))]})
from plugin.pipeline import analyze_paths
r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
with tempfile.TemporaryDirectory() as out:
    doc = analyze_paths([study], out)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu_s": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 2),
                  "wall_s": round(time.perf_counter() - w0, 2), "nivcsw": r1.ru_nivcsw - r0.ru_nivcsw,
                  "lesions": sum(len(a["lesions"]) for a in doc["analyses"])}))
'''

MODES = ("default", "blas1", "pin", "pin_blas1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="folder with the study's DICOM files (e.g. load_benchmark.py's DIR/phantom)")
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="default,blas1,pin,pin_blas1")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {bad}; choose from {list(MODES)}")
    if not Path(args.study).is_dir():
        ap.error(f"{args.study}: not a folder")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for r in range(args.rounds):
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            load = os.getloadavg()[0]
            procs = [subprocess.Popen([sys.executable, "-c", CHILD, mode, str(i), args.study], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE) for i in range(args.concurrent)]
            outs = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1]) for p in procs]
            print(json.dumps({"round": r, "mode": mode, "concurrent": args.concurrent, "load_avg": round(load, 1),
                              "cpu_s": [o["cpu_s"] for o in outs], "wall_s": [o["wall_s"] for o in outs],
                              "nivcsw": [o["nivcsw"] for o in outs], "lesions": [o["lesions"] for o in outs]}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
