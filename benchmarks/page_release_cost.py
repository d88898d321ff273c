"""What handing pages back costs (issue 15): CPU seconds spent in :mod:`plugin.pagerelease`
(``release_zero_pages`` scans and madvises, ``trim_heap``) during one study's analysis, against
the whole analysis's CPU seconds, as a worker runs it (malloc setting and start-up imports first).

    python benchmarks/page_release_cost.py STUDY_DIR [--repeats 2]

Each call is timed with ``time.thread_time`` (the calling thread's user + system time, so the
kernel's work for the madvise counts); the bytes released are summed per call site.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
from plugin.service.memory import return_freed_memory
return_freed_memory()
from plugin.service.worker import preload_analysis_modules
preload_analysis_modules()
import plugin.pipeline as P
calls = {"release_zero_pages": [0, 0.0, 0], "trim_heap": [0, 0.0, 0]}
by_site = {}
release, trim = P.release_zero_pages, P.trim_heap
def timed_release(a):
    t = time.thread_time(); n = release(a); c = calls["release_zero_pages"]
    c[0] += 1; c[1] += time.thread_time() - t; c[2] += n
    f = sys._getframe(1)
    site = f"{f.f_code.co_name}:{f.f_lineno}"
    by_site[site] = round(by_site.get(site, 0) + n / 2**20, 1)
    return n
def timed_trim():
    t = time.thread_time(); ok = trim(); c = calls["trim_heap"]
    c[0] += 1; c[1] += time.thread_time() - t
    return ok
P.release_zero_pages, P.trim_heap = timed_release, timed_trim
t0 = time.process_time()
P.analyze_paths([sys.argv[1]], sys.argv[2])
total = time.process_time() - t0
print(json.dumps({"analysis_cpu_s": round(total, 2),
                  **{k: {"calls": v[0], "cpu_s": round(v[1], 4), "released_mib": round(v[2] / 2**20, 1)}
                     for k, v in calls.items()}, "released_mib_by_call_site": by_site}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bp-release-") as out:
            run = subprocess.run([sys.executable, "-c", CHILD, args.study, out], capture_output=True, text=True, cwd="/")
        if run.returncode:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        print(json.loads(run.stdout.strip().splitlines()[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
