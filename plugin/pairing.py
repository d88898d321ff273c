"""Pair the magnitude and phase stacks of one acquisition.

A GRE acquisition arrives as one series holding magnitude and phase (Philips, Siemens XA
enhanced), or as separate magnitude and phase series (GE, Siemens classic, Canon), possibly with
several echoes. Two stacks belong together when they share the study, the frame of reference
(when both carry one), the geometry (rows, columns, slices, pixel spacing, first position and
orientation when known) and the echo (echo number, else echo time within 0.01 ms).

Field-map series (GUIDE): a phase *difference* of two echoes (Siemens ``gre_field_mapping``; the
reader sets ``stack.kind`` and the effective echo time dTE) pairs like a phase at its later echo
and is read at dTE (the note says so); one whose dTE is unknown, and field maps in Hz (GE B0
maps), are skipped with that reason.

Of a multi-echo acquisition one echo is analysed: the one asked for (``echo``), else the latest
echo that has both a magnitude and a phase stack (longest TE: most susceptibility contrast; the
method paper read TE 25 ms). Every series that cannot take part says why, in ``skipped``.

The scanner-side objects (``dicom_io.read.series.SeriesInfo`` and its stacks) are read through their
attributes only, so this module stays independent of their exact classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


@dataclass
class Pair:
    magnitude: Any                  # the stack handed to dicom_io.read.series.load_volume
    phase: Any
    magnitude_series_uid: str
    phase_series_uid: str
    study_instance_uid: str
    echo_number: Optional[int]
    echo_time_ms: Optional[float]
    note: str
    earlier: list = field(default_factory=list)   # (magnitude, phase, echo_number, echo_time_ms), later TE first


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(obj, n, None)
        if v is not None:
            return v
    return default


def _first_frame(stack: Any) -> Any:
    frames = _get(stack, "frames", default=None)
    return frames[0] if frames else None


def _geometry(stack: Any) -> tuple:
    frame = _first_frame(stack)
    rows = _get(stack, "rows", default=_get(frame, "rows"))
    cols = _get(stack, "columns", default=_get(frame, "columns"))
    n = _get(stack, "n_slices", default=len(_get(stack, "frames", default=[]) or []) or None)
    spacing = _get(stack, "pixel_spacing_mm", default=_get(frame, "pixel_spacing_mm"))
    spacing = tuple(round(float(v), 3) for v in spacing) if spacing else None
    return rows, cols, n, spacing


def _position(stack: Any) -> Optional[tuple]:
    frames = _get(stack, "frames", default=None)
    if not frames:
        return None
    pos = [f.position_lps_mm for f in frames if getattr(f, "position_lps_mm", None) is not None]
    if not pos:
        return None
    # the set of positions (slice order may differ between series): its bounding corners
    import numpy as np
    arr = np.asarray(pos, float)
    return tuple(np.round(arr.min(axis=0), 1)) + tuple(np.round(arr.max(axis=0), 1))


def _echo_key(stack: Any) -> tuple:
    return (_get(stack, "echo_number"), None if _get(stack, "echo_time_ms") is None
            else round(float(_get(stack, "echo_time_ms")), 2))


def _same_echo(a: Any, b: Any) -> bool:
    ea, ta = _echo_key(a)
    eb, tb = _echo_key(b)
    if ta is not None and tb is not None:
        return abs(ta - tb) <= 0.01
    if ea is not None and eb is not None:
        return ea == eb
    return True   # nothing to tell them apart: same acquisition by geometry


def _z_text(pos: tuple) -> str:
    return f"{pos[2]:g}..{pos[5]:g} mm"


def _mismatch(ms: Any, m: Any, ps: Any, p: Any) -> Optional[str]:
    """Why magnitude stack ``m`` (of series ``ms``) and phase stack ``p`` (of ``ps``) are not one
    acquisition's pair, in words; None when they are."""
    if _get(ms, "study_instance_uid") != _get(ps, "study_instance_uid"):
        return "another study"
    fa = _get(ms, "frame_of_reference_uid", default=_get(_first_frame(m), "frame_of_reference_uid"))
    fb = _get(ps, "frame_of_reference_uid", default=_get(_first_frame(p), "frame_of_reference_uid"))
    if fa and fb and fa != fb:
        return "another frame of reference"
    ga, gb = _geometry(m), _geometry(p)
    if ga != gb:
        words = ("rows", "columns", "slices", "pixel spacing (mm)")
        return "; ".join(f"{w} {a} (magnitude) against {b} (phase)" for w, a, b in zip(words, ga, gb) if a != b)
    aa, ab = _get(m, "affine_lps"), _get(p, "affine_lps")
    if aa is not None and ab is not None:
        import numpy as np
        if np.shape(aa) != np.shape(ab) or not np.allclose(aa, ab, atol=0.05):
            return "a different position or orientation of the slices"
    pa, pb = _position(m), _position(p)
    if pa is not None and pb is not None and max(abs(x - y) for x, y in zip(pa, pb)) > 0.5:
        return f"slices at z {_z_text(pa)} (magnitude) against {_z_text(pb)} (phase)"
    if not _same_echo(m, p):
        (ea, ta), (eb, tb) = _echo_key(m), _echo_key(p)
        return f"echo {ea} (TE {ta} ms, magnitude) against echo {eb} (TE {tb} ms, phase)"
    return None


