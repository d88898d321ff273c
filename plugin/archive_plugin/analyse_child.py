"""The analysis as its own process: ``python -m plugin.archive_plugin.analyse_child REQUEST.json``.

Orthanc's process hosts the plugin; the method runs here, in a child, so that its memory (about
1 GB for a 512 x 512 x 60 study), its CPU time (at a lower priority) and any crash of a native
library stay out of the archive, and Orthanc's threads never wait on the GIL for it. The child
dies with Orthanc (``PR_SET_PDEATHSIG``): a killed Orthanc leaves no orphan analysis behind, and
the restarted plugin runs the version again.

REQUEST.json: ``{"inputs": [paths], "out": dir, "previous_sr_paths": [paths],
"convention_rules": path or null, "nice": int, "qsm_series": bool (default true)}``. Exit 0: ``out/findings.json`` and the DICOM
results are written; exit 1: one line on stderr says why (no traceback unless ``-v``).
"""
from __future__ import annotations

import json
import os
import sys

from dicom_io.vocabulary import DEFAULT_SUMMARY_ENCODING
from plugin.service.isolation import die_with_parent   # killed with the Orthanc thread that started it


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    args = [a for a in argv if a != "-v"]
    if len(args) != 1:
        print("usage: python -m plugin.archive_plugin.analyse_child [-v] REQUEST.json", file=sys.stderr)
        return 2
    try:
        request = json.loads(open(args[0], encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        print(f"{args[0]}: cannot read the request: {exc}", file=sys.stderr)
        return 2
    die_with_parent(int(request.get("parent_pid", os.getppid())))
    if request.get("nice"):
        os.nice(int(request["nice"]))
    from plugin.pipeline import analyze_paths
    try:
        kwargs = {"previous_sr_paths": request.get("previous_sr_paths") or ()}
        if request.get("convention_rules"):
            kwargs["convention_rules"] = request["convention_rules"]
        options = {}
        if request.get("qsm_series") is False:   # [analysis] qsm_series = false: no QSM MR series
            options["qsm_series"] = False
        if request.get("summary_encoding", DEFAULT_SUMMARY_ENCODING) != DEFAULT_SUMMARY_ENCODING:   # [analysis] summary_encoding
            options["summary_encoding"] = str(request["summary_encoding"])
        if options:
            from plugin.pipeline import AnalysisOptions
            kwargs["options"] = AnalysisOptions(**options)
        analyze_paths(request["inputs"], request["out"], **kwargs)
    except Exception as exc:
        if verbose:
            import traceback
            traceback.print_exc()
        print(f"analysis failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
