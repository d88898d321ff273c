"""``borderphase inspect PATH... [--json] [--convention-rules FILE] [--no-data-convention]``: what
every DICOM series under the paths is (vendor, components, echoes, geometry, phase scaling and
convention) and, per phase series of a magnitude/phase pair, the data's own phase convention
(``data_convention``, ``data_evidence``: plugin.conformance.data_conventions, issue 12).

Exit codes (GUIDE): 0 every series readable; 1 unreadable files or series problems reported;
2 usage or configuration error (missing path, bad rules file).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from plugin.commands.inputs import InputRefused, checked_inputs

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "inspect", help="describe the DICOM series under PATH (vendor, components, echoes, phase convention)",
        description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    p.add_argument("--json", action="store_true", help="print the machine-readable document (GUIDE contract)")
    p.add_argument("--convention-rules", metavar="FILE", type=Path, default=None,
                   help="site phase-convention overrides (TOML)")
    p.add_argument("--no-data-convention", dest="data_convention", action="store_false",
                   help="skip the data's own phase convention per phase series (veins of known sign; "
                        "it reads every pair's pixels, seconds per series)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from dicom_io.inspect import format_table, has_problems, inspect_scan
    from dicom_io.read.series import scan

    try:
        rules = checked_inputs("inspect", args.paths, args.convention_rules)
    except InputRefused as exc:
        return exc.exit_code
    try:
        result = scan([Path(p) for p in args.paths], rules=rules)
        doc = inspect_scan(result)
        if args.data_convention:   # issue 12: the data's own convention, as conformance reports it
            from plugin.conformance import attach_data_conventions, data_conventions
            try:
                attach_data_conventions(doc, data_conventions(result)[0])
            except Exception as exc:  # the series facts stand without it; say why it is missing
                log.warning("data convention not estimated: %s: %s", type(exc).__name__, exc)
                log.debug("data convention failed", exc_info=True)
                attach_data_conventions(doc, {})
    except Exception as exc:  # never a traceback: the document still says what happened
        log.debug("inspect failed", exc_info=True)
        from dicom_io.inspect import SCHEMA
        from dicom_io.read.series import error_text
        doc = {"schema": SCHEMA, "series": [], "notes": [],
               "errors": [{"path": str(p), "reason": f"internal error while reading: {error_text(exc)}"}
                          for p in args.paths]}
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(doc))
    return 1 if has_problems(doc) else 0
