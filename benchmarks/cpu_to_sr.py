"""CPU seconds of one analysis up to its SR (issue 15): the pre-SR path, measured as the node's
worker runs it (modules and highdicom's tables preloaded first, as a forked worker does).

    python benchmarks/cpu_to_sr.py STUDY_DIR [--repeats 2]

STUDY_DIR: a magnitude + phase study, e.g. the phantom ``load_benchmark.py`` makes in its work
dir (``DIR/phantom``). Per repeat: CPU seconds of this process from the start of
``plugin.pipeline.analyze_paths`` to the first SR file written (``on_result_file``), wall
seconds to it, and CPU seconds of the whole analysis. CPU seconds carry across a loaded
machine better than wall seconds; compare trees by running their copies alternately.
``main_thread_cpu_to_sr_s``: CPU seconds of the main thread alone to the SR: the steps the
analysis does not overlap (threads doing the rest), so on an idle 2-core machine the wall time
to the SR is about this plus the waits for its threads (a proxy for the idle wall time when the
machine is loaded).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from benchmarks.warm_children import study_paths  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="folder with the study's DICOM files")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    from plugin.service.worker import preload_analysis_modules
    preload_analysis_modules()
    from plugin.pipeline import analyze_paths
    paths = study_paths(args.study)
    rows = []
    for _ in range(args.repeats):
        out = Path(tempfile.mkdtemp(prefix="bp-cpu-to-sr-"))
        first: dict = {}
        c0, w0, t0 = time.process_time(), time.perf_counter(), time.thread_time()

        def on_result_file(p: Path) -> None:   # called on the main thread
            if not first and p.parent.name == "sr":
                first.update(cpu=time.process_time() - c0, wall=time.perf_counter() - w0, main=time.thread_time() - t0)

        analyze_paths(paths, str(out), on_result_file=on_result_file)
        rows.append({"cpu_to_sr_s": round(first.get("cpu", float("nan")), 2),
                     "main_thread_cpu_to_sr_s": round(first.get("main", float("nan")), 2),
                     "wall_to_sr_s": round(first.get("wall", float("nan")), 2),
                     "cpu_total_s": round(time.process_time() - c0, 2)})
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
