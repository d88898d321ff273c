"""Reader reliability under hostile input: the long version of ``tests/test_fuzz_reader.py``.

Makes >= 3,000 seeded mutants of ``sample_dicom`` (byte flips, truncations, private VR swaps,
huge lengths, hostile UIDs, deep sequences, deflate bombs), runs each file through
``borderphase inspect --json`` (in-process, one fresh batch process per at most --batch files of
one input class, so the batch's peak RSS bounds every input in it), and >= 10 mixed folders (an
intact sample study beside hostile files of every class) through ``borderphase analyze``. Prints,
per input class: files, exit codes, tracebacks, non-JSON outputs, peak RSS; and for the mixed
folders how many good studies were analysed.

    nice -n 10 python benchmarks/reliability_fuzz.py            # 3,050 files + 12 mixed folders
    python benchmarks/reliability_fuzz.py --scale 0.1 --mixed 2  # quick look
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from fuzz_harness import GOOD_STUDIES, Job, make_mixed_folder, make_mutants, run_batch, sample_files  # noqa: E402

COUNTS = {"byte_flips": 900, "truncate": 450, "vr_swap": 500, "huge_length": 450, "bad_uid": 350,
          "deep_sequence": 200, "deflate_bomb": 200}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every class count")
    ap.add_argument("--mixed", type=int, default=12, help="mixed folders (good study + hostile files)")
    ap.add_argument("--bad-per-folder", type=int, default=28)
    ap.add_argument("--batch", type=int, default=250, help="files per batch process")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="bp_fuzz_"))
    counts = {k: max(1, round(v * args.scale)) for k, v in COUNTS.items()}
    samples = sample_files(ROOT / "sample_dicom")
    sources = [p for fs in samples.values() for p in fs]
    t0 = time.perf_counter()
    mutants = make_mutants(work / "mutants", counts, sources, args.seed)
    t_make = time.perf_counter() - t0

    by_kind: dict[str, list[Job]] = defaultdict(list)
    for k, (kind, path) in enumerate(mutants):
        by_kind[kind].append(Job(f"{kind}-{k}", kind, "inspect", [str(path)]))
    results: list[dict] = []
    peaks: dict[str, int] = {}
    t1 = time.perf_counter()
    for kind, jobs in sorted(by_kind.items()):
        for start in range(0, len(jobs), args.batch):
            got, peak = run_batch(jobs[start:start + args.batch], work / "runs")
            results += got
            peaks[kind] = max(peaks.get(kind, 0), peak)
    t_inspect = time.perf_counter() - t1

    rng = random.Random(args.seed)
    mixed_jobs = []
    n_mixed_files = 0
    for i in range(args.mixed):
        vendor = GOOD_STUDIES[i % len(GOOD_STUDIES)]
        folder = work / "mixed" / f"{i:02d}_{vendor}"
        uid, n = make_mixed_folder(folder, vendor, samples, args.bad_per_folder, rng)
        n_mixed_files += n
        mixed_jobs.append(Job(f"mixed-{i}", "mixed", "analyze", [str(folder)], out=str(work / "out" / f"{i:02d}"),
                              good_studies=[uid]))
    t2 = time.perf_counter()
    mixed, peaks["mixed (analyze)"] = run_batch(mixed_jobs, work / "runs") if mixed_jobs else ([], 0)
    t_mixed = time.perf_counter() - t2

    print(f"Reader fuzz: {len(mutants)} mutated files (seed {args.seed}), {len(mixed_jobs)} mixed folders "
          f"({n_mixed_files} files); made in {t_make:.0f} s, inspect {t_inspect:.0f} s, analyze {t_mixed:.0f} s")
    print()
    print("| input class | files | exit 0 | exit 1 | other exit | tracebacks | non-JSON | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    by = defaultdict(list)
    for r in results:
        by[r["kind"]].append(r)
    for kind in sorted(by):
        rs = by[kind]
        rc = Counter(r["rc"] for r in rs)
        print(f"| {kind} | {len(rs)} | {rc.get(0, 0)} | {rc.get(1, 0)} | {sum(v for k, v in rc.items() if k not in (0, 1))} "
              f"| {sum(1 for r in rs if r['traceback'])} | {sum(1 for r in rs if not r['json_ok'])} "
              f"| {peaks[kind] / 1024**2:.0f} |")
    if mixed:
        rc = Counter(r["rc"] for r in mixed)
        print(f"| mixed folders (analyze) | {len(mixed)} | {rc.get(0, 0)} | {rc.get(1, 0)} "
              f"| {sum(v for k, v in rc.items() if k not in (0, 1))} | {sum(1 for r in mixed if r['traceback'])} "
              f"| {sum(1 for r in mixed if not r['json_ok'])} | {peaks['mixed (analyze)'] / 1024**2:.0f} |")
    all_runs = results + mixed
    print()
    print(f"tracebacks: {sum(1 for r in all_runs if r['traceback'])} of {len(all_runs)} runs; "
          f"non-JSON outputs: {sum(1 for r in all_runs if not r['json_ok'])}; "
          f"exit codes other than 0/1: {sum(1 for r in all_runs if r['rc'] not in (0, 1))}")
    print(f"peak RSS, max over every input class: {max(peaks.values()) / 1024**2:.0f} MiB")
    good = sum(len(j.good_studies) for j in mixed_jobs)
    analysed = sum(len(r.get("good_analysed", [])) for r in mixed)
    print(f"good studies analysed in mixed folders: {analysed} of {good}")
    bombs = by.get("deflate_bomb", [])
    if bombs:
        refused = sum(1 for r in bombs if r["rc"] == 1 and r.get("reasons") and "inflates to more than" in r["reasons"][0])
        print(f"deflate bombs refused by name: {refused} of {len(bombs)}; slowest bomb {max(r['seconds'] for r in bombs):.2f} s")
    first = next((r for r in all_runs if r["traceback"]), None)
    if first:
        print(f"\nfirst traceback ({first['job']}):\n{first['traceback']}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    bad = any(r["traceback"] or not r["json_ok"] or r["rc"] not in (0, 1) for r in all_runs) or analysed < good
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
