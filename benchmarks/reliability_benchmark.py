"""Every reliability trial of issue 14, run in one go (what ``benchmarks/reliability.md`` reports).

    nice -n 10 python benchmarks/reliability_benchmark.py [--quick]

Runs, one after another, each in its own process (their peaks and failures stay apart):

1. ``benchmarks/reliability_fuzz.py``: >= 3,000 mutated files and >= 10 mixed folders through
   ``inspect --json`` / ``analyze`` (tracebacks, non-JSON outputs, peak RSS, good studies analysed);
2. ``benchmarks/reliability_node.py``: >= 20 kill -9 trials under 2 concurrent dcmtk senders
   (acknowledged vs lost, duplicate deliveries) and 50 idle connections against a real sender;
3. ``benchmarks/reliability_ops.py``: a full disk (0xA700 refusals, recovery without a restart) and
   a 500-study retention soak under a free-space watermark.

Prints each script's own tables as they come, then one summary line per script with its exit
code (each exits non-zero when its promise was broken) and wall time. ``--quick`` runs small
versions (a look, not the figures).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FULL = {
    "reliability_fuzz.py": [],
    "reliability_node.py": ["--trials", "20", "--idle", "50"],
    "reliability_ops.py": ["--soak-studies", "500", "--disk-studies", "12"],
}
QUICK = {
    "reliability_fuzz.py": ["--scale", "0.05", "--mixed", "2"],
    "reliability_node.py": ["--trials", "2", "--idle", "50", "--idle-repeats", "1"],
    "reliability_ops.py": ["--soak-studies", "30", "--disk-studies", "4"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small versions of every trial")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    summary = []
    t_all = time.perf_counter()
    for script, extra in (QUICK if args.quick else FULL).items():
        cmd = [sys.executable, str(REPO / "benchmarks" / script), *extra]
        print(f"\n$ {' '.join(['python', 'benchmarks/' + script, *extra])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        summary.append((script, rc, time.perf_counter() - t0))
    print("\n| trial | exit code | wall s |\n|---|---|---|")
    for script, rc, secs in summary:
        print(f"| {script} | {rc} | {secs:.0f} |")
    print(f"\nall trials: {time.perf_counter() - t_all:.0f} s; "
          f"{'every promise kept' if all(rc == 0 for _, rc, _ in summary) else 'SOME PROMISE BROKEN (see above)'}")
    return 0 if all(rc == 0 for _, rc, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
