"""The data's own phase convention end to end through DICOM, for every vendor (issue 12): the
phantom command writes one realistic study as each vendor writes it (normal, ``--flip-phase``,
``--anonymize no_manufacturer``, ``--anonymize vendor_stripped``: no private elements and nothing
naming the equipment, so the reader cannot name the vendor), ``borderphase analyze --no-dicom`` reads it back; printed per
vendor and case: the vendor and header convention the reader resolved, the data's convention,
the decision and whether the convention used is the one the phase was written in.

    PYTHONPATH=. nice -n 10 python3 benchmarks/convention_vendors.py [--protocol gre2d_5mm] [--vendors GE Philips Siemens Canon]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = (("normal", []), ("flipped", ["--flip-phase"]), ("no_manufacturer", ["--anonymize", "no_manufacturer"]),
         ("vendor_stripped", ["--anonymize", "vendor_stripped"]))


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "plugin.cli", *args], cwd=ROOT, check=True, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="gre2d_5mm")
    ap.add_argument("--vendors", nargs="+", default=["GE", "Philips", "Siemens", "Canon"])
    a = ap.parse_args()
    print("| vendor | case | vendor read | phase written | vendor table says | data convention | decision | used right | calls (mb/calc/indet) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for vendor in a.vendors:
        for case, extra in CASES:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="bp_conv_") as tmp:
                d = Path(tmp)
                cli("phantom", "--cohort", "realistic", "--protocol", a.protocol, "--vendor", vendor, "--studies", "1",
                    "--jobs", "1", "--out", str(d / "in"), *extra)
                truth = json.loads((d / "in" / "truth.json").read_text())
                study = truth.get("studies", [truth])[0]
                written = study["phase_convention"]
                table = study.get("vendor_table_convention", written)
                cli("analyze", str(d / "in"), "--out", str(d / "out"), "--no-dicom")
                doc = json.loads((d / "out" / "findings.json").read_text())
            for an in doc["analyses"]:
                ev = an["data_evidence"]
                calls = [les["classification"] for les in an["lesions"]]
                counts = "/".join(str(calls.count(c)) for c in ("microbleed", "calcification", "indeterminate"))
                print(f"| {vendor} | {case} | {an['vendor']} | {written} | {table} | {an['data_convention']} | "
                      f"{ev.get('decision')} | {'yes' if an['phase_convention'] == written else 'NO'} | {counts} |", flush=True)
            print(f"# {vendor} {case}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
