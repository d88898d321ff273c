"""Rules every vendor codec shares: public component tags, private-tag lookup, rescale and the
unit inference for phase.

References: DICOM PS3.3 C.7.6.1.1.2 (Image Type), C.8.13.3.1.1 / C.8.16.2 (Complex Image
Component, MR Image Frame Type), C.7.6.16.2.9 (Pixel Value Transformation), C.11.1.1.2
(Rescale Type). Vendor units: ``../shared/vendor_dicom/MANIFEST.md`` (measured on real files).

Every function returns, beside its value, a short human-readable *source* naming the tag or
rule that decided, so ``inspect`` and the SR can say why.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pydicom
from pydicom.tag import Tag

from dicom_io.errors import DicomInputError
from dicom_io.phase import wrap_rad
from dicom_io.frames import FrameHeader

PI32 = np.float32(np.pi)

#: ImageType / FrameType tokens (value 3 onwards) that name a complex component.
IMAGE_TYPE_TOKENS = {
    "M": "magnitude", "MAGNITUDE": "magnitude",
    "P": "phase", "PHASE": "phase",
    "R": "real", "REAL": "real",
    "I": "imaginary", "IMAGINARY": "imaginary",
}

#: ComplexImageComponent (0008,9208) defined terms (PS3.3 C.8.13.3.1.1); MIXED decides nothing.
COMPLEX_COMPONENT_TERMS = {
    "MAGNITUDE": "magnitude", "PHASE": "phase", "REAL": "real", "IMAGINARY": "imaginary",
}

# Weak public fallback: words in SeriesDescription / ProtocolName (anonymizers may remove both).
_DESC_PHASE = re.compile(r"(?i)(?:^|[^a-z])(phase|pha|ph|filt(?:ered)?[_ ]?phase)(?:[^a-z]|$)")
_DESC_MAG = re.compile(r"(?i)(?:^|[^a-z])(mag|magn|magnitude)(?:[^a-z]|$)")


# ----------------------------------------------------------------------------------------------
# Private tags
# ----------------------------------------------------------------------------------------------
def private_value(ds: Optional[pydicom.Dataset], group: int, creator: str | Iterable[str],
                  element_offset: int, *, creators_from: Optional[pydicom.Dataset] = None) -> tuple[object, str] | None:
    """Value of private element (group, xx<offset>) reserved by ``creator`` in ``ds``.

    ``element_offset`` is the low byte (e.g. 0x2F for GE (0043,102F)). Returns (value, creator)
    or None when the block or the element is absent. Creator names are compared stripped and
    case-insensitively (PS3.5 7.8.1 reserves blocks by creator, not by fixed element numbers).
    """
    if ds is None:
        return None
    creators = {creator.strip().upper()} if isinstance(creator, str) else {c.strip().upper() for c in creator}
    for source in ((ds, creators_from) if creators_from is not None else (ds,)):
        # ``creators_from``: a sequence item that carries private elements without its own creator
        # elements (seen in vendor per-frame items) uses the enclosing data set's reservations.
        for block in range(0x10, 0x100):
            tag = Tag(group, block)
            if tag not in source:
                if block > 0x20:     # blocks are allocated from 0x10 upwards; stop after a short gap
                    break
                continue
            val = source[tag].value
            if isinstance(val, bytes):
                val = val.decode("ascii", "replace")
            if str(val).strip().strip("\x00").upper() in creators:
                etag = Tag(group, (block << 8) | element_offset)
                if etag in ds:
                    return ds[etag].value, str(val).strip()
    return None


def private_creators(ds: Optional[pydicom.Dataset]) -> list[tuple[str, str]]:
    """All private creator strings of ``ds`` (top level only) as (tag text, creator)."""
    out: list[tuple[str, str]] = []
    if ds is None:
        return out
    for tag in ds.keys():
        if tag.group & 1 and 0x10 <= tag.element <= 0xFF:
            val = ds[tag].value
            if isinstance(val, bytes):
                val = val.decode("ascii", "replace")
            if isinstance(val, str):
                out.append((f"({tag.group:04X},{tag.element:04X})", val.strip().strip("\x00")))
    return out


def as_int(value: object) -> Optional[int]:
    """An SS/US/IS private value that may arrive as bytes (implicit VR) -> int."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        if len(value) >= 2:
            return int(np.frombuffer(bytes(value[:2]), dtype="<i2")[0])
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return as_int(value[0]) if len(value) else None
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return None


