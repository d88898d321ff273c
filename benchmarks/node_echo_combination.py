"""CPU and wall seconds of the node's echo combination alone (issue 15): reading every echo and
the weighted multi-echo fit, as :func:`plugin.pipeline.analyze_paths` does it for one pair
(``_combine_echoes`` with the worker's default memory budget), the least of several runs.

    python benchmarks/node_echo_combination.py STUDY_DIR [--repeats 5]
    PYTHONPATH=/other/checkout python benchmarks/node_echo_combination.py STUDY_DIR   # another version

Prints one JSON line: per run the process CPU seconds and wall seconds (magnitude of the chosen
echo read, other echoes' magnitudes read, phases read as the fit needs them, the fit), their
minimum and median, the path taken (``load_all``: every phase read first; ``None``: a version
without the choice), and a SHA-1 of the combined magnitude and phase (two versions must agree).
Run two checkouts alternately on a loaded machine and compare the minima.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from dicom_io.read import series as dseries
    import plugin.pipeline as pipeline
    from plugin.pairing import pair_series
    from plugin.service.worker import preload_analysis_modules
    preload_analysis_modules()
    scan = dseries.scan([args.study])
    pairs, _ = pair_series(scan.series)
    pair = next(p for p in pairs if p.earlier)
    budget = pipeline.AnalysisOptions().memory_budget_x_pixels * pipeline._stored_bytes(pair)
    takes_budget = "budget_bytes" in inspect.signature(pipeline._combine_echoes).parameters
    chose = []
    if takes_budget:
        real = pipeline.all_phases_fit
        pipeline.all_phases_fit = lambda *a: chose.append(real(*a)) or chose[-1]
    runs, digest = [], None
    for _ in range(args.repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        mag = dseries.load_volume(pair.magnitude)
        kw = {"budget_bytes": budget} if takes_budget else {}
        mag, ph, note, _raw, _me = pipeline._combine_echoes(dseries, mag, pipeline._deferred_phase(dseries, pair.phase),
                                                            pair.earlier, **kw)
        runs.append((time.process_time() - c0, time.perf_counter() - w0))
        h = hashlib.sha1(mag.data.tobytes()); h.update(ph.data.tobytes()); h.update(note.encode())
        digest = h.hexdigest()
        del mag, ph
    cpu, wall = [r[0] for r in runs], [r[1] for r in runs]
    print(json.dumps({"cpu_s": [round(c, 3) for c in cpu], "wall_s": [round(w, 3) for w in wall],
                      "cpu_min_s": round(min(cpu), 3), "cpu_median_s": round(statistics.median(cpu), 3),
                      "wall_min_s": round(min(wall), 3), "wall_median_s": round(statistics.median(wall), 3),
                      "load_all": (chose[-1] if chose else None), "echoes": 1 + len(pair.earlier), "sha1": digest}))


if __name__ == "__main__":
    main()
