"""``borderphase conformance PATH... --out DIR [--convention-rules FILE]``: for vendor-conformance
testers, DIR/conformance.html (one row per series: vendor and the rule that named it, classic or
enhanced, components and their rules, echo times, geometry, phase scaling, header convention, the
data's own convention and its evidence, problems, thumbnails of magnitude and phase; unreadable
files with reasons) and DIR/conformance.json (the same facts)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from plugin.commands.inputs import InputRefused, checked_inputs

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("conformance", help="write an HTML + JSON conformance report of the series under PATH",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--convention-rules", metavar="FILE", type=Path, default=None, help="site phase-convention overrides (TOML)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from plugin.conformance import conformance_report

    try:
        rules = checked_inputs("conformance", args.paths, args.convention_rules)
    except InputRefused as exc:
        return exc.exit_code
    try:
        doc = conformance_report(args.paths, args.out, rules=rules)
    except OSError as exc:
        print(f"borderphase conformance: cannot write the report to {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"{len(doc['series'])} series, {len(doc.get('errors', []))} unreadable file(s): "
          f"{Path(args.out) / 'conformance.html'}")
    return 0