def _compatible(ms: Any, m: Any, ps: Any, p: Any) -> bool:
    return _mismatch(ms, m, ps, p) is None


def _nearest_mismatch(ms: Any, m: Any, others: Sequence[tuple[Any, Any]], what: str) -> str:
    """Why no stack of ``others`` (candidate partners in the same study) pairs with ``m``: the
    reason for the most plausible one, or '' when the study has none."""
    same_study = [(s, st) for s, st in others if _get(s, "study_instance_uid") == _get(ms, "study_instance_uid")]
    if not same_study:
        return ""
    s, st = min(same_study, key=lambda c: _pair_cost(ms, c[0]) if what == "phase" else _pair_cost(c[0], ms))
    why = _mismatch(ms, m, s, st) if what == "phase" else _mismatch(s, st, ms, m)
    if why is None:   # compatible but taken by a better match
        return f"; the {what} stack that matches it was paired with another series"
    where = "the same series" if s is ms else f"series {_get(s, 'series_number', default=_get(s, 'series_instance_uid'))}"
    return f"; the nearest {what} stack ({where}) differs: {why}"


def _pair_cost(mag_series: Any, phase_series: Any) -> float:
    if mag_series is phase_series:
        return 0.0
    a, b = _get(mag_series, "series_number"), _get(phase_series, "series_number")
    if a is None or b is None:
        return 500.0
    diff = int(b) - int(a)
    return float(diff) if diff > 0 else 1000.0 + abs(diff)


def _series_problem(series: Any) -> Optional[str]:
    problems = _get(series, "problems", default=None)
    if problems:
        return "; ".join(str(getattr(p, "reason", p)) for p in problems)
    return None


def _because(series: Any) -> str:
    """The series' own problems (a gap, a missing file), which usually explain a missing partner."""
    problem = _series_problem(series)
    return f" ({problem})" if problem else ""


