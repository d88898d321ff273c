"""``borderphase analyze INPUT... --out OUT``: find dark spots and call each one microbleed or
calcification from its border-slice phase pattern; writes ``OUT/findings.json``.

Exit codes (GUIDE): 0 done; 1 input problems reported (some series skipped or files unreadable);
2 usage or configuration error (bad ``--at``/``--points``, unreadable rules file, missing input).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from dicom_io.vocabulary import SUMMARY_ENCODING_NAMES

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  borderphase analyze /data/study --out /tmp/out
  borderphase analyze /data/study --out /tmp/out --at=-12.5,30.1,42 --at 10,5,20
  borderphase analyze /data/study --out /tmp/out --points marks.txt --echo 3
(write --at=X,Y,Z when X is negative)
points file: one "x,y,z" (LPS mm) per line ('#' comments), or JSON [[x,y,z], ...]
"""


class UsageError(Exception):
    pass


#: dicom_io.results.summary.SUMMARY_ENCODINGS' keys, the default first (from the light vocabulary
#: module: the CLI starts without importing the result writers)
SUMMARY_ENCODING_CHOICES = SUMMARY_ENCODING_NAMES


def add_parser(subparsers) -> None:
    import argparse
    p = subparsers.add_parser(
        "analyze", help="classify GRE dark spots (microbleed / calcification) from border-slice phase",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (findings.json and DICOM results)")
    p.add_argument("--at", action="append", default=[], metavar="X,Y,Z",
                   help="classify the spot at this LPS position (mm) instead of detecting; repeatable")
    p.add_argument("--points", metavar="FILE", help="file of LPS positions to classify (see below)")
    p.add_argument("--echo", type=int, metavar="N", help="echo number to analyse (default: the latest paired echo)")
    p.add_argument("--convention-rules", metavar="FILE", help="site phase-convention rules (TOML)")
    p.add_argument("--background", choices=("auto", "none", "homodyne", "laplacian"), default="auto",
                   help="phase background removal (default auto: filtered phase as is, raw phase -> Laplacian)")
    p.add_argument("--on-conflict", choices=("data", "header"), default="data",
                   help="when the data's own phase convention (veins along B0) strongly contradicts the header's: "
                        "data (default) uses the data's and says so; header keeps the header's and says so")
    p.add_argument("--no-dicom", action="store_true", help="write findings.json only, no DICOM result objects")
    p.add_argument("--no-qsm-series", action="store_true",
                   help="do not write the QSM map as the 'borderphase QSM (ppb)' MR series (per-spot chi stays)")
    p.add_argument("--summary-encoding", choices=SUMMARY_ENCODING_CHOICES, default=SUMMARY_ENCODING_CHOICES[0],
                   help="how the summary images are stored: jpeg-ls-lossless (default, 4-9 x smaller) or "
                        "uncompressed (for an archive that refuses JPEG-LS); the same pixels either way")
    p.set_defaults(run=run)


def parse_point(text: str) -> tuple[float, float, float]:
    parts = [t for t in text.replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    if len(parts) != 3:
        raise UsageError(f"a point needs three numbers x,y,z (LPS mm), got {text!r}")
    try:
        return tuple(float(v) for v in parts)  # type: ignore[return-value]
    except ValueError:
        raise UsageError(f"a point needs three numbers x,y,z (LPS mm), got {text!r}") from None


def read_points_file(path: str) -> list[tuple[float, float, float]]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read points file ({exc.strerror or exc})") from None
    stripped = text.strip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if isinstance(data, dict):
            data = data.get("points", [])
        pts = []
        for item in data:
            if isinstance(item, dict):
                item = item.get("center_lps_mm") or item.get("lps_mm")
            if not isinstance(item, (list, tuple)) or len(item) != 3:
                raise UsageError(f"{path}: each point must be [x, y, z], got {item!r}")
            pts.append(tuple(float(v) for v in item))
        return pts
    pts = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            pts.append(parse_point(line))
        except UsageError as exc:
            raise UsageError(f"{path}, line {n}: {exc}") from None
    return pts


def run(args) -> int:
    from plugin.pipeline import AnalysisOptions, analyze_paths
    try:
        points = [parse_point(a) for a in args.at]
        if args.points:
            points += read_points_file(args.points)
        missing = [i for i in args.inputs if not Path(i).exists()]
        if missing:
            raise UsageError(f"input not found: {', '.join(missing)}")
        rules = None
        if args.convention_rules:
            from dicom_io.convention import ConventionConfigError, load_rules
            try:
                rules = load_rules(args.convention_rules)
            except ConventionConfigError as exc:  # names the file, the key and the problem
                raise UsageError(f"convention rules: {exc}") from None
    except UsageError as exc:
        print(f"borderphase analyze: error: {exc}", file=sys.stderr)
        return 2
    try:
        doc = analyze_paths(args.inputs, args.out, convention_rules=rules, points_lps_mm=points or None,
                            echo=args.echo, options=AnalysisOptions(background=args.background, on_conflict=args.on_conflict,
                                                    qsm_series=not args.no_qsm_series,
                                                    summary_encoding=args.summary_encoding),
                            write_dicom=not args.no_dicom)
    except Exception as exc:  # never a traceback: findings.json still says what happened
        log.debug("analyze failed", exc_info=True)
        doc = _failure_document(args.inputs, args.out, exc)
        if doc is None:
            return 1
    n_les = sum(len(a["lesions"]) for a in doc["analyses"])
    print(f"{len(doc['analyses'])} pair(s) analysed, {n_les} spot(s); findings: {Path(args.out) / 'findings.json'}")
    for a in doc["analyses"]:
        counts: dict[str, int] = {}
        for les in a["lesions"]:
            counts[les["classification"]] = counts.get(les["classification"], 0) + 1
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no spots"
        print(f"  {a['vendor']} ({a['phase_convention']}, {a['convention_source']}): {summary}")
    for s in doc["skipped"]:
        print(f"  skipped {s['series_instance_uid']}: {s['reason']}", file=sys.stderr)
    for e in doc.get("errors", []):
        print(f"  unreadable {e.get('path')}: {e.get('reason')}", file=sys.stderr)
    if not doc["analyses"] and not doc["skipped"] and not doc.get("errors"):
        print("  no DICOM series found in the input", file=sys.stderr)
        for note in _why_files_were_skipped(args.inputs):
            print(f"  {note}", file=sys.stderr)
        return 1
    return 1 if (doc["skipped"] or doc.get("errors")) else 0


def _why_files_were_skipped(inputs, limit: int = 20) -> list[str]:
    """For the files named on the command line (not folders), why each was passed over: "skipped
    PATH: not a DICOM file", "... DICOMDIR ...", "... not an image (...)" (the reader's own note)."""
    from dicom_io.read.files import read_header
    notes = []
    for i in inputs:
        if Path(i).is_file() and len(notes) < limit:
            got = read_header(i)
            if isinstance(got, str):
                notes.append(got)
    return notes


def _failure_document(inputs, out_dir, exc: Exception):
    """The findings document when the analysis itself failed: no analyses, each input under
    ``errors`` with the reason; written to ``out_dir/findings.json`` when possible."""
    from dicom_io.read.series import error_text
    from plugin.pipeline import findings_document
    doc = findings_document([], [])
    doc["errors"] = [{"path": str(i), "reason": f"internal error while analysing: {error_text(exc)}"} for i in inputs]
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "findings.json").write_text(json.dumps(doc, indent=2))
    except OSError as err:
        print(f"borderphase analyze: error: cannot write {Path(out_dir) / 'findings.json'}: "
              f"{err.strerror or err}; analysis failed: {error_text(exc)}", file=sys.stderr)
        return None
    return doc
