"""Shared pieces of the benchmarks that run warm analyses in child processes, one checkout against
another (``six_echo_warm.py``, ``analysis_cpu.py``), or a stored study in this process
(``cpu_to_sr.py``, ``profile_analysis.py``)."""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

SIX_ECHO_NPZ = "swi3d_six_echo_seed0.npz"


def add_checkout_args(ap: argparse.ArgumentParser, *, runs: int, runs_help: str) -> None:
    """--baseline, --cache, --runs, --rounds and --with-qsm of the alternating-checkout benchmarks."""
    ap.add_argument("--baseline", default="", metavar="DIR", help="another checkout, run alternately with this one")
    ap.add_argument("--cache", required=True, help=f"folder with {SIX_ECHO_NPZ} (analysis_speed.py --six-echo --cache)")
    ap.add_argument("--runs", type=int, default=runs, help=runs_help)
    ap.add_argument("--rounds", type=int, default=2, help="children per checkout, alternating")
    ap.add_argument("--with-qsm", action="store_true")


def six_echo_npz(ap: argparse.ArgumentParser, cache: str) -> Path:
    """The cached six-echo study, or a usage error naming the file and how to make it."""
    npz = Path(cache) / SIX_ECHO_NPZ
    if not npz.exists():
        ap.error(f"{npz} not found: render it first with python benchmarks/analysis_speed.py --six-echo --cache {cache}")
    return npz


def study_paths(study: str) -> list[str]:
    """Every .dcm file below ``study``, sorted; exits 2 naming the folder when there is none."""
    paths = sorted(glob.glob(str(Path(study) / "**" / "*.dcm"), recursive=True))
    if not paths:
        print(f"{study}: no .dcm files", file=sys.stderr)
        raise SystemExit(2)
    return paths