def pair_series(series_list: Sequence[Any], *, echo: Optional[int] = None) -> tuple[list[Pair], list[dict]]:
    """(pairs, skipped) for the series of one scan. ``skipped``: ``{"series_instance_uid", "reason"}``."""
    mags: list[tuple[Any, Any]] = []
    phases: list[tuple[Any, Any]] = []
    skipped: list[dict] = []
    for s in series_list:
        uid = _get(s, "series_instance_uid", default="")
        problem = _series_problem(s)
        stacks = list(_get(s, "stacks", default=[]) or [])
        if problem and not stacks:
            skipped.append({"series_instance_uid": uid, "reason": f"cannot be read as a volume: {problem}"})
            continue
        field_maps = [st for st in stacks if str(_get(st, "kind", default="")) == "field map (Hz)"]
        if field_maps:
            skipped.append({"series_instance_uid": uid,
                            "reason": f"field map in Hz, not a GRE phase ({_get(field_maps[0], 'kind_source')}): "
                                      f"the border-slice method needs a magnitude and phase at an echo time"})
            continue
        comps = {_get(st, "component", default="unknown") for st in stacks}
        if not ({"magnitude", "phase"} & comps):
            skipped.append({"series_instance_uid": uid,
                            "reason": f"no magnitude or phase images (components: {', '.join(sorted(comps)) or 'none'})"})
            continue
        for st in stacks:
            c = _get(st, "component")
            if c == "magnitude":
                mags.append((s, st))
            elif c == "phase":
                if str(_get(st, "kind", default="")) == "phase difference" and _get(st, "effective_echo_time_ms") is None:
                    skipped.append({"series_instance_uid": uid,
                                    "reason": f"phase difference of two echoes with unknown echo-time difference "
                                              f"({_get(st, 'kind_source')}): cannot be read as a phase at one TE"})
                    continue
                phases.append((s, st))
    # Candidate (magnitude, phase) matches. Several acquisitions of one study can share geometry
    # and echo times, so each phase stack takes the most plausible magnitude stack: the same
    # series first (one-series vendors), else the series numbered just before it (vendors that
    # write the phase series right after its magnitude series), else the nearest series number;
    # matches are assigned greedily, best first, each magnitude stack once.
    candidates = []
    for pi, (ps, p) in enumerate(phases):
        for mi, (ms, m) in enumerate(mags):
            if _compatible(ms, m, ps, p):
                candidates.append((_pair_cost(ms, ps), pi, mi))
    candidates.sort(key=lambda c: c[0])
    taken_m: set[int] = set()
    taken_p: set[int] = set()
    groups: dict[tuple[str, str], list[tuple[Any, Any, Any, Any]]] = {}
    used_mag_series: set[str] = set()
    used_phase_series: set[str] = set()
    for _, pi, mi in candidates:
        if pi in taken_p or mi in taken_m:
            continue
        taken_p.add(pi)
        taken_m.add(mi)
        (ps, p), (ms, m) = phases[pi], mags[mi]
        key = (_get(ms, "series_instance_uid"), _get(ps, "series_instance_uid"))
        groups.setdefault(key, []).append((ms, m, ps, p))
    pairs: list[Pair] = []
    for (muid, puid), cands in groups.items():
        def echo_order(c):
            e, t = _echo_key(c[3])
            return (t if t is not None else -1.0, e if e is not None else -1)
        cands.sort(key=echo_order)
        chosen = cands[-1]
        how = "latest echo with magnitude and phase"
        if echo is not None:
            wanted = [c for c in cands if _get(c[3], "echo_number") == echo]
            if not wanted and 1 <= echo <= len(cands):
                wanted = [cands[echo - 1]]    # echo numbers absent (Siemens XA): n-th by echo time
            if not wanted:
                skipped.append({"series_instance_uid": puid,
                                "reason": f"echo {echo} not found (echoes: {len(cands)})"})
                continue
            chosen = wanted[0]
            how = f"echo {echo} as requested"
        ms, m, ps, p = chosen
        en, te = _echo_key(p)
        earlier = [] if echo is not None else [(c[1], c[3]) + _echo_key(c[3]) for c in reversed(cands[:-1])]
        used_mag_series.add(muid)
        used_phase_series.add(puid)
        kind = ""
        if str(_get(p, "kind", default="")) == "phase difference":
            kind = (f"; the phase is a phase difference of two echoes, read as a phase at the echo-time "
                    f"difference dTE {_get(p, 'effective_echo_time_ms'):g} ms ({_get(p, 'kind_source')})")
        pairs.append(Pair(m, p, muid, puid, _get(ps, "study_instance_uid", default=""), en, te,
                          f"paired magnitude {muid} with phase {puid}: {how} (echo {en}, TE {te} ms) "
                          f"of {len(cands)} paired echo(es){kind}", earlier))
    for s, m in mags:
        uid = _get(s, "series_instance_uid", default="")
        if uid not in used_mag_series and uid not in used_phase_series and not any(d["series_instance_uid"] == uid for d in skipped):
            skipped.append({"series_instance_uid": uid, "reason": "no phase series found for this magnitude series"
                            + _because(s) + _nearest_mismatch(s, m, phases, "phase")})
    for s, p in phases:
        uid = _get(s, "series_instance_uid", default="")
        if uid not in used_phase_series and not any(d["series_instance_uid"] == uid for d in skipped):
            skipped.append({"series_instance_uid": uid, "reason": "no magnitude series found for this phase series"
                            + _because(s) + _nearest_mismatch(s, p, mags, "magnitude")})
    return pairs, skipped