def as_float(value: object) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        if len(value) == 4:
            return float(np.frombuffer(bytes(value), dtype="<f4")[0])
        if len(value) == 8:
            return float(np.frombuffer(bytes(value), dtype="<f8")[0])
        try:
            return float(value.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return as_float(value[0]) if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def as_text(value: object) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().strip("\x00").strip()


def per_frame_item(frame: FrameHeader) -> Optional[pydicom.Dataset]:
    """The frame's item of PerFrameFunctionalGroupsSequence (enhanced), else None."""
    if frame.frame_index is None:
        return None
    seq = frame.dataset.get("PerFrameFunctionalGroupsSequence") if frame.dataset is not None else None
    if not seq or frame.frame_index >= len(seq):
        return None
    return seq[frame.frame_index]


def shared_item(frame: FrameHeader) -> Optional[pydicom.Dataset]:
    seq = frame.dataset.get("SharedFunctionalGroupsSequence") if frame.dataset is not None else None
    return seq[0] if seq else None


# ----------------------------------------------------------------------------------------------
# Public component rules
# ----------------------------------------------------------------------------------------------
def component_from_image_type(values: Sequence[str], attr: str) -> tuple[str, str] | None:
    """Component named by ImageType / FrameType values 3 onwards (PS3.3 C.7.6.1.1.2 lets vendors
    put M/P there: Siemens ``ORIGINAL\\PRIMARY\\P\\ND``, Philips ``...\\PHASE MAP\\P\\FFE``).
    Conflicting tokens decide nothing."""
    found: dict[str, str] = {}
    for i, raw in enumerate(values):
        if i < 2:
            continue
        tok = str(raw).strip().upper()
        if tok in IMAGE_TYPE_TOKENS:
            found.setdefault(IMAGE_TYPE_TOKENS[tok], f"{attr}[{i}]={tok}")
    if len(found) == 1:
        comp, src = next(iter(found.items()))
        return comp, src
    return None


def component_from_complex(frame: FrameHeader) -> tuple[str, str] | None:
    cc = (frame.complex_component or "").strip().upper()
    if cc in COMPLEX_COMPONENT_TERMS:
        return COMPLEX_COMPONENT_TERMS[cc], f"ComplexImageComponent={cc}"
    return None


def component_from_description(frame: FrameHeader) -> tuple[str, str] | None:
    """Weakest public rule: a phase/magnitude word in SeriesDescription or ProtocolName."""
    for attr, text in (("SeriesDescription", frame.series_description), ("ProtocolName", frame.protocol_name)):
        if not text:
            continue
        is_ph = bool(_DESC_PHASE.search(text))
        is_mag = bool(_DESC_MAG.search(text))
        if is_ph != is_mag:
            return ("phase" if is_ph else "magnitude"), f"{attr} word ({'phase' if is_ph else 'magnitude'})"
    return None


def public_component(frame: FrameHeader) -> tuple[str, str] | None:
    """Public tags in order: ComplexImageComponent, FrameType (enhanced), ImageType, description."""
    got = component_from_complex(frame)
    if got:
        return got
    ft = getattr(frame, "frame_type", ()) or ()
    if ft:
        got = component_from_image_type(ft, "FrameType")
        if got:
            return got
    got = component_from_image_type(frame.image_type or (), "ImageType")
    if got:
        return got
    return component_from_description(frame)


UNKNOWN_COMPONENT = ("unknown", "no tag decides (private and public markers absent): use pixel statistics")


# ----------------------------------------------------------------------------------------------
# Pixel statistics (last resort)
# ----------------------------------------------------------------------------------------------
def _wrap_jumps(a: np.ndarray, lo: float, span: float) -> tuple[float, float]:
    """Wrap-jump statistics of an image or stack: (fraction of in-plane neighbour pairs whose
    values differ by more than 80% of the range, jumps per pixel in the top tenth of the range).

    Phase wraps put -pi next to +pi: many jumps, and a large share of the extreme pixels sit on
    one (measured >= 0.43 jumps per top-tenth pixel on real and phantom phase). A sharp-edged
    uniform magnitude image (tissue at the maximum next to air) also jumps, but only along its
    outline (0.08-0.16 jumps per top-tenth pixel)."""
    if a.ndim < 2 or a.shape[-1] < 2 or a.shape[-2] < 2:
        return 0.0, 0.0
    if a.ndim > 2 and a.shape[0] > 8:        # a few slices suffice
        a = a[:: a.shape[0] // 8]
    f = a.astype(np.float32)
    lim = np.float32(0.8 * span)
    n1 = np.count_nonzero(np.abs(np.diff(f, axis=-1)) > lim)
    n2 = np.count_nonzero(np.abs(np.diff(f, axis=-2)) > lim)
    pairs = f[..., :, 1:].size + f[..., 1:, :].size
    n_top = np.count_nonzero(f > np.float32(lo + 0.9 * span))
    return (n1 + n2) / pairs, (n1 + n2) / max(1, n_top)


def component_from_pixels(stored: np.ndarray) -> tuple[str, str]:
    """Guess magnitude vs phase from pixel statistics, when no tag decides (last resort).

    Evidence for phase: wrap jumps (neighbouring pixels differing by > 80% of the range, i.e.
    -pi next to +pi) in at least 0.2% of neighbour pairs and on at least 0.3 per pixel of the
    top tenth (not just the outline of a bright object), or values filling a symmetric range
    (air holds uniform random phase: bottom and top tenths about equally full, median mid-range,
    >= 20% of pixels in the middle 0.3-0.7 of the range).
    Evidence for magnitude: non-negative, no wrap jumps (< 0.08%, or < 0.2 per top-tenth pixel), a dark background (>= 10% of
    pixels in the bottom tenth of the range) and either a thin bright tail (top tenth < 1/5 of
    the bottom tenth) or two modes (air and tissue: < 15% in the middle) with a noisy background
    (not one masked value: a zero-filled phase background is a single value).
    Measured on the real files in ``../shared/vendor_dicom``: magnitude slices show at most
    0.06% jumps, wrapped phase 0.4-5%. Anything else stays ``unknown`` (e.g. smooth field-map
    phase without air, which histograms alone cannot tell from magnitude).
    Works on one slice or a stack.
    """
    a = np.asarray(stored)
    if a.size == 0:
        return "unknown", "pixel statistics: no pixels"
    flat = a.reshape(-1)
    if flat.size > 400_000:
        flat = flat[:: flat.size // 200_000]
    v = flat.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo
    if span <= 0:
        return "unknown", "pixel statistics: constant image"
    x = (v - lo) / span
    p_low = float(np.mean(x < 0.1))
    p_high = float(np.mean(x > 0.9))
    p_mid = float(np.mean((x > 0.3) & (x < 0.7)))
    spike = float(np.mean(x == 0.0))
    med = float(np.median(x))
    a_lo = float(np.min(a))
    jumps, jumps_per_top = _wrap_jumps(a, a_lo, float(np.max(a)) - a_lo)
    desc = (f"{100 * jumps:.2f}% wrap jumps, {100 * p_low:.0f}% in bottom tenth of range, "
            f"{100 * p_mid:.0f}% in middle, {100 * p_high:.0f}% in top tenth, median at {med:.2f}")
    balanced = min(p_low, p_high) > max(p_low, p_high) / 3.0
    if jumps >= 0.002 and jumps_per_top >= 0.3:
        return "phase", f"pixel statistics: wrap jumps ({desc}, {jumps_per_top:.2f} per top-tenth pixel)"
    if abs(med - 0.5) < 0.2 and p_low > 0.02 and p_high > 0.02 and balanced and p_mid >= 0.2:
        return "phase", f"pixel statistics: values fill a symmetric range ({desc})"
    no_wraps = jumps < 0.0008 or jumps_per_top < 0.2      # none, or only along an outline
    if lo >= 0 and no_wraps and p_low >= 0.1:
        if p_high < p_low / 5.0:
            return "magnitude", f"pixel statistics: non-negative, dark background, thin bright tail ({desc})"
        if p_mid < 0.15 and spike < 0.5 * p_low:
            return "magnitude", f"pixel statistics: non-negative, noisy dark background and bright tissue ({desc})"
    return "unknown", f"pixel statistics undecided ({desc})"


# ----------------------------------------------------------------------------------------------
# Rescale and units
# ----------------------------------------------------------------------------------------------
def _per_frame(values: list[Optional[float]], default: float) -> tuple[np.ndarray | float, bool]:
    """Column of per-frame values shaped (n,1,1), or a scalar when all equal. Second item: any
    value present."""
    present = any(v is not None for v in values)
    vals = [default if v is None else float(v) for v in values]
    if not vals or all(v == vals[0] for v in vals):
        return (vals[0] if vals else default), present
    return np.asarray(vals, dtype=np.float32).reshape(-1, 1, 1), present


def rescale_params(frames: Sequence[FrameHeader]) -> tuple[np.ndarray | float, np.ndarray | float, bool]:
    """(slope, intercept, present) from each frame's flattened rescale (classic Rescale* or the
    enhanced per-frame/shared Pixel Value Transformation, already flattened by the reader)."""
    slope, s_present = _per_frame([f.rescale_slope for f in frames], 1.0)
    inter, i_present = _per_frame([f.rescale_intercept for f in frames], 0.0)
    return slope, inter, (s_present or i_present)


def rescale_text(slope, inter) -> str:
    if isinstance(slope, np.ndarray) or isinstance(inter, np.ndarray):
        return "per-frame rescale"
    return f"slope {slope:g}, intercept {inter:g}"


def is_identity(slope, inter) -> bool:
    return (not isinstance(slope, np.ndarray) and not isinstance(inter, np.ndarray)
            and slope == 1.0 and inter == 0.0)


def check_stack(stored: np.ndarray, frames: Sequence[FrameHeader]) -> None:
    if stored.ndim != 3:
        raise ValueError(f"expected a (slice, row, column) stack, got shape {stored.shape}")
    if len(frames) != stored.shape[0]:
        raise ValueError(f"{len(frames)} frame headers for {stored.shape[0]} slices")


def affine_to_float32(stored: np.ndarray, scale, offset) -> np.ndarray:
    """float32 ``stored * scale + offset`` (scale/offset scalars or (n,1,1)) as a new array,
    in two passes (multiply with a float32 result, then add in place)."""
    sc = np.asarray(scale, dtype=np.float32)
    if isinstance(scale, np.ndarray) or scale != 1.0:
        out = np.multiply(stored, sc, dtype=np.float32)
    else:
        out = np.array(stored, dtype=np.float32, copy=True)
    if isinstance(offset, np.ndarray) or offset != 0.0:
        out += np.asarray(offset, dtype=np.float32)
    return out


def to_radians(stored: np.ndarray, frames: Sequence[FrameHeader], slope, inter, scale: float) -> np.ndarray:
    """((stored * slope + intercept) * scale) wrapped into [-pi, pi), float32 (two passes for the
    affine, two for the range check, the shift only where values fall outside)."""
    return wrap_rad(affine_to_float32(stored, slope * scale, inter * scale), in_place=True)


def _is_integer_valued(a: np.ndarray) -> bool:
    if np.issubdtype(a.dtype, np.integer):
        return True
    sample = a.reshape(-1)[:: max(1, a.size // 100_000)]
    return bool(np.all(np.equal(np.mod(sample, 1.0), 0.0)))


def infer_phase_unit(stored: np.ndarray, slope, inter) -> tuple[float, float, str]:
    """Infer the unit of (rescaled) phase values from their range.

    Returns (scale, offset, rule) such that radians = rescaled * scale + offset. Ranges
    recognised, in order: already radians (non-integer values within +-pi), milliradians
    (integers within +-3142), +-4096 for +-pi, 0..4095 with pi at 2048 (unsigned 12 bit),
    +-32768 for +-pi, 0..65535 offset. A stack whose values fit none raises
    :class:`DicomInputError` (no guess).
    NOTE: a low-range +-4096 image (e.g. filtered phase within +-3142) reads as mrad; the
    rule is recorded so a reader can tell.
    """
    lo_s, hi_s = float(np.min(stored)), float(np.max(stored))
    if isinstance(slope, np.ndarray) or isinstance(inter, np.ndarray):
        # per-frame rescale: the range is that of each slice's extremes after its own rescale
        mins = np.min(stored, axis=(1, 2)).astype(np.float64).reshape(-1, 1, 1)
        maxs = np.max(stored, axis=(1, 2)).astype(np.float64).reshape(-1, 1, 1)
        cand = np.concatenate([mins * slope + inter, maxs * slope + inter])
        lo, hi = float(cand.min()), float(cand.max())
    else:
        a, b = lo_s * slope + inter, hi_s * slope + inter
        lo, hi = min(a, b), max(a, b)
    integer = _is_integer_valued(stored) and (is_identity(slope, inter) or
                                              (not isinstance(slope, np.ndarray) and float(slope).is_integer()
                                               and not isinstance(inter, np.ndarray) and float(inter).is_integer()))
    tol = 1e-3
    rng = f"values {lo:g}..{hi:g}"
    if not integer and lo >= -math.pi - tol and hi <= math.pi + tol:
        return 1.0, 0.0, f"already radians ({rng})"
    if lo >= -3142.5 and hi <= 3142.5 and lo < 0:
        return 1e-3, 0.0, f"milliradians inferred from range ({rng}): /1000"
    if lo >= -4096.5 and hi <= 4096.5 and lo < 0:
        return math.pi / 4096, 0.0, f"+-4096 = +-pi inferred from range ({rng}): * pi/4096"
    if lo >= 0 and hi <= 4095.5:
        return math.pi / 2048, -math.pi, f"0..4095 offset inferred from range ({rng}): * pi/2048 - pi"
    if lo >= -32768.5 and hi <= 32767.5 and lo < 0:
        return math.pi / 32768, 0.0, f"+-32768 = +-pi inferred from range ({rng}): * pi/32768"
    if lo >= 0 and hi <= 65535.5:
        return math.pi / 32768, -math.pi, f"0..65535 offset inferred from range ({rng}): * pi/32768 - pi"
    raise DicomInputError(None, f"phase {rng} match no known scaling (radians, mrad, +-4096, 0..4095, +-32768)")


def phase_by_inference(stored: np.ndarray, frames: Sequence[FrameHeader], who: str) -> tuple[np.ndarray, str]:
    """Rescale (if any) then infer the unit from the range; rule names both."""
    slope, inter, present = rescale_params(frames)
    try:
        scale, offset, rule = infer_phase_unit(stored, slope, inter)
    except DicomInputError as exc:
        raise DicomInputError(frames[0].path if frames else None, exc.problem) from None
    rad = to_radians(stored, frames, slope, inter + offset / scale, scale)
    pre = "" if (not present or is_identity(slope, inter)) else f"rescale ({rescale_text(slope, inter)}), then "
    return rad, f"{who}: {pre}{rule}"


def magnitude_rescaled(stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
    """Magnitude in vendor units: float32 with the (per-frame) rescale applied where there is
    one; without a rescale (or an identity one) the stored integers already are those units and
    are returned as they are, without a float32 copy at twice their size (the read benchmark's
    memory target: a study's volumes under 2x its pixel data)."""
    check_stack(stored, frames)
    slope, inter, _ = rescale_params(frames)
    if is_identity(slope, inter) and np.issubdtype(stored.dtype, np.integer):
        return stored
    return affine_to_float32(stored, slope, inter)


# ----------------------------------------------------------------------------------------------
# Encode (the inverse of decode), used by dicom_io.phantom_writer to write phantoms the vendor's way
# ----------------------------------------------------------------------------------------------
@dataclass
class Encoded:
    """Stored pixels of one stack and the pixel-describing tags a vendor writes with them."""

    stored: np.ndarray                 # (slice, row, col) uint16 or int16
    bits_stored: int
    rule: str                          # how radians / magnitude became stored values
    rescale_slope: Optional[float] = None
    rescale_intercept: Optional[float] = None
    rescale_type: Optional[str] = None
    private_scale: Optional[tuple[float, float]] = None   # (slope, intercept), e.g. Philips SS, SI

    @property
    def signed(self) -> bool:
        return self.stored.dtype.kind == "i"


def _cycles(phase_rad: np.ndarray, counts_per_cycle: float, offset_counts: float) -> np.ndarray:
    """round(phase * counts_per_cycle / 2pi + offset) as int32, computed in float32 in place
    (float32 resolves 4096 counts per cycle with margin; 15.7 M voxels in ~0.1 s)."""
    x = np.multiply(phase_rad, np.float32(counts_per_cycle / (2 * np.pi)), dtype=np.float32)
    if offset_counts:
        x += np.float32(offset_counts)
    np.rint(x, out=x)
    return x.astype(np.int32)


def encode_magnitude_counts(magnitude: np.ndarray, counts_per_unit: float, *, signed: bool = False,
                            bits: int = 12) -> np.ndarray:
    """round(magnitude * counts_per_unit) clipped to the stored range."""
    m = np.asarray(magnitude)
    if not np.all(np.isfinite(m)) or float(np.min(m)) < 0:
        raise ValueError("magnitude must be finite and >= 0")
    hi = (1 << bits) - 1 if not signed else min((1 << (bits - 1)) - 1, 32767)
    x = np.multiply(m, np.float32(counts_per_unit), dtype=np.float32)
    np.rint(x, out=x)
    np.clip(x, 0, hi, out=x)
    return x.astype(np.int16 if signed else np.uint16)


def encode_phase_offset_4096(phase_rad: np.ndarray) -> np.ndarray:
    """Radians -> 0..4095 with 2048 at zero: round((rad + pi) * 2048 / pi) mod 4096 (uint16)."""
    s = _cycles(phase_rad, 4096.0, 2048.0)
    np.bitwise_and(s, 4095, out=s)            # mod 4096 (also wraps any input range)
    return s.astype(np.uint16)


def encode_phase_mrad_int16(phase_rad: np.ndarray) -> np.ndarray:
    """Radians -> signed int16 milliradians of the wrapped phase (-3142..3141)."""
    w = wrap_rad(np.asarray(phase_rad, dtype=np.float32))
    w *= np.float32(1000.0)
    np.rint(w, out=w)
    np.clip(w, -3142, 3141, out=w)
    return w.astype(np.int16)
