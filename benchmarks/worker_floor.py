"""What an analysis worker holds before any pixel is read (issue 15): resident size per import.

    python benchmarks/worker_floor.py                          # this checkout
    PYTHONPATH=/other/checkout python benchmarks/worker_floor.py   # another version

In a fresh child process (the worker's malloc setting applied first, as
``plugin.service.queue`` does), imports the libraries one at a time in dependency order, then
highdicom's tables of the standard (``dicom_io.results.write.load_standard_tables``), then the
rest of ``plugin.service.worker.preload_analysis_modules``, and prints the growth of VmRSS
(/proc/self/status) at each step, and the total. Each library's row holds what it imports and
earlier rows have not (numpy before scipy, pydicom before highdicom...). SimpleITK is not imported
by the worker: a last row says whether it ended up in ``sys.modules``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

STEPS = ["numpy", "scipy.special", "scipy.ndimage", "scipy.fft", "pydicom", "pydantic", "pynetdicom", "highdicom",
         "TABLES", "dicom_io.read.series", "dicom_io.convention", "plugin.method.echoes", "plugin.pipeline",
         "plugin.service.worker", "PRELOAD"]

CHILD = """
import importlib, json, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
try:
    from plugin.service.memory import return_freed_memory
    return_freed_memory()
except ImportError:
    pass
rows, prev = [["python + malloc setting", rss()]], rss()
for step in json.loads(sys.argv[1]):
    if step == "TABLES":
        from dicom_io.results.write import load_standard_tables
        load_standard_tables()
        step = "highdicom's standard tables (load_standard_tables)"
    elif step == "PRELOAD":
        from plugin.service.worker import preload_analysis_modules
        preload_analysis_modules()
        step = "rest of preload_analysis_modules"
    else:
        importlib.import_module(step)
    now = rss()
    rows.append([step, now - prev])
    prev = now
print(json.dumps({"rows": rows, "total_mib": prev, "simpleitk_imported": "SimpleITK" in sys.modules,
                  "modules": len(sys.modules)}))
"""


def main() -> int:
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(STEPS)], capture_output=True, text=True,
                         env=os.environ, cwd="/")
    if run.returncode:
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    r = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(r))
    print("| step | + resident MiB |")
    print("|---|---|")
    for name, mib in r["rows"]:
        print(f"| {name} | {mib:.1f} |")
    print(f"| **total before any pixel** | **{r['total_mib']:.1f}** |")
    print(f"SimpleITK imported: {r['simpleitk_imported']}; modules: {r['modules']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
