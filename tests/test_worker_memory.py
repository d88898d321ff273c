"""The analysis worker's memory budget (issue 15): peak RSS <= 3 x the study's pixel data, on the
paper's protocol (6 echoes, 512 x 512 x 60, magnitude + phase = 720 instances, 360 MB of pixels).

The analysis runs in a child process exactly as a node's process worker runs it (the worker's
malloc setting and start-up imports, then :func:`plugin.pipeline.analyze_paths` with the DICOM results); the child
reports its own peak resident size at exit (``VmHWM`` of /proc/self/status: the high-water mark
of its own address space; ``getrusage(...).ru_maxrss`` would not do: Linux carries it across
exec, so a child forked from this large test process would report the parent's size).
Before the streaming echo combination and the slab-wise SMV / QSM steps it peaked at 1.33 GB
(3.7 x); see benchmarks/load.md.

The clinical 2-echo study (240 instances, 120 MiB of pixels) is held to the issue's 3 x too
(360 MiB): 349 MiB = 2.91 x since the kept volumes' all-zero pages are handed back to the kernel
and malloc's free pages trimmed between the steps (:mod:`plugin.pagerelease`; 394-400 MiB = 3.28-3.33 x
before, which fails here). It peaked at 606 MiB (5.05 x, a first study) before the slab-wise 2-echo
fit, the phase handed over to the analysis, the slab-wise QSM FFTs and the one-at-a-time results.
A worker process loads its modules and highdicom's tables of the standard when it starts
(``preload_analysis_modules``); highdicom's module -> attribute table held all 436 modules of the
standard (68 MiB resident: the study peaked at 471 MiB = 3.93 x) and now holds those of the IODs
the results use (9 MiB, :mod:`dicom_io.results.standard_tables`): 406-412 MiB = 3.39-3.44 x, 121
MiB of it resident before any pixel is read. What is left above that floor is the volumes the
steps hold at once (magnitude, local phase, QSM map and its spectrum, ~60 MiB each): four peaks of
~400 MiB (echo combination, background removal, detection, QSM map). Since then: scipy.stats
no longer imported by the dipole fit (it had put the floor back up to 163 MiB: 470 MiB = 3.92 x),
the echo combination's magnitude written into the first echo's phase, the local phase into the
combined phase, the QSM map into its spectrum: echo combination 349, background removal 337, QSM
387, detection 377 MiB (the peak then at the results, 397 MiB). Now the echo combination (347-349
MiB: its coarse-grid temporaries), detection and the QSM map beside the fits (343-346) are the peaks.
benchmarks/load.md "Worker memory, 2 echoes", "Worker memory floor", "Worker memory, in place" and
"Worker memory, zero pages"."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_io.read.files import stored_pixel_bytes
from plugin.cli import main as cli_main
from plugin.service.memory import with_malloc_hugepages

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc (VmHWM) for the peak RSS")]

REPO = Path(__file__).resolve().parents[1]
BUDGET_X_PIXELS = 3.0

# the child is started as `serve` starts itself (glibc's huge-page malloc tunable where it has one)
CHILD = """
import json, sys
from plugin.service.memory import return_freed_memory
return_freed_memory()
from plugin.service.worker import preload_analysis_modules
preload_analysis_modules()   # as the node's worker process does when it starts (plugin.service.queue)
from plugin.pipeline import analyze_paths
doc = analyze_paths([sys.argv[1]], sys.argv[2])
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({"peak_rss_kib": int(hwm.split()[1]),
                  "analyses": [{"lesions": len(a["lesions"]), "notes": a["notes"]} for a in doc["analyses"]],
                  "skipped": doc["skipped"], "result_files": len(doc.get("result_files", []))}))
"""


def pixel_bytes(study: Path) -> tuple[int, int]:
    """(instances, bytes of pixel data as stored) from the headers."""
    return stored_pixel_bytes([study])


#: the 2-echo study's enforced budget (x its pixel data): the issue's target
BUDGET_2_ECHOES_X_PIXELS = BUDGET_X_PIXELS


def _analysed_peak(tmp_path: Path, echoes: int) -> tuple[int, int, dict]:
    """(peak RSS bytes of the analysis child, stored pixel bytes, its report) for a full-size
    Siemens phantom study with ``echoes`` echoes, checked to have been analysed for real."""
    study = tmp_path / "study"
    assert cli_main(["phantom", "--vendor", "Siemens", "--out", str(study), "--echoes", str(echoes), "--size", "full",
                     "--seed", "7"]) == 0
    n, pixels = pixel_bytes(study)
    assert n == echoes * 2 * 60, f"expected {echoes} echoes x (magnitude + phase) x 60 slices, found {n} instances"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    env = with_malloc_hugepages(env) or env   # the node's workers run so ([queue] malloc_hugepages, its default)
    run = subprocess.run([sys.executable, "-c", CHILD, str(study), str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    # the analysis really ran on every echo and made its results (not a cheap early exit)
    assert not report["skipped"] and len(report["analyses"]) == 1, report
    analysis = report["analyses"][0]
    assert analysis["lesions"] > 0, analysis
    assert any(f"{echoes} of {echoes} echoes used" in note for note in analysis["notes"]), analysis["notes"]
    assert report["result_files"] > 0
    return report["peak_rss_kib"] * 1024, pixels, report


def _within(peak: int, pixels: int, budget_x: float) -> None:
    assert peak <= budget_x * pixels, (
        f"analysis worker peak RSS {peak / 2**20:.0f} MiB > {budget_x:g} x the study's pixel data "
        f"({pixels / 2**20:.0f} MiB -> budget {budget_x * pixels / 2**20:.0f} MiB)")


def test_six_echo_study_analysed_within_three_times_its_pixel_data(tmp_path):
    peak, pixels, _ = _analysed_peak(tmp_path, 6)
    _within(peak, pixels, BUDGET_X_PIXELS)


def test_two_echo_study_analysed_within_three_times_its_pixel_data(tmp_path):
    """512 x 512 x 60, 2 echoes (the clinical protocol of the load benchmark): 5.05 x before the
    slab-wise steps, 3.93 x with highdicom's full module table preloaded (main at bec4884) and
    again with scipy.stats imported by the dipole fit (main at 7fa37b4), 3.28-3.33 x on main at
    dd01f52 (fails here), 2.91 x with the zero pages released (module docstring)."""
    peak, pixels, _ = _analysed_peak(tmp_path, 2)
    _within(peak, pixels, BUDGET_2_ECHOES_X_PIXELS)
