"""Time generating the method paper's cohort (128 microbleeds + 62 calcifications over 4 full-size
512 x 512 x 60 studies) for one vendor, with peak memory; writes benchmarks/phantom.md.

    python benchmarks/phantom_benchmark.py [--vendor GE] [--style classic] [--out-md benchmarks/phantom.md]

Each configuration runs in a fresh subprocess (``borderphase phantom ... --cohort paper``) so that
peak RSS (``ru_maxrss`` of the child) and import time are included, as a user would see them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIRST_TRUTH = None

# Table 1 of the method paper: (class, size group) -> {pattern: count}, border and central
PAPER_TABLE1 = {
    "border": {("microbleed", "<2.5"): {1: 74}, ("microbleed", ">=2.5"): {1: 54},
               ("calcification", "<2.5"): {1: 1, 2: 25}, ("calcification", ">=2.5"): {2: 36}},
    "central": {("microbleed", "<2.5"): {1: 73, 5: 1}, ("microbleed", ">=2.5"): {1: 7, 3: 10, 4: 3, 5: 16, 6: 18},
                ("calcification", "<2.5"): {1: 1, 2: 25}, ("calcification", ">=2.5"): {1: 1, 2: 2, 4: 9, 5: 11, 6: 13}},
}


def pattern_table(truth: dict) -> list[str]:
    """Expected patterns of the generated cohort (noise-free truth) beside the paper's Table 1."""
    from collections import Counter

    counts = {"border": Counter(), "central": Counter()}
    groups = Counter()
    for study in truth["studies"]:
        for L in study["lesions"]:
            g = (L["class"], ">=2.5" if L["diameter_mm"] >= 2.5 else "<2.5")
            groups[g] += 1
            counts["border"][(g, L.get("phase_border_pattern"))] += 1
            counts["central"][(g, L.get("central_pattern"))] += 1
    fmt = lambda d: ", ".join(f"{k if k is not None else 'none'}: {v}" for k, v in sorted(d.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
    lines = ["## Expected phase patterns of this cohort vs the paper's Table 1", "",
             f"From the first row's truth.json (vendor {truth['studies'][0]['vendor']}, "
             f"{truth['studies'][0]['phase_convention']}; noise-free truth rules of `plugin/phantom_truth.py`;",
             "border = `phase_border_pattern`, the outermost slice where the spot still shows on phase;",
             "`none` = the lesion's phase never reaches 0.3 rad / no signed voxel (very low chi_ppm)).", "",
             "| class | size mm | n (phantom / paper) | slice | phantom patterns | paper patterns |", "|---|---|---|---|---|---|"]
    for g in sorted(groups):
        paper_n = sum(PAPER_TABLE1["border"][g].values())
        for which in ("border", "central"):
            mine = {p: c for (gg, p), c in counts[which].items() if gg == g}
            lines.append(f"| {g[0]} | {g[1]} | {groups[g]} / {paper_n} | {which} | {fmt(mine)} | {fmt(PAPER_TABLE1[which][g])} |")
    return lines + [""]


# the child reports its own peak RSS (RUSAGE_CHILDREN would give the max over all children)
PROBE = ("import resource, sys; from plugin.cli import main; rc = main(sys.argv[1:]); "
         "print('PEAK_RSS_KB', max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
         "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=sys.stderr); sys.exit(rc)")

CONFIGS = (
    ("GE", "classic", []),
    ("Siemens", "classic", []),
    ("Philips", "enhanced", []),
    ("GE", "classic", ["--echoes", "3"]),
    ("Siemens", "classic", ["--filtered"]),
)


def run_one(vendor: str, style: str, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bp-phantom-bench-"))
    args = ["phantom", "--vendor", vendor, "--style", style, "--cohort", "paper", "--seed", "0", "--out", str(out), *extra]
    cmd = [sys.executable, "-c", PROBE, *args]
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    doc = json.loads((out / "truth.json").read_text())
    global FIRST_TRUTH
    if FIRST_TRUTH is None:
        FIRST_TRUTH = doc
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "command": "borderphase " + " ".join(args).replace(str(out), "OUT"),
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": int(proc.stderr.split("PEAK_RSS_KB")[-1].split()[0]) / 1024.0,
        "studies": len(doc["studies"]),
        "lesions": sum(len(s["lesions"]) for s in doc["studies"]),
        "files": sum(s["n_files"] for s in doc["studies"]),
        "size_mb": size / 1e6,
        "load": (load_before + os.getloadavg()[0]) / 2.0,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-md", default=str(ROOT / "benchmarks" / "phantom.md"))
    p.add_argument("--quick", action="store_true", help="only the first configuration")
    args = p.parse_args(argv)
    rows = [run_one(*c) for c in (CONFIGS[:1] if args.quick else CONFIGS)]
    lines = [
        "# Phantom generation benchmark",
        "",
        "The method paper's cohort (128 microbleeds + 62 calcifications, 4 studies of 512 x 512 x 60,",
        "0.45 x 0.45 x 2.5 mm, 3 T, TE 25 ms) rendered and written as DICOM for one vendor. One fresh",
        "process per row (imports included); studies are rendered in 2 worker processes (`--jobs`,",
        "default up to 2); peak RSS is the largest `ru_maxrss` of the command or one of its workers (two",
        "workers run at once, so the machine needs about twice that).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work while measured), "
        f"Python {platform.python_version()}.",
        "Regenerate: `python benchmarks/phantom_benchmark.py`.",
        "",
        "CPU s is user + system time of the process; when other work shares the 2 cores (load average",
        "column: 1-minute load, mean of start and end) wall time exceeds it.",
        "",
        "| command | studies | lesions | files | size MB | wall s | CPU s | peak RSS MB | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['command']}` | {r['studies']} | {r['lesions']} | {r['files']} | {r['size_mb']:.0f} | "
                     f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['load']:.1f} |")
    lines.append("")
    if FIRST_TRUTH is not None:
        lines += pattern_table(FIRST_TRUTH)
    Path(args.out_md).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
