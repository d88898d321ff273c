"""Are two versions' results the same? findings.json and every DICOM result object of one study,
analysed by each version as a node's process worker does (issue 15: memory work must not change
a single output).

    python benchmarks/results_identical.py STUDY --before /work/main --after . --work DIR

Each tree analyses STUDY in a fresh child (``PYTHONPATH=<tree>``, the worker's malloc setting and
start-up imports, then :func:`plugin.pipeline.analyze_paths` with the DICOM results) into
``DIR/before`` and ``DIR/after``. Then:

- findings.json: equal after masking UID-valued strings (the tracking UIDs are random) and
  ``result_files`` (paths named after random SOP Instance UIDs);
- SR, SEG, summary, KOS and QSM objects, paired by kind and InstanceNumber: every element equal,
  recursively through sequences, except elements of VR UI, DA, TM and DT (UIDs, dates, times);
  Pixel Data byte for byte.

Prints one line per kind (identical / compared) and each difference found; exit 1 on any.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys
from plugin.service.memory import return_freed_memory
return_freed_memory()
try:
    from plugin.service.worker import preload_analysis_modules
    preload_analysis_modules()
except ImportError:
    pass
from plugin.pipeline import analyze_paths
analyze_paths([sys.argv[1]], sys.argv[2])
"""
UID_RE = re.compile(r"^\d+(\.\d+){3,}$")
MASKED_VRS = {"UI", "DA", "TM", "DT"}


def analyse(tree: Path, study: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    run = subprocess.run([sys.executable, "-c", CHILD, str(study), str(out)], env=env, cwd="/",
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"analysis with {tree} failed:\n{run.stderr[-3000:]}")


def masked_json(value):
    if isinstance(value, dict):
        return {k: masked_json(v) for k, v in value.items() if k != "result_files"}
    if isinstance(value, list):
        return [masked_json(v) for v in value]
    if isinstance(value, str) and UID_RE.match(value):
        return "<uid>"
    return value


def dataset_differences(a, b, where: str = "") -> list[str]:
    diffs = []
    tags = sorted(set(a.keys()) | set(b.keys()))
    for tag in tags:
        if tag not in a or tag not in b:
            diffs.append(f"{where}{tag}: only in {'after' if tag not in a else 'before'}")
            continue
        ea, eb = a[tag], b[tag]
        if ea.VR in MASKED_VRS:
            continue
        if ea.VR == "SQ":
            if len(ea.value) != len(eb.value):
                diffs.append(f"{where}{ea.keyword or tag}: {len(ea.value)} vs {len(eb.value)} items")
                continue
            for i, (ia, ib) in enumerate(zip(ea.value, eb.value)):
                diffs += dataset_differences(ia, ib, f"{where}{ea.keyword or tag}[{i}].")
        elif ea.value != eb.value:
            diffs.append(f"{where}{ea.keyword or tag} differs")
    return diffs


def compare_objects(before: Path, after: Path) -> tuple[dict, list[str]]:
    import pydicom
    counts, diffs = {}, []
    for kind in ("sr", "seg", "summary", "kos", "qsm"):
        def by_number(root: Path):
            files = sorted((root / kind).glob("*.dcm")) if (root / kind).is_dir() else []
            dss = [pydicom.dcmread(f) for f in files]
            return {int(ds.get("InstanceNumber", 0) or 0): ds for ds in dss}, len(dss)
        a, na = by_number(before)
        b, nb = by_number(after)
        same = 0
        if na != nb or set(a) != set(b):
            diffs.append(f"{kind}: {na} objects before, {nb} after (instance numbers {sorted(a)} / {sorted(b)})")
        for n in sorted(set(a) & set(b)):
            d = dataset_differences(a[n], b[n], f"{kind} #{n}: ")
            diffs += d
            same += not d
        counts[kind] = (same, max(na, nb))
    return counts, diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path)
    ap.add_argument("--before", type=Path, required=True, help="repository root of the reference version")
    ap.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args(argv)
    outs = {}
    for name, tree in (("before", args.before), ("after", args.after)):
        outs[name] = args.work / name
        analyse(tree, args.study.resolve(), outs[name])
    fa, fb = (json.loads((outs[n] / "findings.json").read_text()) for n in ("before", "after"))
    diffs = [] if masked_json(fa) == masked_json(fb) else ["findings.json differs (UIDs masked)"]
    n_lesions = sum(len(a["lesions"]) for a in fa["analyses"])
    print(f"findings.json: {'identical' if not diffs else 'DIFFERENT'} ({n_lesions} lesions)")
    counts, object_diffs = compare_objects(outs["before"], outs["after"])
    for kind, (same, total) in counts.items():
        print(f"{kind}: {same}/{total} identical")
    diffs += object_diffs
    for d in diffs[:40]:
        print("DIFF", d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
