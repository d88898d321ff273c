"""What writing the QSM series adds to building the results of one analysed pair (issue 11).

    PYTHONPATH=. python3 benchmarks/qsm_series_cost.py [--study DIR] [--repeat 5]

The study (default: a new ``borderphase phantom --vendor Siemens --echoes 2 --size full`` study,
512 x 512 x 60, the load benchmark's) is analysed once by the real pipeline (``analyze_pair`` on
the combined echoes, as ``analyze_paths`` does); then ``write_results`` builds and saves the
result objects without and with the QSM series, alternately, ``--repeat`` times each. Prints the
medians (wall and CPU seconds, files, MB) and the difference: the part of the node's
last-instance -> SR latency that the QSM series adds before the SR is sent (the SR is delivered
first, so the series' own transfer does not delay it).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]


def _study(path: Path | None, tmp: Path) -> Path:
    if path is not None:
        return path
    out = tmp / "phantom"
    subprocess.run([sys.executable, "-m", "plugin.cli", "phantom", "--vendor", "Siemens", "--out", str(out),
                    "--echoes", "2", "--size", "full", "--seed", "7"], cwd=REPO, check=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, default=None, help="a magnitude+phase study directory")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    from dicom_io.read import series as dseries
    from dicom_io.results import write_results
    from plugin.pairing import pair_series
    from plugin.pipeline import AnalysisOptions, _combine_echoes, analyze_pair, report_input

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        study = _study(args.study, tmp)
        scan = dseries.scan(sorted(p for p in study.rglob("*") if p.is_file() and p.suffix != ".json"))
        [pair], _ = pair_series(scan.series)
        mag, ph = dseries.load_volume(pair.magnitude), dseries.load_volume(pair.phase)
        options = AnalysisOptions()
        if pair.earlier:
            mag, ph, _, raw, mag_echoes = _combine_echoes(dseries, mag, ph, pair.earlier)
            if raw:   # as analyze_paths: raw phase found by the echo fit -> SMV background removal
                options = replace(options, background="smv")
        conv = {s.series_instance_uid: s for s in scan.series}[ph.series_instance_uid].phase_convention
        analysis, method = analyze_pair(mag, ph, convention=conv, convention_source="benchmark", options=options,
                                        magnitude_echoes=mag_echoes if pair.earlier else None)
        report = report_input(analysis, method)
        assert report.qsm_chi_ppm is not None, "the analysis made no QSM map"
        base = ("sr", "seg", "summary", "kos")
        runs: dict[str, list[tuple[float, float, int, float]]] = {"without": [], "with": []}
        for i in range(args.repeat):
            for name in (("without", "with") if i % 2 == 0 else ("with", "without")):
                out = tmp / f"out_{name}_{i}"
                w0, c0 = time.perf_counter(), time.process_time()
                written = write_results(report, mag, ph, out, include=base + (("qsm",) if name == "with" else ()))
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                mb = sum(p.stat().st_size for p in written.paths) / 1e6
                runs[name].append((wall, cpu, len(written.paths), mb))
        print(f"study {study}: {mag.shape[2]} x {mag.shape[1]} x {mag.shape[0]}, {len(report.spots)} spots, "
              f"{args.repeat} runs each (alternating)")
        print("| write_results | wall s (median) | CPU s (median) | files | MB |")
        print("|---|---|---|---|---|")
        med = {}
        for name, rows in runs.items():
            med[name] = [statistics.median(r[k] for r in rows) for k in range(4)]
            print(f"| {name} QSM series | {med[name][0]:.2f} | {med[name][1]:.2f} | {med[name][2]:.0f} | {med[name][3]:.1f} |")
        d = [med["with"][k] - med["without"][k] for k in range(4)]
        print(f"| added by the QSM series | {d[0]:+.2f} | {d[1]:+.2f} | {d[2]:+.0f} | {d[3]:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
