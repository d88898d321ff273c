"""Build :class:`~dicom_io.frames.FrameHeader` objects from classic and enhanced data sets.

* Classic single-frame images (MR Image Storage, and any other image): one frame per file, all
  facts at the top level of the data set.
* Enhanced MR (PS3.3 A.36.2) and Legacy Converted Enhanced MR (PS3.3 A.36.4): one frame per item
  of the Per-Frame Functional Groups Sequence (5200,9230). Each attribute is looked up in that
  frame's functional group macros first, then in the Shared Functional Groups Sequence
  (5200,9229), then at the top level (PS3.3 C.7.6.16: a functional group is either shared or per
  frame). This covers Plane Position (0020,9113), Plane Orientation (0020,9116), Pixel Measures
  (0028,9110), MR Echo (0018,9114: Effective Echo Time), MR Image Frame Type (0018,9226: Frame Type
  and Complex Image Component), Pixel Value Transformation (0028,9145) and the Unassigned
  Shared/Per-Frame Converted Attributes sequences of the legacy converted objects. Only the
  attributes a later stage uses are converted (:data:`WANTED_KEYWORDS`): this is the hot loop.

Echo numbers: classic files carry EchoNumbers (0018,0086); enhanced files (and Siemens XA exports)
have only an echo time per frame. :func:`assign_echo_numbers` derives the echo index from the
order of the distinct echo times within a series and records that it did so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from dicom_io.errors import DicomInputError
from dicom_io.read.files import HeaderRead, kw_value, raw_value
from dicom_io.read.limits import MAX_FRAMES_PER_FILE
from dicom_io.frames import FrameHeader

ENHANCED_MARKERS = ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence")
#: Echo times closer than this are the same echo (ms).
ECHO_TIME_TOLERANCE_MS = 0.01
ECHO_FROM_TIME_RULE = "derived: order of distinct echo times within the series (no EchoNumbers)"


def _float(v: Any) -> Optional[float]:
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        if not len(v):
            return None
        v = v[0]
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> Optional[int]:
    f = _float(v)
    return None if f is None else int(round(f))


def _floats(v: Any, n: int) -> Optional[tuple[float, ...]]:
    if v is None:
        return None
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n else None


def _strs(v: Any) -> tuple[str, ...]:
    if v is None or v == "":
        return ()
    if isinstance(v, str):
        return tuple(s.strip().upper() for s in v.split("\\"))
    try:
        return tuple(str(s).strip().upper() for s in v)
    except TypeError:
        return (str(v).strip().upper(),)


def _str(v: Any) -> Optional[str]:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


WANTED_KEYWORDS = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "EffectiveEchoTime", "EchoTime", "EchoNumbers", "FrameType", "ComplexImageComponent", "RescaleSlope",
    "RescaleIntercept", "RescaleType",
)
_WANTED_TAGS = {int(tag_for_keyword(k)): k for k in WANTED_KEYWORDS}  # type: ignore[arg-type]


def _flatten_groups(item: Optional[pydicom.Dataset]) -> dict[str, Any]:
    """Keyword -> value of the wanted attributes inside each functional group macro of one item.

    Only public sequences are opened and only :data:`WANTED_KEYWORDS` are converted (private
    blocks and large values stay raw: this is the hot loop for files with hundreds of frames).
    The Unassigned Shared/Per-Frame Converted Attributes sequences of legacy converted objects
    are flattened the same way."""
    flat: dict[str, Any] = {}
    if item is None:
        return flat
    for tag in list(item.keys()):
        if tag.is_private or not (keyword_for_tag(tag) or "").endswith("Sequence"):
            continue
        seq = item[tag].value
        if not seq:
            continue
        sub = seq[0]
        for subtag in sub.keys():
            kw = _WANTED_TAGS.get(int(subtag))
            if kw is not None and kw not in flat:
                flat[kw] = raw_value(sub, subtag)
    return flat


class _Lookup:
    """Per frame, then shared, then top level."""

    def __init__(self, ds: pydicom.Dataset, shared: dict[str, Any], per_frame: dict[str, Any]):
        self.ds = ds
        self.shared = shared
        self.per_frame = per_frame

    def get(self, keyword: str) -> Any:
        if keyword in self.per_frame:
            return self.per_frame[keyword]
        if keyword in self.shared:
            return self.shared[keyword]
        return kw_value(self.ds, keyword)


def is_enhanced(ds: pydicom.Dataset) -> bool:
    return any(k in ds for k in ENHANCED_MARKERS)


def frames_from_header(read: HeaderRead) -> list[FrameHeader]:
    """All frames of one file, as :class:`FrameHeader` objects (no pixel data read).

    Raises :class:`DicomInputError` naming the file when required attributes are missing or the
    declared pixel data cannot hold the frames the header announces."""
    ds = read.dataset
    path = read.path
    for kw in ("SOPInstanceUID", "SeriesInstanceUID", "Rows", "Columns"):
        if kw_value(ds, kw) in (None, ""):
            raise DicomInputError(path, f"missing {kw}; cannot place this image in a series")
    rows, columns = int(kw_value(ds, "Rows")), int(kw_value(ds, "Columns"))
    if rows <= 0 or columns <= 0:
        raise DicomInputError(path, f"Rows x Columns is {rows} x {columns}")
    bits_allocated = int(kw_value(ds, "BitsAllocated", 16) or 16)
    spp = int(kw_value(ds, "SamplesPerPixel", 1) or 1)
    n_frames = int(_int(kw_value(ds, "NumberOfFrames")) or 1)
    if not 1 <= n_frames <= MAX_FRAMES_PER_FILE:
        raise DicomInputError(path, f"refused: NumberOfFrames {n_frames} is outside 1..{MAX_FRAMES_PER_FILE}")
    if bits_allocated not in (8, 16, 32):
        raise DicomInputError(path, f"BitsAllocated {bits_allocated} is not supported (8, 16 or 32)")
    frame_bytes = rows * columns * spp * bits_allocated // 8
    if read.pixel_value_length is not None:
        need = frame_bytes * n_frames
        if read.pixel_value_length < need:
            raise DicomInputError(
                path,
                f"Pixel Data holds {read.pixel_value_length} bytes but Rows {rows} x Columns {columns} x "
                f"{n_frames} frame(s) x {bits_allocated // 8} bytes needs {need}")

    common = dict(
        path=Path(path),
        sop_class_uid=str(kw_value(ds, "SOPClassUID", "")),
        sop_instance_uid=str(kw_value(ds, "SOPInstanceUID")),
        series_instance_uid=str(kw_value(ds, "SeriesInstanceUID")),
        study_instance_uid=str(kw_value(ds, "StudyInstanceUID", "")),
        frame_of_reference_uid=_str(kw_value(ds, "FrameOfReferenceUID")),
        modality=_str(kw_value(ds, "Modality")),
        manufacturer=_str(kw_value(ds, "Manufacturer")),
        model=_str(kw_value(ds, "ManufacturerModelName")),
        software_versions=_software(kw_value(ds, "SoftwareVersions")),
        series_description=_str(kw_value(ds, "SeriesDescription")),
        protocol_name=_str(kw_value(ds, "ProtocolName")),
        image_type=_strs(kw_value(ds, "ImageType")),
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        pixel_representation=int(kw_value(ds, "PixelRepresentation", 0) or 0),
        transfer_syntax_uid=read.transfer_syntax_uid,
        dataset=ds,
        number_of_frames=n_frames,
        samples_per_pixel=spp,
        bits_stored=_int(kw_value(ds, "BitsStored")),
        series_number=_int(kw_value(ds, "SeriesNumber")),
    )

    def offset(i: int) -> Optional[int]:
        return None if read.pixel_value_offset is None else read.pixel_value_offset + i * frame_bytes

    if not is_enhanced(ds):
        look = _Lookup(ds, {}, {})
        return [_frame(common, look, None, offset(0), enhanced=False)]

    shared_seq = kw_value(ds, "SharedFunctionalGroupsSequence")
    shared = _flatten_groups(shared_seq[0] if shared_seq else None)
    per_seq = kw_value(ds, "PerFrameFunctionalGroupsSequence") or []
    if per_seq and len(per_seq) != n_frames:
        raise DicomInputError(
            path, f"Per-Frame Functional Groups Sequence has {len(per_seq)} items but NumberOfFrames is {n_frames}")
    out = []
    for i in range(n_frames):
        per_frame = _flatten_groups(per_seq[i]) if per_seq else {}
        out.append(_frame(common, _Lookup(ds, shared, per_frame), i, offset(i), enhanced=True))
    return out


def _software(v: Any) -> Optional[str]:
    if v is None or v == "":
        return None
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(x) for x in v)
    return str(v)


def _frame(common: dict, look: _Lookup, index: Optional[int], pixel_offset: Optional[int], *, enhanced: bool) -> FrameHeader:
    echo_time = _float(look.get("EffectiveEchoTime")) if enhanced else None
    if echo_time is None:
        echo_time = _float(look.get("EchoTime"))
    echo_number = _int(look.get("EchoNumbers"))
    spacing = _floats(look.get("PixelSpacing"), 2)
    return FrameHeader(
        frame_index=index,
        complex_component=_str(look.get("ComplexImageComponent")),
        echo_number=echo_number,
        echo_time_ms=echo_time,
        position_lps_mm=_floats(look.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(look.get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        pixel_spacing_mm=spacing,  # type: ignore[arg-type]
        slice_thickness_mm=_float(look.get("SliceThickness")),
        rescale_slope=_float(look.get("RescaleSlope")),
        rescale_intercept=_float(look.get("RescaleIntercept")),
        rescale_type=_str(look.get("RescaleType")),
        frame_type=_strs(look.get("FrameType")) if enhanced else (),
        echo_number_source="EchoNumbers" if echo_number is not None else None,
        spacing_between_slices_mm=_float(look.get("SpacingBetweenSlices")),
        pixel_data_offset=pixel_offset,
        **common,
    )


def assign_echo_numbers(frames: Sequence[FrameHeader]) -> None:
    """Fill in ``echo_number`` for frames of one series that have none, from their echo times.

    Distinct echo times (within :data:`ECHO_TIME_TOLERANCE_MS`) of the series are numbered 1, 2, ...
    in increasing order; ``echo_number_source`` records the rule. Frames without an echo time keep
    ``echo_number`` None."""
    missing = [f for f in frames if f.echo_number is None and f.echo_time_ms is not None]
    if not missing:
        return
    times = sorted({round(f.echo_time_ms, 4) for f in frames if f.echo_time_ms is not None})  # type: ignore[arg-type]
    distinct: list[float] = []
    for t in times:
        if not distinct or t - distinct[-1] > ECHO_TIME_TOLERANCE_MS:
            distinct.append(t)
    for f in missing:
        te = f.echo_time_ms
        f.echo_number = 1 + min(range(len(distinct)), key=lambda k: abs(distinct[k] - te))  # type: ignore[operator]
        f.echo_number_source = ECHO_FROM_TIME_RULE


def frames_from_headers(reads: Iterable[HeaderRead]) -> tuple[list[FrameHeader], list[tuple[Path, str]]]:
    """Frames of many files; files that fail give (path, reason) instead of a traceback."""
    frames: list[FrameHeader] = []
    failed: list[tuple[Path, str]] = []
    for r in reads:
        try:
            frames.extend(frames_from_header(r))
        except DicomInputError as exc:
            failed.append((r.path, exc.problem))
        except Exception as exc:  # malformed values in a real-world header
            failed.append((r.path, f"unusable header ({type(exc).__name__}: {exc})"))
    return frames, failed
