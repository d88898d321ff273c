"""``borderphase demo``: archive stand-in + node on loopback, send the sample studies as a scanner
would, wait for the results, print the findings and where the SR, SEG and summary landed."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the node on loopback against the sample studies (nothing to install)")
    p.add_argument("--samples", default=None, help="directory of DICOM studies (default: the repo's sample_dicom/)")
    p.add_argument("--workdir", default=None, help="keep everything here (default: a new temp dir)")
    p.add_argument("--quiet-period", type=float, default=1.0, help="study completion quiet period, s (default 1)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument("--json", action="store_true", help="print the machine-readable report")
    p.set_defaults(run=run)


def run(args) -> int:
    from plugin.service.demo import default_samples_dir, format_demo, run_demo
    samples = Path(args.samples) if args.samples else default_samples_dir()
    if not samples.is_dir():
        print(f"borderphase demo: {samples}: no sample studies (regenerate them with `borderphase phantom`)",
              file=sys.stderr)
        return 2
    try:
        doc = run_demo(samples, args.workdir, quiet_period_s=args.quiet_period, timeout_s=args.timeout)
    except FileNotFoundError as exc:
        print(f"borderphase demo: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2) if args.json else format_demo(doc))
    if doc["timed_out"]:
        return 1
    return 0 if all(s["state"] == "analysed" for s in doc["studies"]) else 1
