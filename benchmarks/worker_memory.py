"""Peak resident memory of one study's analysis, as a node's process worker runs it (issue 15).

    python benchmarks/worker_memory.py [--echoes 2 6] [--work DIR] [--no-malloc-setting]
    PYTHONPATH=/other/checkout python benchmarks/worker_memory.py ...   # another version's analysis

For each echo count: a physics-phantom study (``borderphase phantom --vendor Siemens --size full``:
512 x 512 x 60, magnitude + phase per echo, 16-bit) is made once under ``--work``, then analysed
by :func:`plugin.pipeline.analyze_paths` (with the DICOM results) in a fresh child process, which
reports its own ``VmHWM`` (peak RSS of its address space) at exit. The child first applies the
worker's malloc setting (:func:`plugin.service.memory.return_freed_memory`) unless
``--no-malloc-setting`` (or the code under test predates it). Prints one JSON line per study and a
Markdown table: pixel data, peak RSS, peak / pixel data (the budget is 3x), analysis wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
if sys.argv[3] == "1":
    try:
        from plugin.service.memory import return_freed_memory
        return_freed_memory()
    except ImportError:
        pass
from plugin.pipeline import analyze_paths
t0 = time.perf_counter()
doc = analyze_paths([sys.argv[1]], sys.argv[2])
wall = time.perf_counter() - t0
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"peak_rss_kib": int(hwm.split()[1]), "analysis_s": round(wall, 2),
                  "lesions": [len(a["lesions"]) for a in doc["analyses"]], "skipped": len(doc["skipped"])}))
"""


def pixel_bytes(study: Path) -> tuple[int, int]:
    from dicom_io.read.files import stored_pixel_bytes
    return stored_pixel_bytes([study])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--echoes", type=int, nargs="+", default=[2, 6])
    ap.add_argument("--work", default=None, help="keeps the phantom studies (default: a temp dir)")
    ap.add_argument("--no-malloc-setting", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bp-mem-"))
    rows = []
    for echoes in args.echoes:
        study = work / f"phantom_{echoes}echo"
        if not (study / "truth.json").exists():
            subprocess.run([sys.executable, "-m", "plugin.cli", "phantom", "--vendor", "Siemens", "--out", str(study),
                            "--echoes", str(echoes), "--size", "full", "--seed", "7"], check=True)
        n, pixels = pixel_bytes(study)
        out = work / f"out_{echoes}echo"
        run = subprocess.run([sys.executable, "-c", CHILD, str(study), str(out), "0" if args.no_malloc_setting else "1"],
                             capture_output=True, text=True, env=os.environ, cwd=work)   # not the repo: PYTHONPATH decides
        if run.returncode:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(run.stdout.strip().splitlines()[-1])
        row = {"echoes": echoes, "instances": n, "pixel_mib": round(pixels / 2**20, 1),
               "peak_rss_mib": round(r["peak_rss_kib"] / 1024, 1),
               "peak_over_pixels": round(r["peak_rss_kib"] * 1024 / pixels, 2), "analysis_s": r["analysis_s"],
               "lesions": r["lesions"], "malloc_setting": not args.no_malloc_setting}
        print(json.dumps(row))
        rows.append(row)
    print("| study | instances | pixel data | worker peak RSS | peak / pixels (budget 3x) | analysis s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['echoes']} echoes, 512x512x60 | {r['instances']} | {r['pixel_mib']} MiB | {r['peak_rss_mib']} MiB | "
              f"{r['peak_over_pixels']} | {r['analysis_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
