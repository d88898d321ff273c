"""Peak resident memory of one study's analysis, as a node's process worker runs it (issue 15).

    python benchmarks/worker_memory.py [--echoes 2 6] [--work DIR] [--no-malloc-setting] [--no-preload]
    PYTHONPATH=/other/checkout python benchmarks/worker_memory.py ...   # another version's analysis
    python benchmarks/worker_memory.py --echoes 2 --stages              # + peak RSS per stage
    python benchmarks/worker_memory.py --echoes 2 --arrays              # + the arrays held at each stage's peak
    python benchmarks/worker_memory.py --keep-freed-memory              # the worker as [queue] keep_freed_memory = true sets it

For each echo count: a physics-phantom study (``borderphase phantom --vendor Siemens --size full``:
512 x 512 x 60, magnitude + phase per echo, 16-bit) is made once under ``--work``, then analysed
by :func:`plugin.pipeline.analyze_paths` (with the DICOM results) in a fresh child process, which
reports its own ``VmHWM`` (peak RSS of its address space) at exit. The child first applies the
worker's start-up imports (``preload_analysis_modules``, unless ``--no-preload``) and its malloc setting (:func:`plugin.service.memory.return_freed_memory`) unless
``--no-malloc-setting`` (or the code under test predates it), and is started with glibc's huge-page
malloc tunable as ``serve`` starts itself (``[queue] malloc_hugepages``) unless ``--no-malloc-setting``. Prints one JSON line per study and a
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
import json, sys, threading, time
if sys.argv[3] == "1":
    try:
        from plugin.service.memory import return_freed_memory
        return_freed_memory()
    except ImportError:
        pass
elif sys.argv[3] == "keep":   # [queue] keep_freed_memory = true
    from plugin.service.memory import keep_freed_memory
    keep_freed_memory()
STAGES = json.loads(sys.argv[5])
stage_peak, done = {}, threading.Event()

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

def sample(main=threading.main_thread().ident):
    while not done.is_set():   # the innermost named stage the main thread is in, and the RSS now
        frame, stage = sys._current_frames().get(main), "other"
        while frame is not None:
            if frame.f_code.co_name in STAGES:
                stage = STAGES[frame.f_code.co_name]
                break
            frame = frame.f_back
        stage_peak[stage] = max(stage_peak.get(stage, 0.0), rss_mib())
        time.sleep(0.002)

if sys.argv[6] == "1":
    try:   # the worker process's start-up imports (plugin.service.queue), where the version has them
        from plugin.service.worker import preload_analysis_modules
        preload_analysis_modules()
    except ImportError:
        pass
ARRAYS = sys.argv[7] == "1"
arrays = {}

def stage_now(main=threading.main_thread().ident):
    frame = sys._current_frames().get(main)
    while frame is not None:
        if frame.f_code.co_name in STAGES:
            return STAGES[frame.f_code.co_name]
        frame = frame.f_back
    return "other"

def snapshot_peaks():   # per stage, tracemalloc's snapshot when its traced size is largest (numpy arrays are traced)
    import tracemalloc
    while not done.is_set():
        now, stage = tracemalloc.get_traced_memory()[0], stage_now()
        if now > arrays.get(stage, (0, None))[0] + 4e6:
            arrays[stage] = (now, tracemalloc.take_snapshot())
        time.sleep(0.005)

if ARRAYS:
    import tracemalloc
    tracemalloc.start(16)
    threading.Thread(target=snapshot_peaks, daemon=True).start()
if sys.argv[4] == "1":
    threading.Thread(target=sample, daemon=True).start()
from plugin.pipeline import analyze_paths
t0 = time.perf_counter()
doc = analyze_paths([sys.argv[1]], sys.argv[2])
wall = time.perf_counter() - t0
done.set()
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
def where(tb):   # the innermost frames of this repository's code that allocated it
    own = [f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in tb
           if "site-packages" not in f.filename and "/lib/python3" not in f.filename and "<" not in f.filename]
    return " < ".join(own[::-1][:3])
held = {stage: {"traced_mib": round(now / 2**20), "arrays": [[round(st.size / 2**20, 1), where(st.traceback)]
                for st in snap.statistics("traceback") if st.size >= 2**20][:10]}
        for stage, (now, snap) in arrays.items()}
print(json.dumps({"peak_rss_kib": int(hwm.split()[1]), "analysis_s": round(wall, 2), "arrays": held,
                  "lesions": [len(a["lesions"]) for a in doc["analyses"]], "skipped": len(doc["skipped"]),
                  "stage_peak_mib": {k: round(v) for k, v in stage_peak.items()}}))
"""
#: function name -> stage, for --stages (innermost wins; old and new names of the same step)
STAGES = {"load_volume": "reading", "combine_echo_volumes": "echo combination", "brain_mask": "brain mask",
          "remove_background": "background removal", "detect_spots": "detection", "_qsm_map": "QSM map",
          "build_sr": "SR", "build_seg": "SEG", "build_summary": "summary images", "iter_summary": "summary images",
          "build_kos": "KOS", "build_qsm": "QSM series", "_qsm_slices": "QSM series",
          # the rest of the main thread: the spots read and fitted while the QSM map is made on a
          # thread, and the results' own steps outside the builders (the SEG's label check...)
          "analyze_arrays": "spot readings + QSM map (thread)", "write_results": "results (between objects)"}


