"""Page faults, system time and wall time of one study's analysis (with its DICOM results), as the
node's worker runs it, with and without glibc's huge-page malloc tunable (issue 15).

    python benchmarks/malloc_pages.py STUDY_DIR [--runs 3] [--rounds 2]

STUDY_DIR: a magnitude + phase study, e.g. the phantom ``load_benchmark.py`` makes under its work dir
(``DIR/phantom``). Per round, two fresh children, in turn first: one started as ``serve`` starts its
workers since ab86a6f (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, :mod:`plugin.service.memory`), one
without it. Each applies the worker's malloc setting (the fixed mmap threshold), its start-up imports and
its single BLAS thread, runs the analysis once to warm up, then ``--runs`` times, and reports per run
the minor page faults, user and system CPU seconds and wall seconds (``getrusage``). Needs glibc >= 2.35.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, shutil, sys, tempfile, time
from plugin.service.memory import return_freed_memory
return_freed_memory()
from plugin.service.worker import preload_analysis_modules
preload_analysis_modules()
from plugin.service.cputhreads import limit_blas_threads
limit_blas_threads(1)
from plugin.pipeline import analyze_paths
rows = []
for i in range(int(sys.argv[2]) + 1):
    out = tempfile.mkdtemp(prefix="bp-pages-")
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    analyze_paths([sys.argv[1]], out)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    shutil.rmtree(out)
    if i:   # the first run warms up
        rows.append(dict(faults=r1.ru_minflt - r0.ru_minflt, user_s=round(r1.ru_utime - r0.ru_utime, 2),
                         sys_s=round(r1.ru_stime - r0.ru_stime, 2), wall_s=round(t1 - t0, 2)))
print(json.dumps(rows))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path[:0] = [str(REPO)]
    from plugin.service.memory import with_malloc_hugepages
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    huge = with_malloc_hugepages(base)
    if huge is None:
        print("glibc.malloc.hugetlb needs glibc >= 2.35: nothing to compare here", file=sys.stderr)
        return 1
    base["PYTHONPATH"] = huge["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    modes = [("4 KiB pages", base), ("glibc.malloc.hugetlb=1", huge)]
    results: dict[str, list] = {name: [] for name, _ in modes}
    for r in range(args.rounds):
        for name, env in (modes if r % 2 == 0 else modes[::-1]):
            run = subprocess.run([sys.executable, "-c", CHILD, args.study, str(args.runs)], env=env,
                                 capture_output=True, text=True, check=True)
            results[name] += json.loads(run.stdout.strip().splitlines()[-1])
    print(f"command: python benchmarks/malloc_pages.py {args.study} --runs {args.runs} --rounds {args.rounds}")
    print("| malloc | runs | page faults (min-max) | system s | user s | wall s (min / median) |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        def span(key):
            v = sorted(x[key] for x in rows)
            return v, v[len(v) // 2]
        f, _ = span("faults"); s, sm = span("sys_s"); u, um = span("user_s"); w, wm = span("wall_s")
        print(f"| {name} | {len(rows)} | {f[0]:,}-{f[-1]:,} | {sm:.2f} ({s[0]:.2f}-{s[-1]:.2f}) | {um:.2f} | {w[0]:.2f} / {wm:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
