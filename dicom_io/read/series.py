"""Group frames into series and stacks, and load a stack as a :class:`~dicom_io.read.volume.Volume`.

``scan(paths)`` reads every header once (no pixel data), builds one :class:`FrameHeader` per
classic instance or enhanced frame, groups frames by SeriesInstanceUID (0020,000E), then into
stacks by (component, echo): one series may hold magnitude and phase of several echoes (Philips
does). The component and the vendor come from the vendor codec
(:func:`dicom_io.vendors.codec_for`); when no tag decides, the stored pixels decide
(:func:`dicom_io.vendors.component_from_pixels`) and the stack records that fallback.
Each stack is ordered along the slice normal and checked (:mod:`dicom_io.read.geometry`); a stack
that cannot become a volume keeps its header facts and says why in ``problems``.

``load_volume(stack)`` reads the stored pixels straight into one array (:mod:`dicom_io.read.pixels`)
and converts them with the codec: phase to radians in [-pi, pi), magnitude rescaled, as float32.

Example::

    result = scan(["/data/study"])
    for series in result.series:
        for stack in series.stacks:
            if stack.can_load:
                vol = load_volume(stack)
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from dicom_io.convention import ConventionRules, resolve_convention
from dicom_io.read import geometry, pixels
from dicom_io.errors import DicomInputError, FileProblem
from dicom_io.frames import FrameHeader
from dicom_io.read.files import scan_files
from dicom_io.read.headers import assign_echo_numbers, frames_from_headers, is_enhanced
from dicom_io.read.lossy import lossy_compression
from dicom_io.read.volume import Volume
from dicom_io.vocabulary import Handedness, PhaseKind

log = logging.getLogger(__name__)


@dataclass
class StackInfo:
    """One (component, echo) of one series: its frames in slice order and its geometry."""

    series_instance_uid: str
    component: str
    component_source: str
    echo_number: Optional[int]
    echo_number_source: Optional[str]
    echo_time_ms: Optional[float]
    frames: list[FrameHeader] = field(repr=False)
    vendor: str = "unknown"
    codec: Any = field(default=None, repr=False)
    affine_lps: Optional[np.ndarray] = field(default=None, repr=False)
    slice_spacing_mm: Optional[float] = None
    n_positions: int = 0
    problems: list[str] = field(default_factory=list)
    # what the stack measures (PhaseKind): echo phase, a phase difference of two echoes (read at
    # the effective echo time dTE), or a field map in Hz; None for plain magnitude stacks
    kind: Optional[str] = None
    kind_source: Optional[str] = None
    effective_echo_time_ms: Optional[float] = None
    field_strength_t: Optional[float] = None   # MagneticFieldStrength (0018,0087), None when absent
    lossy_compression: Optional[str] = None    # why its images count as lossy-compressed (dicom_io.read.lossy), or None

    @property
    def n_slices(self) -> int:
        return len(self.frames)

    @property
    def rows(self) -> int:
        return self.frames[0].rows

    @property
    def columns(self) -> int:
        return self.frames[0].columns

    @property
    def pixel_spacing_mm(self) -> Optional[tuple[float, float]]:
        return self.frames[0].pixel_spacing_mm

    @property
    def can_load(self) -> bool:
        return self.affine_lps is not None and not self.problems

    @property
    def label(self) -> str:
        echo = f" echo {self.echo_number}" if self.echo_number is not None else ""
        return f"{self.component}{echo}"


@dataclass
class SeriesInfo:
    """Header facts of one series, its stacks and what is wrong with it."""

    series_instance_uid: str
    study_instance_uid: str
    modality: Optional[str]
    vendor: str
    vendor_source: str
    manufacturer: Optional[str]
    model: Optional[str]
    software_versions: Optional[str]
    sop_class: str                      # classic | enhanced
    sop_class_uid: str
    series_description: Optional[str]
    series_number: Optional[int]
    frame_of_reference_uid: Optional[str]
    n_files: int
    n_frames: int
    stacks: list[StackInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    phase_convention: Handedness = Handedness.UNKNOWN   # resolved once, by scan (site rules included)
    convention_source: str = "not resolved"
    codec: Any = field(default=None, repr=False)

    @property
    def components(self) -> set[str]:
        return {s.component for s in self.stacks}


@dataclass
class ScanResult:
    series: list[SeriesInfo]
    problems: list[FileProblem]
    notes: list[str]


def _codec_for(frame: FrameHeader):
    from dicom_io.vendors import codec_for  # provided by the vendor codecs (H2)
    return codec_for(frame)


def _component_from_pixels(stored: np.ndarray) -> tuple[str, str]:
    from dicom_io.vendors import component_from_pixels
    return component_from_pixels(stored)


def scan(paths: Iterable[Union[str, Path]], *, rules: Optional[ConventionRules] = None,
         limit_bytes: Optional[int] = None) -> ScanResult:
    """Find DICOM under ``paths`` and describe every series (no pixel data read unless a component
    can only be decided from pixels).

    ``rules``: the site's phase-convention rules (:func:`dicom_io.convention.load_rules`), applied
    here, once per series: ``SeriesInfo.phase_convention`` and ``convention_source`` are the answer
    ``inspect``, ``analyze`` and the node all report; nothing downstream resolves it again."""
    files = scan_files(paths, limit_bytes=limit_bytes)
    frames, failed = frames_from_headers(files.headers)
    problems = list(files.problems) + [FileProblem(str(p), reason) for p, reason in failed]

    notes = list(files.notes)
    by_series: dict[str, list[FrameHeader]] = {}
    seen: dict[tuple[str, Optional[int]], FrameHeader] = {}
    for f in frames:
        key = (f.sop_instance_uid, f.frame_index)
        first = seen.get(key)
        if first is not None:  # the same instance twice (e.g. received twice): read it once
            if f.path != first.path and f.frame_index in (None, 0):
                notes.append(f"skipped {f.path}: same SOP Instance UID as {first.path} (duplicate copy)")
            continue
        seen[key] = f
        by_series.setdefault(f.series_instance_uid, []).append(f)

    series = []
    for uid, fs in by_series.items():
        built = _build_series_isolated(uid, fs, rules, problems)
        if built is not None:
            series.append(built)
    series.sort(key=lambda s: (s.study_instance_uid, s.series_number if s.series_number is not None else 1 << 30,
                               s.series_instance_uid))
    return ScanResult(series, problems, notes)


def error_text(exc: BaseException, limit: int = 300) -> str:
    """One line naming an unexpected exception (pydicom's messages run to several sentences)."""
    if isinstance(exc, DicomInputError):
        return exc.problem
    text = " ".join(str(exc).split()) or "no message"
    text = text.split(" To replace this error", 1)[0]   # pydicom's advice on its config, not ours
    where = ""
    found = _PYDICOM_ELEMENT.search(text)   # pydicom names the element last: put it first
    if found:
        where = f"element {found.group(1)} as VR {found.group(2)}: "
        text = text[:found.start()].strip()
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{where}{type(exc).__name__}: {text}"


_PYDICOM_ELEMENT = re.compile(r"This occurred while trying to parse (\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)) "
                              r"according to VR '(\w+)'\.?")


def _build_series_isolated(uid: str, frames: list[FrameHeader], rules: Optional[ConventionRules],
                           problems: list[FileProblem]) -> Optional[SeriesInfo]:
    """:func:`_build_series`, with what goes wrong kept to the file (a header value no codec can
    read: the file goes to ``problems``, the series is built without it) or to the series (listed
    with its header facts and the reason), never to the other series of the scan."""
    bad_paths: dict[str, str] = {}
    codec = None
    for f in frames:   # the codec is chosen on the first frame whose header it can read
        try:
            codec, vendor_source = _codec_for(f)
            break
        except Exception as exc:
            bad_paths[str(f.path)] = f"unreadable header value: {error_text(exc)}"
    good: list[FrameHeader] = []
    decided: list[tuple[str, str]] = []
    for f in frames:   # the values a codec reads per frame: a bad one names its file
        if codec is None or str(f.path) in bad_paths:
            continue
        try:
            decided.append(codec.component(f))
            good.append(f)
        except Exception as exc:
            bad_paths[str(f.path)] = f"unreadable header value: {error_text(exc)}"
    for path, reason in bad_paths.items():
        log.info("unreadable file %s: %s", path, reason)
        problems.append(FileProblem(path, reason))
    kept = [k for k, f in enumerate(good) if str(f.path) not in bad_paths]   # (a multi-frame file fails whole)
    good, decided = [good[k] for k in kept], [decided[k] for k in kept]
    if not good:
        return None
    try:
        return _build_series(uid, good, rules, codec, vendor_source, decided)
    except Exception as exc:   # this series only: listed with its header facts and why
        log.warning("series %s could not be described: %s", uid, error_text(exc))
        log.debug("series %s", uid, exc_info=True)
        return _unreadable_series(uid, good, f"series could not be described: {error_text(exc)}")


def _unreadable_series(uid: str, frames: list[FrameHeader], problem: str) -> SeriesInfo:
    f0 = frames[0]
    return SeriesInfo(
        series_instance_uid=uid, study_instance_uid=f0.study_instance_uid, modality=f0.modality,
        vendor="unknown", vendor_source="not decided (series unreadable)", manufacturer=f0.manufacturer,
        model=f0.model, software_versions=f0.software_versions, sop_class="classic" if f0.frame_index is None
        else "enhanced", sop_class_uid=f0.sop_class_uid, series_description=f0.series_description,
        series_number=f0.series_number, frame_of_reference_uid=f0.frame_of_reference_uid,
        n_files=len({str(f.path) for f in frames}), n_frames=len(frames), stacks=[], problems=[problem],
        convention_source="not resolved (series unreadable)")


def _build_series(uid: str, frames: list[FrameHeader], rules: Optional[ConventionRules], codec: Any,
                  vendor_source: str, decided: list[tuple[str, str]]) -> SeriesInfo:
    """One series from its frames, the codec chosen for it and each frame's (component, source)."""
    f0 = frames[0]
    assign_echo_numbers(frames)
    problems: list[str] = []
    vendor = getattr(codec, "vendor", "unknown")
    undecided = [i for i, (comp, _) in enumerate(decided) if comp == "unknown"]
    if undecided:
        problems.extend(_components_from_pixels(frames, undecided, decided))

    keyed: dict[tuple[str, Optional[int]], list[FrameHeader]] = {}
    sources: dict[tuple[str, Optional[int]], list[str]] = {}
    for f, (comp, src) in zip(frames, decided):
        key = (comp, f.echo_number)
        keyed.setdefault(key, []).append(f)
        sources.setdefault(key, []).append(src)

    stacks: list[StackInfo] = []
    comp_order = {"magnitude": 0, "phase": 1, "real": 2, "imaginary": 3}
    for key in sorted(keyed, key=lambda k: (comp_order.get(k[0], 9), k[1] if k[1] is not None else 0)):
        fs = keyed[key]
        srcs = _summarised_sources(sources[key])
        geo = geometry.check_stack(fs)
        tes = sorted({round(f.echo_time_ms, 4) for f in fs if f.echo_time_ms is not None})
        stack_problems = list(geo.problems)
        if len(tes) > 1:
            stack_problems.append(f"echo times differ within echo {key[1]}: {tes} ms")
        lossy = lossy_compression(fs)
        if lossy and key[0] == "phase":
            stack_problems.append(f"lossy-compressed ({lossy}): a lossy codec alters wrapped phase and the small "
                                  f"dipole patterns the border slices are read on; send the original (lossless) phase")
        stack = StackInfo(
            series_instance_uid=uid, component=key[0], component_source="; ".join(srcs),
            echo_number=key[1], echo_number_source=fs[0].echo_number_source,
            echo_time_ms=tes[0] if tes else None, frames=geo.frames, vendor=vendor, codec=codec,
            affine_lps=geo.affine_lps if not stack_problems else None,
            slice_spacing_mm=geo.slice_spacing_mm, n_positions=geo.n_positions, problems=stack_problems,
            field_strength_t=_field_strength_t(fs), lossy_compression=lossy)
        _set_kind(stack)
        stacks.append(stack)
        problems.extend(f"{stack.label}: {p}" for p in stack_problems)

    # The convention is the phase's: judged on the first phase frame (its ImageType says P), else f0.
    phase_frames = [st.frames[0] for st in stacks if st.component == "phase" and st.frames]
    convention, convention_source = resolve_convention(phase_frames[0] if phase_frames else f0, vendor, rules)
    return SeriesInfo(
        series_instance_uid=uid, study_instance_uid=f0.study_instance_uid, modality=f0.modality,
        vendor=vendor, vendor_source=vendor_source, manufacturer=f0.manufacturer, model=f0.model,
        software_versions=f0.software_versions,
        sop_class="enhanced" if is_enhanced(f0.dataset) else "classic", sop_class_uid=f0.sop_class_uid,
        series_description=f0.series_description, series_number=f0.series_number,
        frame_of_reference_uid=f0.frame_of_reference_uid,
        n_files=len({str(f.path) for f in frames}), n_frames=len(frames), stacks=stacks, problems=problems,
        phase_convention=convention, convention_source=convention_source, codec=codec)


def _set_kind(stack: StackInfo) -> None:
    """Fill ``stack.kind`` (GUIDE "field-map series"): the codec names phase differences and field
    maps (``codec.phase_kind(frames)``); any other phase stack is an echo phase read at its TE."""
    ask = getattr(stack.codec, "phase_kind", None)
    got = ask(stack.frames) if ask is not None and stack.frames else None
    if got is not None and (stack.component == "phase" or got[0] == PhaseKind.FIELD_MAP_HZ):
        stack.kind, stack.kind_source, stack.effective_echo_time_ms = got
    elif stack.component == "phase":
        stack.kind, stack.kind_source = PhaseKind.ECHO_PHASE, "no field-map marker"
        stack.effective_echo_time_ms = stack.echo_time_ms


PIXEL_CLASSIFY_CHUNK = 64


def _components_from_pixels(frames: list[FrameHeader], undecided: list[int],
                            decided: list[tuple[str, str]]) -> list[str]:
    """Last resort (GUIDE): decide magnitude/phase from each frame's stored pixels. Frames are read
    in chunks (a multi-frame compressed file is decoded once per chunk, not once per frame).
    Fills ``decided`` in place; returns problems."""
    problems: list[str] = []
    for start in range(0, len(undecided), PIXEL_CLASSIFY_CHUNK):
        chunk = undecided[start:start + PIXEL_CLASSIFY_CHUNK]
        try:
            stored = pixels.read_stored([frames[i] for i in chunk])
            arrays = list(stored)
        except DicomInputError:
            arrays = []
            for i in chunk:  # frames of different sizes/types: one at a time
                try:
                    arrays.append(pixels.read_frame(frames[i]))
                except DicomInputError as exc:
                    problems.append(f"component undecided and pixels unreadable: {exc}")
                    return problems
        for i, arr in zip(chunk, arrays):
            comp, src = _component_from_pixels(arr)
            decided[i] = (comp, f"{src} (no header tag decided)")
    return problems


def read_stored(stack: StackInfo, *, limit_bytes: Optional[int] = None, threads: Optional[int] = None) -> np.ndarray:
    """The stack's stored pixel values (slice, row, column), in slice order, before any conversion."""
    return pixels.read_stored(stack.frames, limit_bytes=limit_bytes, threads=threads)


def load_volume(stack: StackInfo, *, limit_bytes: Optional[int] = None, threads: Optional[int] = None) -> Volume:
    """Read one stack into a :class:`Volume` (phase: float32 radians in [-pi, pi); magnitude:
    float32 where the vendor rescales, else its stored integers, which already are vendor units).

    Raises :class:`DicomInputError` naming the file when the stack cannot become a volume
    (geometry problems), the pixels claim more than the size limit, or the pixel data cannot be
    read or decoded."""
    if not stack.can_load:
        why = "; ".join(stack.problems) or "no usable geometry"
        raise DicomInputError(stack.frames[0].path if stack.frames else None,
                              f"series {stack.series_instance_uid} {stack.label} cannot become a volume: {why}")
    stored = read_stored(stack, limit_bytes=limit_bytes, threads=threads)
    codec = stack.codec
    phase_scaling = None
    try:
        if stack.component == "phase":
            data, phase_scaling = codec.phase_to_radians(stored, stack.frames)
        else:
            data = codec.magnitude(stored, stack.frames)
    except DicomInputError as exc:
        raise DicomInputError(exc.path or stack.frames[0].path, exc.problem) from None
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise DicomInputError(stack.frames[0].path, f"{stack.vendor} codec could not convert {stack.label} of series "
                                                    f"{stack.series_instance_uid}: {exc}") from None
    del stored
    if not np.issubdtype(data.dtype, np.integer):   # unscaled magnitude stays in its stored integers
        data = np.asarray(data, dtype=np.float32)
    f0 = stack.frames[0]
    return Volume(
        series_instance_uid=stack.series_instance_uid, study_instance_uid=f0.study_instance_uid,
        frame_of_reference_uid=f0.frame_of_reference_uid, vendor=stack.vendor, component=stack.component,
        component_source=stack.component_source, echo_number=stack.echo_number, echo_time_ms=stack.echo_time_ms,
        data=data, affine_lps=np.array(stack.affine_lps, dtype=float), frames=list(stack.frames),
        phase_scaling=phase_scaling, field_strength_t=stack.field_strength_t)


def _field_strength_t(frames: list[FrameHeader]) -> Optional[float]:
    """MagneticFieldStrength (0018,0087) in tesla of the stack's first frame that has a usable one
    (a top-level attribute in classic and enhanced objects); None when absent, empty or not positive."""
    for f in frames:
        ds = f.dataset
        value = None if ds is None else ds.get("MagneticFieldStrength", None)
        try:
            t = float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            t = None
        if t is not None and np.isfinite(t) and t > 0:
            return t
    return None


def _summarised_sources(per_frame: list[str]) -> list[str]:
    """The distinct rules that decided a stack's frames, once each: a per-frame pixel-statistics
    rule carries that frame's numbers, so 60 frames would print 60 near-identical texts; keep the
    first text of each rule (the part before its numbers) and count the other frames it decided."""
    by_rule: dict[str, list[str]] = {}
    for src in dict.fromkeys(per_frame):
        by_rule.setdefault(src.split(" (", 1)[0], []).append(src)
    return [texts[0] if len(texts) == 1 else f"{texts[0]} (+{len(texts) - 1} more frames by the same rule)"
            for texts in by_rule.values()]

