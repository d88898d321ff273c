"""cProfile of one analysis's main thread as the worker runs it (modules preloaded, one warm-up run).

    python benchmarks/profile_analysis.py STUDY_DIR [--filter REGEX] [--top N]

Profiles ``plugin.pipeline.analyze_paths`` on the study's DICOM files with the main thread's CPU
clock (``time.thread_time``: the work of the QSM thread and of BLAS threads is not in it, their
waits are), sorted by cumulative time, restricted to functions whose file:line(name) matches
``--filter`` (default: plugin/ and dicom_io/).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from benchmarks.warm_children import study_paths  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--filter", default="plugin/|dicom_io/")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    from plugin.service.worker import preload_analysis_modules
    preload_analysis_modules()
    from plugin.pipeline import analyze_paths
    paths = study_paths(args.study)
    out = tempfile.mkdtemp(prefix="bp-profile-")
    try:
        analyze_paths(paths, out)                       # warm-up
        shutil.rmtree(out)
        out = tempfile.mkdtemp(prefix="bp-profile-")
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        analyze_paths(paths, out)
        prof.disable()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.filter, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
