"""The ``borderphase inspect`` document: what every series found under some paths is, per the
GUIDE's contract (``{"series": [...], "errors": [...]}``), plus ``notes`` for files skipped on
purpose. Reading is header-only except for phase stacks, whose pixels are converted to radians to
report ``phase_range_rad`` and the ``phase_scaling`` rule that was used.

Example::

    doc = inspect_paths(["/data/study"])
    for s in doc["series"]:
        print(s["vendor"], s["phase_convention"], [st["component"] for st in s["stacks"]])
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from dicom_io.convention import ConventionRules
from dicom_io.read import pixels
from dicom_io.errors import DicomInputError
from dicom_io.read.series import ScanResult, SeriesInfo, StackInfo, scan
from dicom_io.vocabulary import PhaseKind

SCHEMA = "borderphase.inspect/1"


def _round(v: Optional[float], nd: int = 4) -> Optional[float]:
    return None if v is None else round(float(v), nd)


def _toward_zero(v: float, decimals: int = 6) -> float:
    """Round toward zero: float32 -pi (-3.14159274) must not print as a value below -pi."""
    scale = 10 ** decimals
    return float(np.trunc(v * scale) / scale)


def _phase_facts(stack: StackInfo, limit_bytes: Optional[int]) -> tuple[Optional[list[float]], Optional[str], Optional[str]]:
    """(phase_range_rad, phase_scaling, problem). Pixels are read in slice order when the geometry
    allows, else in file order (the range does not depend on order)."""
    try:
        stored = pixels.read_stored(stack.frames, limit_bytes=limit_bytes)
        rad, rule = stack.codec.phase_to_radians(stored, stack.frames)
        del stored
        rad = np.asarray(rad)
        return [_toward_zero(float(rad.min())), _toward_zero(float(rad.max()))], rule, None
    except DicomInputError as exc:
        return None, None, f"phase not converted: {exc}"
    except Exception as exc:  # a codec refusing odd values must not become a traceback
        return None, None, f"phase not converted: {type(exc).__name__}: {exc}"


def kind_label(kind: Optional[str], effective_echo_time_ms: Optional[float]) -> str:
    """``phase difference (dTE 2.46 ms)``, ``field map (Hz)``, ``echo phase (TE 25 ms)``."""
    if kind == PhaseKind.PHASE_DIFFERENCE:
        dte = f"{effective_echo_time_ms:g} ms" if effective_echo_time_ms is not None else "unknown"
        return f"phase difference (dTE {dte})"
    if kind == PhaseKind.ECHO_PHASE and effective_echo_time_ms is not None:
        return f"echo phase (TE {effective_echo_time_ms:g} ms)"
    return str(kind)


def stack_dict(stack: StackInfo, *, limit_bytes: Optional[int] = None) -> dict:
    d = {
        "component": stack.component,
        "component_source": stack.component_source,
        "echo_number": stack.echo_number,
        "echo_number_source": stack.echo_number_source,
        "echo_time_ms": _round(stack.echo_time_ms),
        "n_slices": stack.n_slices,
        "n_positions": stack.n_positions,
        "rows": stack.rows,
        "columns": stack.columns,
        "pixel_spacing_mm": [_round(v) for v in stack.pixel_spacing_mm] if stack.pixel_spacing_mm else None,
        "slice_spacing_mm": _round(stack.slice_spacing_mm),
        "volume": stack.can_load,
        "problems": list(stack.problems),
        "lossy_compression": stack.lossy_compression,
    }
    if stack.kind is not None:   # echo phase | phase difference (read at dTE) | field map (Hz)
        d["kind"] = str(stack.kind)
        d["kind_source"] = stack.kind_source
        d["effective_echo_time_ms"] = _round(stack.effective_echo_time_ms)
        d["kind_label"] = kind_label(stack.kind, stack.effective_echo_time_ms)
    if stack.component == "phase":
        rng, rule, problem = _phase_facts(stack, limit_bytes)
        d["phase_range_rad"] = rng
        d["phase_scaling"] = rule
        if problem:
            d["problems"].append(problem)
    return d


def series_dict(series: SeriesInfo, *, limit_bytes: Optional[int] = None) -> dict:
    stacks = [stack_dict(st, limit_bytes=limit_bytes) for st in series.stacks]
    problems = list(series.problems)
    for st, d in zip(series.stacks, stacks):
        problems.extend(f"{st.label}: {p}" for p in d["problems"][len(st.problems):])
    return {
        "series_instance_uid": series.series_instance_uid,
        "study_instance_uid": series.study_instance_uid,
        "modality": series.modality,
        "vendor": series.vendor,
        "vendor_source": series.vendor_source,
        "manufacturer": series.manufacturer,
        "model": series.model,
        "software_versions": series.software_versions,
        "sop_class": series.sop_class,
        "sop_class_uid": series.sop_class_uid,
        "series_number": series.series_number,
        "series_description": series.series_description,
        "phase_convention": series.phase_convention,
        "convention_source": series.convention_source,
        "n_files": series.n_files,
        "n_frames": series.n_frames,
        "stacks": stacks,
        "problems": problems,
    }


def _series_dict_isolated(series: SeriesInfo, *, limit_bytes: Optional[int] = None) -> dict:
    """:func:`series_dict`; a series whose description fails is still listed, with the reason."""
    try:
        return series_dict(series, limit_bytes=limit_bytes)
    except Exception as exc:
        from dicom_io.read.series import error_text
        series.problems.append(f"series could not be described: {error_text(exc)}")
        series.stacks = []
        return series_dict(series, limit_bytes=limit_bytes)


def inspect_scan(result: ScanResult, *, limit_bytes: Optional[int] = None) -> dict:
    return {
        "schema": SCHEMA,
        "series": [_series_dict_isolated(s, limit_bytes=limit_bytes) for s in result.series],
        "errors": [p.as_dict() for p in result.problems],
        "notes": list(result.notes),
    }


def inspect_paths(paths: Iterable[Union[str, Path]], *, rules: Optional[ConventionRules] = None,
                  limit_bytes: Optional[int] = None) -> dict:
    """The GUIDE's ``inspect --json`` document for everything under ``paths``; ``rules``: the site's
    convention rules, applied by the scan (the same resolution ``analyze`` and the node report)."""
    return inspect_scan(scan(paths, rules=rules, limit_bytes=limit_bytes), limit_bytes=limit_bytes)


def has_problems(doc: dict) -> bool:
    """True when the document reports unreadable files or series/stack problems (exit code 1)."""
    return bool(doc["errors"]) or any(s["problems"] for s in doc["series"])


def format_table(doc: dict) -> str:
    """A readable text rendering of an inspect document."""
    out: list[str] = []
    for s in doc["series"]:
        out.append(f"Series {s['series_number'] if s['series_number'] is not None else '-'} "
                   f"'{s['series_description'] or ''}'  {s['series_instance_uid']}")
        out.append(f"  {s['vendor']} ({s['vendor_source']}) | {s['manufacturer'] or '-'} {s['model'] or ''} "
                   f"{s['software_versions'] or ''} | {s['modality'] or '-'} {s['sop_class']} | "
                   f"{s['n_files']} file(s), {s['n_frames']} frame(s)")
        out.append(f"  phase convention: {s['phase_convention']} ({s['convention_source']})")
        if s.get("data_evidence"):   # added by the plugin's inspect (the data's own convention, issue 12)
            ev = s["data_evidence"]
            out.append(f"  data convention: {s.get('data_convention') or 'undecided'} ({ev.get('reason', '')})")
        header = f"  {'component':<10} {'echo':>4} {'TE ms':>7} {'slices':>6} {'size':>9} {'pixel mm':>13} " \
                 f"{'slice mm':>8}  decided by / phase"
        out.append(header)
        for st in s["stacks"]:
            ps = st["pixel_spacing_mm"]
            ps_text = f"{ps[0]:g}x{ps[1]:g}" if ps else "-"
            te = f"{st['echo_time_ms']:g}" if st["echo_time_ms"] is not None else "-"
            sl = f"{st['slice_spacing_mm']:.3g}" if st["slice_spacing_mm"] is not None else "-"
            echo = st["echo_number"] if st["echo_number"] is not None else "-"
            size = f"{st['rows']}x{st['columns']}"
            line = (f"  {st['component']:<10} {echo:>4} {te:>7} {st['n_slices']:>6} "
                    f"{size:>9} {ps_text:>13} {sl:>8}  {st['component_source']}")
            out.append(line)
            if st["component"] == "phase":
                rng = st.get("phase_range_rad")
                rng_text = f"[{rng[0]:.3f}, {rng[1]:.3f}] rad" if rng else "not converted"
                out.append(f"  {'':<10} phase {rng_text}: {st.get('phase_scaling') or '-'}")
            if st.get("kind") not in (None, PhaseKind.ECHO_PHASE):
                out.append(f"  {'':<10} kind: {st['kind_label']} ({st['kind_source']})")
        for p in s["problems"]:
            out.append(f"  PROBLEM: {p}")
        out.append("")
    if not doc["series"]:
        out.append("No DICOM image series found.")
        out.append("")
    for e in doc["errors"]:
        out.append(f"ERROR {e['path']}: {e['reason']}")
    if doc.get("notes"):
        out.append(f"{len(doc['notes'])} file(s) skipped on purpose (use --json to list them)")
    return "\n".join(out).rstrip() + "\n"
