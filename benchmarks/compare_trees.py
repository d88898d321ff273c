"""Do two source trees give the same findings and dipole fits on the same studies? (issue 15: speed
changes must keep the maths.)

    python benchmarks/compare_trees.py --base /path/to/main/copy STUDY_DIR [STUDY_DIR ...]

For each study, ``plugin.pipeline.analyze_paths`` runs once in each tree (this tree and ``--base``,
each in its own process with ``PYTHONPATH`` set to the tree), recording every ``fit_dipole`` result
(pipeline and QSM recovery) at full precision. Printed per study: the number of differences in
findings.json (tracking UIDs and output paths left out: they are new on every run), and for the
fits how many float values are bit-identical and the largest relative difference per field.
A copy of main to compare against: ``git archive main | tar -x -C /tmp/base``.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
VOLATILE = ("tracking_uid",)


def _dump(study: str, out_pkl: str) -> None:
    """In a child process: analyse the study, pickle (findings, fits)."""
    import dataclasses
    import glob

    import plugin.method.qsmrecovery as qr
    import plugin.pipeline as pl
    fits: list = []

    def recorded(f):
        def g(*a, **k):
            r = f(*a, **k)
            fits.append(dataclasses.asdict(r))
            return r
        return g

    pl.fit_dipole = recorded(pl.fit_dipole)
    qr.fit_dipole = recorded(qr.fit_dipole)
    paths = sorted(glob.glob(str(Path(study) / "**" / "*.dcm"), recursive=True))
    with tempfile.TemporaryDirectory() as out:
        pl.analyze_paths(paths, out)
        findings = json.loads((Path(out) / "findings.json").read_text())
    with open(out_pkl, "wb") as fh:
        pickle.dump((findings, fits), fh)


def findings_differences(a, b, path: str = "") -> list:
    """Differences between two findings documents, UIDs made per run and output paths left out."""
    out: list = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in VOLATILE:
                continue
            if k not in a or k not in b:
                out.append((f"{path}/{k}", a.get(k, "<absent>"), b.get(k, "<absent>")))
            else:
                out += findings_differences(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(path, f"{len(a)} items", f"{len(b)} items")]
        for i, (x, y) in enumerate(zip(a, b)):
            out += findings_differences(x, y, f"{path}[{i}]")
    elif isinstance(a, str) and isinstance(b, str) and a.startswith("/") and b.startswith("/"):
        if Path(a).parent.name != Path(b).parent.name:     # a result file in another folder
            out.append((path, a, b))
    elif a != b:
        out.append((path, a, b))
    return out


def fit_differences(a: list, b: list) -> tuple[int, int, dict, list]:
    """(float values, bit-identical ones, largest relative difference per field, other differences)."""
    n = same = 0
    worst: dict = {}
    other: list = []
    if len(a) != len(b):
        return 0, 0, {}, [("number of fits", len(a), len(b))]
    for x, y in zip(a, b):
        for k in x:
            vx, vy = x[k], y[k]
            if isinstance(vx, tuple) and vx and isinstance(vx[0], float) and isinstance(vy, tuple):
                pairs = list(zip(vx, vy))
            elif isinstance(vx, float) and isinstance(vy, float):
                pairs = [(vx, vy)]
            else:
                if vx != vy:
                    other.append((k, vx, vy))
                continue
            for p, q in pairs:
                n += 1
                if p == q:
                    same += 1
                    continue
                worst[k] = max(worst.get(k, 0.0), abs(p - q) / max(abs(p), abs(q), 1e-300))
    return n, same, worst, other


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="*", help="study folders (DICOM files)")
    ap.add_argument("--base", required=True, help="the other source tree (e.g. an archive of main)")
    ap.add_argument("--dump", nargs=2, metavar=("STUDY", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.dump:
        _dump(*args.dump)
        return 0
    if not args.studies:
        ap.error("give at least one study folder")
    trees = {"base": str(Path(args.base).resolve()), "this": str(HERE)}
    status = 0
    for study in args.studies:
        got = {}
        for name, tree in trees.items():
            with tempfile.NamedTemporaryFile(suffix=".pkl") as tmp:
                env = dict(os.environ, PYTHONPATH=tree)
                subprocess.run([sys.executable, str(HERE / "benchmarks" / "compare_trees.py"), "--base", tree,
                                "--dump", study, tmp.name], env=env, check=True, cwd=tree)
                with open(tmp.name, "rb") as fh:
                    got[name] = pickle.load(fh)
        (fa, fits_a), (fb, fits_b) = got["base"], got["this"]
        diffs = findings_differences(fa, fb)
        n_les = sum(len(an.get("lesions", [])) for an in fa.get("analyses", []))
        n, same, worst, other = fit_differences(fits_a, fits_b)
        print(f"{study}: findings.json {len(diffs)} differences ({n_les} lesions); {len(fits_a)} fits: {same} of {n} "
              f"float values bit-identical, non-float differences {len(other)}")
        if worst:
            print("    largest relative difference per field: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in sorted(worst.items(), key=lambda t: -t[1])))
        for d in (diffs + other)[:20]:
            print("    ", d)
        status |= bool(diffs or other)
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