def pixel_bytes(study: Path) -> tuple[int, int]:
    from dicom_io.read.files import stored_pixel_bytes
    return stored_pixel_bytes([study])


def child_env(args) -> dict:
    """The analysis child's environment: as ``serve`` starts itself (glibc's huge-page malloc tunable,
    ``[queue] malloc_hugepages``), unless ``--no-malloc-setting`` or the code under test predates it."""
    if args.no_malloc_setting:
        return dict(os.environ)
    try:
        from plugin.service.memory import with_malloc_hugepages
    except ImportError:
        return dict(os.environ)
    return with_malloc_hugepages(os.environ) or dict(os.environ)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--echoes", type=int, nargs="+", default=[2, 6])
    ap.add_argument("--work", default=None, help="keeps the phantom studies (default: a temp dir)")
    ap.add_argument("--no-malloc-setting", action="store_true")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="the worker's [queue] keep_freed_memory = true setting instead of its default")
    ap.add_argument("--no-preload", action="store_true",
                    help="skip the worker's start-up imports (highdicom's tables then load inside the study's peak)")
    ap.add_argument("--arrays", action="store_true",
                    help="also what is allocated (numpy arrays included, tracemalloc) at each stage's largest traced "
                         "size, by the line that allocated it (tracemalloc's own memory inflates the RSS figures)")
    ap.add_argument("--stages", action="store_true",
                    help="also the peak RSS per stage (a thread samples the RSS and the main thread's stack every 2 ms)")
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
        run = subprocess.run([sys.executable, "-c", CHILD, str(study), str(out), "0" if args.no_malloc_setting else "keep" if args.keep_freed_memory else "1",
                              "1" if args.stages else "0", json.dumps(STAGES), "0" if args.no_preload else "1",
                              "1" if args.arrays else "0"],
                             capture_output=True, text=True, env=child_env(args), cwd=work)   # not the repo: PYTHONPATH decides
        if run.returncode:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(run.stdout.strip().splitlines()[-1])
        row = {"echoes": echoes, "instances": n, "pixel_mib": round(pixels / 2**20, 1),
               "peak_rss_mib": round(r["peak_rss_kib"] / 1024, 1),
               "peak_over_pixels": round(r["peak_rss_kib"] * 1024 / pixels, 2), "analysis_s": r["analysis_s"],
               "lesions": r["lesions"], "malloc_setting": not args.no_malloc_setting,
               "keep_freed_memory": args.keep_freed_memory}
        if args.stages:
            row["stage_peak_mib"] = r["stage_peak_mib"]
        if args.arrays:
            row["arrays_at_stage_peak"] = r["arrays"]
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
