"""Summary images: burned-in RGB Secondary Capture series for viewers that show no SR or SEG.

Image 1 is the overview: a minimum-intensity projection of the magnitude with every spot
circled and labelled, the phase convention and the rule that decided it, the counts, and the
table of all spots. Then one "spot card" per spot: the magnitude of its border slice and the
phase the method actually read (its background-removed phase, or the delivered filtered phase
it used unchanged, on the slice read: the border slice, or the slice one further out when the
method read there, with a note saying why), zoomed crops of those and of the central slice, and
the spot's facts with the basis of its certainty. When the analysis made a QSM map, a fifth
crop shows it on the central slice (grey scale black = diamagnetic, white = paramagnetic, its
range in ppm drawn under it) and the facts give the spot's chi in ppm.

What a viewer shows over an image is left free: the top 8 % (OHIF's cine bar and the corner
overlays) and the bottom 5 % (corner overlays) of every image are background only. Text is
DejaVu Sans at :data:`BODY_PX` px (capital height 15 px) at the image's stored size, so it reads
at native size. Every image carries a red banner "DERIVED RESULT - NOT FOR PRIMARY DIAGNOSIS" and
Burned In Annotation YES (PS3.3 C.7.6.1.1.3). Zoomed phase is shown relative to the spot's
surrounding tissue, black = lower phase, which is how the method's patterns 1-6 are defined.

Encoding: JPEG-LS Lossless (:data:`SUMMARY_TRANSFER_SYNTAX`, pyjpegls through highdicom): the
same pixels in 4-9 x less space. A card is 882 x 1700-1900 RGB, 4.5-5.6 MB uncompressed; a full-size
199-card study wrote 905 MB of them (18 x its 51 MB source), now 139 MB. Encoding costs ~24 ms of
CPU a card (+4.7 s there, after the SR); sending them to dcmtk storescp takes 3.6 instead of 9 s
and 0.8 instead of 2.5 s of CPU (benchmarks/results.md). A peer that does not accept JPEG-LS gets
each card decoded to Explicit VR Little Endian by the sender (:mod:`dicom_io.net.scu`, CharLS:
~25 ms a card).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from dicom_io.phase import wrap_rad
from dicom_io.results import codes
from dicom_io.results.fonts import font
from dicom_io.results.context import (CLASS_DISPLAY_RGB, certainty_text, MANUFACTURER, NOT_FOR_DIAGNOSIS, ResultContext, TrackedSpot,
                                      finish, source_names_tolerated)
from dicom_io.results.qsm import qsm_reading_text
from dicom_io.results.report import Finding
from dicom_io.vocabulary import DEFAULT_SUMMARY_ENCODING, SUMMARY_ENCODING_NAMES, Handedness

#: How a site may store its summary images (lossless either way: the pixels rendered, bit for
#: bit): ``[analysis] summary_encoding`` of the node and the Orthanc plugin, ``borderphase analyze
#: --summary-encoding``. "uncompressed" suits an archive that refuses JPEG-LS (the sender would
#: otherwise decode every card for it) or a site that stores derived images uncompressed.
SUMMARY_ENCODINGS: dict[str, pydicom.uid.UID] = dict(zip(
    SUMMARY_ENCODING_NAMES, (pydicom.uid.JPEGLSLossless, pydicom.uid.ExplicitVRLittleEndian), strict=True))
#: How every summary image is stored and sent first by default.
SUMMARY_TRANSFER_SYNTAX = SUMMARY_ENCODINGS[DEFAULT_SUMMARY_ENCODING]


def summary_transfer_syntax(encoding: str) -> pydicom.uid.UID:
    """The transfer syntax of ``encoding`` (a key of :data:`SUMMARY_ENCODINGS`); ValueError naming
    the choices otherwise."""
    try:
        return SUMMARY_ENCODINGS[encoding]
    except KeyError:
        raise ValueError(f"summary encoding {encoding!r}: expected one of {', '.join(SUMMARY_ENCODINGS)}") from None

CLASS_COLOURS = CLASS_DISPLAY_RGB  # the SEG's recommended display colours, one per class
BANNER = (170, 0, 0)
BG = (0, 0, 0)
FG = (235, 235, 235)
DIM = (175, 175, 175)
NOTE = (255, 215, 0)
WARN = (255, 96, 96)        # a header convention contradicted by the data (issue 12)
ORIENT = (255, 255, 0)

BODY_PX = 20            # body text font size: DejaVu Sans capitals 15 px high, descenders included 19 px
TITLE_PX = 26
LINE_PX = 27            # baseline-to-baseline of body text
TOP_CLEAR = 0.08        # fraction of the image height left empty at the top (viewer overlays, cine bar)
BOTTOM_CLEAR = 0.05     # and at the bottom (viewer corner overlays)
PANEL_PX = 420          # full-slice panel edge
MARGIN = 14
CARD_WIDTH = 2 * PANEL_PX + 3 * MARGIN
OVERVIEW_IMAGE_PX = 512
OVERVIEW_MAX_PX = 900   # ... up to this (within the card's width) when it holds many spots: their names stay legible
OVERVIEW_MANY_SPOTS = 12
CROP_HALF_MM = 12.0     # zoomed crops show at least +-12 mm around the spot (3 diameters for large spots)

def body(bold: bool = False) -> ImageFont.FreeTypeFont:
    return font(BODY_PX, bold)


# --- pixels -----------------------------------------------------------------------------------
def window(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear window to uint8 (black = lo)."""
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((img - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def magnitude_window(vol: np.ndarray) -> tuple[float, float]:
    sample = vol[:, ::4, ::4] if vol.ndim == 3 else vol[::4, ::4]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(lo + 1.15 * (hi - lo))   # tissue light grey, not clipped white


def phase_window(vol: np.ndarray, magnitude: Optional[np.ndarray] = None) -> tuple[float, float]:
    """Symmetric about zero, wide enough for 99 % of the phase where there is signal (at most
    +-pi): the background-removed phase of the brain sits about zero."""
    sample = vol[:, ::4, ::4] if vol.ndim == 3 else vol[::4, ::4]
    if magnitude is not None:
        m = magnitude[:, ::4, ::4] if magnitude.ndim == 3 else magnitude[::4, ::4]
        signal = m >= 0.3 * float(np.percentile(m, 90))
        if signal.sum() >= 16:
            sample = sample[signal]
    w = float(np.percentile(np.abs(sample), 99.0))
    w = min(max(w, 0.05), math.pi)
    return -w, w


def relative_phase(phase: np.ndarray, magnitude: np.ndarray, footprint: np.ndarray, pixel_mm: float, *,
                   wrapped: bool) -> np.ndarray:
    """Phase of a crop relative to the spot's surrounding tissue, as the method reads it
    (plugin.method.spotread): the magnitude-weighted mean phase of an annulus 1.5-4.5 mm beyond
    the footprint, signal voids (< 30 % of the annulus' median magnitude) left out, subtracted
    (on the circle when the phase is still wrapped). Without a usable annulus: the crop's median."""
    inner = max(1, int(round(1.5 / pixel_mm)))
    outer = inner + max(1, int(round(3.0 / pixel_mm)))
    ring = np.zeros_like(footprint)
    if footprint.any():
        ring = ndi.binary_dilation(footprint, iterations=outer) & ~ndi.binary_dilation(footprint, iterations=inner)
    if ring.sum() >= 4:
        ring &= magnitude >= 0.3 * float(np.median(magnitude[ring]))
    w = magnitude[ring].astype(np.float64)
    if ring.sum() < 4 or w.sum() <= 0:
        ref = float(np.median(phase))
    elif wrapped:
        ref = float(np.angle(np.sum(w * np.exp(1j * phase[ring]))))
    else:
        ref = float(np.sum(w * phase[ring]) / w.sum())
    return wrap_rad(phase - ref) if wrapped else phase - ref


def relative_window(rel: np.ndarray, magnitude: np.ndarray) -> tuple[float, float]:
    """Symmetric about zero (the surrounding tissue: mid grey), wide enough for 98 % of the
    crop's pixels with signal, so the spot's sign stays what it is and its pattern stays visible."""
    signal = magnitude >= 0.3 * float(np.median(magnitude))
    sample = rel[signal] if signal.sum() >= 16 else rel
    half = float(np.percentile(np.abs(sample), 98.0))
    half = min(max(half, 0.1), math.pi)
    return -half, half


def qsm_window_half_ppm(patch_ppm: np.ndarray) -> float:
    """Half-width (ppm) of the QSM crop's symmetric grey scale: the 98th percentile of |chi| in
    the crop rounded up to 0.1 ppm, between 0.1 and 1 ppm (0 ppm = mid grey, white = paramagnetic)."""
    half = math.ceil(float(np.percentile(np.abs(patch_ppm), 98.0)) * 10.0 - 1e-6) / 10.0
    return min(max(half, 0.1), 1.0)


def _qsm_volume(ctx: ResultContext) -> Optional[np.ndarray]:
    """The report's QSM map when it matches the magnitude volume, else None."""
    chi = ctx.report.qsm_chi_ppm
    return chi if chi is not None and tuple(chi.shape) == tuple(ctx.magnitude.shape) else None


def _draw_grey_scale(canvas: Image.Image, draw: ImageDraw.ImageDraw, x0: int, y0: int, width_px: int,
                     half_ppm: float) -> tuple[Box, int]:
    """A black-to-white bar under the QSM crop and its end values in ppm; (bar box, y below)."""
    bar = np.tile(np.linspace(0, 255, width_px).astype(np.uint8), (12, 1))
    canvas.paste(Image.fromarray(bar, mode="L").convert("RGB"), (x0, y0))
    y = y0 + 12 + 3
    draw.text((x0, y), f"{-half_ppm:+.1f}", fill=FG, font=body())
    draw.text((x0 + width_px, y), f"{half_ppm:+.1f} ppm", fill=FG, font=body(), anchor="ra")
    return (x0, y0, x0 + width_px, y0 + 12), y + LINE_PX


def _to_rgb(gray: np.ndarray, size_px: int) -> tuple[Image.Image, float]:
    """Scale a 2D uint8 image so its longer edge is ``size_px``; returns (RGB image, scale)."""
    h, w = gray.shape
    scale = size_px / max(h, w)
    im = Image.fromarray(gray, mode="L").resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    return im.convert("RGB"), scale


def _crop(sl: np.ndarray, r0: int, c0: int, half_px: int, fill: float) -> np.ndarray:
    """(2 half_px + 1)^2 pixels of ``sl`` centred on (r0, c0), padded with ``fill``."""
    pad = np.pad(sl, half_px, mode="constant", constant_values=fill)
    return pad[r0:r0 + 2 * half_px + 1, c0:c0 + 2 * half_px + 1]


def _orientation_letters(ctx: ResultContext) -> tuple[str, str, str, str]:
    """Patient direction at the (left, right, top, bottom) edge of a displayed slice."""
    o = ctx.magnitude.frames[0].orientation or (1, 0, 0, 0, 1, 0)
    names = (("R", "L"), ("A", "P"), ("F", "H"))   # LPS: -x = R, +x = L, -y = A, +y = P, -z = F, +z = H

    def toward(v) -> str:
        axis = int(np.argmax(np.abs(v)))
        return names[axis][1 if v[axis] > 0 else 0]

    right, bottom = toward(o[:3]), toward(o[3:])
    left, top = toward([-v for v in o[:3]]), toward([-v for v in o[3:]])
    return left, right, top, bottom


def _draw_orientation(im: Image.Image, letters) -> None:
    d = ImageDraw.Draw(im)
    f = body(bold=True)
    left, right, top, bottom = letters
    w, h = im.size
    kw = dict(fill=ORIENT, font=f, stroke_width=2, stroke_fill=(0, 0, 0))
    d.text((4, h / 2), left, anchor="lm", **kw)
    d.text((w - 4, h / 2), right, anchor="rm", **kw)
    d.text((w / 2, 3), top, anchor="mt", **kw)
    d.text((w / 2, h - 4), bottom, anchor="mb", **kw)


def slice_location_mm(ctx: ResultContext, k: int) -> float:
    """Position of slice ``k`` along the slice normal (what scanners print as Slice Location)."""
    a = ctx.magnitude.affine_lps
    normal = a[:3, 0] / np.linalg.norm(a[:3, 0])
    return float(np.dot(normal, ctx.magnitude.index_to_lps_mm(np.array([k, 0, 0]))[0]))


def _circle(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, colour, width: int = 2) -> None:
    r = max(r, 5.0)
    draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=width)


def short_label(spot: TrackedSpot) -> str:
    """The tracking identifier without the class word ("CMB 2" for "CMB 2 microbleed")."""
    return spot.label.removesuffix(f" {spot.finding.value}")


Circle = tuple[float, float, float]   # (x, y, radius) in the image's pixels
LABEL_STEPS = 6   # distances tried for a spot's name: beside its circle, then 1-5 label heights further out


def _overlaps(box: tuple[float, float, float, float], placed: Sequence, circles) -> int:
    """How many of the ``placed`` label boxes and of the ``circles`` the label ``box`` covers
    (``circles``: a sequence of (x, y, r), or their float64 (n, 3) array: the same count, one
    numpy pass for an overview with many spots)."""
    x0, y0, x1, y1 = box
    n = sum(x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1 for bx0, by0, bx1, by1 in placed)
    if isinstance(circles, np.ndarray):
        cx, cy, cr = circles[:, 0], circles[:, 1], circles[:, 2]
        dx = np.minimum(np.maximum(cx, x0), x1) - cx      # the box's point nearest each centre
        dy = np.minimum(np.maximum(cy, y0), y1) - cy
        return n + int(np.count_nonzero(dx * dx + dy * dy < cr * cr))
    for cx, cy, cr in circles:
        nx, ny = min(max(cx, x0), x1), min(max(cy, y0), y1)     # the box's point nearest the centre
        n += (nx - cx) ** 2 + (ny - cy) ** 2 < cr * cr
    return n


def _free_label_spot(draw: ImageDraw.ImageDraw, text: str, x: float, y: float, r: float,
                     size: tuple[int, int], placed: list, circles: Sequence[Circle] = ()) -> tuple[float, float, bool]:
    """Top-left of a label for the circle at (x, y) of radius r, and whether it sits away from the
    circle (then a leader line should join them). Tried in order: right, left, above, below and the
    four diagonals beside the circle, then the same directions 1 to ``LABEL_STEPS`` - 1 label heights further out;
    the first inside the image that covers no earlier label (``placed``) and no other spot's circle
    (``circles``, this spot's own left out by position) wins, else the one that covers fewest. The
    chosen box is appended to ``placed``."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=body(bold=True), stroke_width=2)
    w, h = x1 - x0, y1 - y0
    others = np.asarray([c for c in circles if (c[0] - x) ** 2 + (c[1] - y) ** 2 > 1.0], dtype=float).reshape(-1, 3)
    best = None
    for step in range(LABEL_STEPS):
        gap = 3 + step * (h + 2)
        cands = ((x + r + gap, y - h / 2), (x - r - gap - w, y - h / 2),                  # right, left
                 (x - w / 2, y - r - gap - h), (x - w / 2, y + r + gap),                  # above, below
                 (x + 0.7 * r + gap, y - 0.7 * r - gap - h), (x - 0.7 * r - gap - w, y - 0.7 * r - gap - h),
                 (x + 0.7 * r + gap, y + 0.7 * r + gap), (x - 0.7 * r - gap - w, y + 0.7 * r + gap))
        for lx, ly in cands:
            if lx < 0 or ly < 0 or lx + w > size[0] or ly + h > size[1]:
                continue
            n = _overlaps((lx, ly, lx + w, ly + h), placed, others)
            if best is None or n < best[0]:
                best = (n, lx, ly, step > 0)
            if n == 0:
                break
        if best is not None and best[0] == 0:
            break
    if best is None:    # no candidate inside the image: beside the circle, clamped
        lx = x + r + 3 if x + r + 3 + w <= size[0] else max(0.0, x - r - 3 - w)
        best = (0, lx, min(max(0.0, y - h / 2), size[1] - h), False)
    _, lx, ly, away = best
    placed.append((lx, ly, lx + w, ly + h))
    return lx, ly, away


def _leader(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, box: tuple[float, float, float, float],
            colour) -> None:
    """A thin line from the circle's edge towards the label's nearest point."""
    x0, y0, x1, y1 = box
    nx, ny = min(max(x, x0), x1), min(max(y, y0), y1)
    d = math.hypot(nx - x, ny - y)
    if d > r + 2:
        ex, ey = x + (nx - x) * r / d, y + (ny - y) * r / d
        draw.line([(ex, ey), (nx, ny)], fill=colour, width=1)


def _label(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, colour) -> None:
    draw.text((x, y), text, fill=colour, font=body(bold=True), stroke_width=2, stroke_fill=(0, 0, 0))


# --- text ---------------------------------------------------------------------------------------
def _pattern(p: Optional[int]) -> str:
    return "-" if p is None else f"{p} ({codes.PATTERN_SHORT[p]})"


def certainty_basis(ctx: ResultContext) -> str:
    return ctx.report.confidence_basis or "not calibrated"


#: wrap_text's lines by (text, font, width, the draw's font mode): the cards of a study repeat the
#: same paragraphs (phase convention, what was read, certainty basis), measured word by word
_WRAPPED: dict[tuple, list[str]] = {}
_WRAPPED_MAX = 4096


def wrap_text(draw: ImageDraw.ImageDraw, text: str, f: ImageFont.FreeTypeFont, width_px: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width_px`` (a longer word stands alone)."""
    key = (text, f, width_px, draw.fontmode)
    lines = _WRAPPED.get(key)   # (one get: another thread may clear the cache meanwhile)
    if lines is None:
        lines = _wrap_text(draw, text, f, width_px)
        if len(_WRAPPED) >= _WRAPPED_MAX:
            _WRAPPED.clear()
        _WRAPPED[key] = lines
    return list(lines)


def _wrap_text(draw: ImageDraw.ImageDraw, text: str, f: ImageFont.FreeTypeFont, width_px: float) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if line and draw.textlength(trial, font=f) > width_px:
            lines.append(line)
            line = word
        else:
            line = trial
    if line:
        lines.append(line)
    return lines


def _paragraph(draw: ImageDraw.ImageDraw, x: int, y: int, text: str, width_px: float, *, fill=FG,
               bold: bool = False) -> int:
    """Draw ``text`` wrapped to ``width_px`` in body text; returns the y below it."""
    f = body(bold)
    for line in wrap_text(draw, text, f, width_px):
        draw.text((x, y), line, fill=fill, font=f)
        y += LINE_PX
    return y


TABLE_HEADERS = ("Spot", "Class", "Diam. (mm)", "Border pattern", "Central pattern", "Certainty", "QSM chi (ppm)", "Slices")


def qsm_cell(facts) -> str:
    """A spot's QSM chi as the table and the viewer's label give it ("+0.68"; "-" without one)."""
    chi = facts.qsm_chi_ppm
    return "-" if chi is None or not math.isfinite(chi) else f"{chi:+.2f}"


def qsm_partial_volume_note(ctx: ResultContext) -> str:
    """What the table's QSM chi cannot show on thick slices ("" when it does not apply): the
    analysis flags (``ReportedSpot.qsm_chi_partial_volume``) a core reading of a spot narrower than
    a slice the map does not resolve through; the slice averages it with the tissue above and below,
    so its |chi| reads low (realistic 0.9 x 0.9 x 5 mm cohort: median 0.53-0.56 of the truth for
    2-3 mm spots, 0.90 above 4 mm; benchmarks/qsm.md). The SR's "QSM reading" gives its interval."""
    thin = [s for s in ctx.spots if s.reported.qsm_chi_partial_volume]
    if not thin:
        return ""
    slice_mm = float(ctx.magnitude.voxel_size_mm[0])
    return (f"QSM chi of a spot narrower than the {slice_mm:g} mm slice ({len(thin)} here) reads low: the slice "
            f"averages it with the tissue above and below (partial volume); its 95 % interval is in the SR's "
            f"QSM reading.")


def table_rows(ctx: ResultContext) -> list[tuple[TrackedSpot, list[str]]]:
    rows = []
    for s in ctx.spots:
        facts = s.reported
        slices = sorted(k + 1 for k in facts.slice_indices)
        span = f"{slices[0]}-{slices[-1]}" if slices else "-"
        rows.append((s, [s.label, s.finding.value, f"{float(facts.diameter_mm):.1f}",
                         _pattern(facts.border_pattern), _pattern(facts.central_pattern),
                         certainty_text(facts.confidence, s.finding), qsm_cell(facts), span]))
    return rows


def _column_widths(draw: ImageDraw.ImageDraw, rows) -> list[int]:
    widths = []
    for i, name in enumerate(TABLE_HEADERS):
        cells = [draw.textlength(name, font=body(True))] + [draw.textlength(r[1][i], font=body()) for r in rows]
        widths.append(int(math.ceil(max(cells))) + 18)
    return widths


def _draw_table(draw: ImageDraw.ImageDraw, x0: int, y0: int, rows, widths: list[int]) -> int:
    x = x0
    for name, w in zip(TABLE_HEADERS, widths):
        draw.text((x, y0), name, fill=FG, font=body(True))
        x += w
    y = y0 + LINE_PX + 2
    draw.line([x0, y - 3, x0 + sum(widths), y - 3], fill=DIM, width=1)
    for spot, cells in rows:
        colour = CLASS_COLOURS[spot.finding]
        x = x0
        for name, w, cell in zip(TABLE_HEADERS, widths, cells):
            draw.text((x, y), cell, fill=colour if name in ("Spot", "Class") else FG, font=body())
            x += w
        y += LINE_PX
    return y


def _header(draw: ImageDraw.ImageDraw, width: int, ctx: ResultContext, title: str, colour=FG) -> int:
    """Title line and the red "not for primary diagnosis" banner; returns the y below them."""
    draw.text((MARGIN, 0), title, fill=colour, font=font(TITLE_PX, bold=True))
    version = f"borderphase {ctx.algorithm_version}"
    draw.text((width - MARGIN, 4), version, fill=DIM, font=body(), anchor="ra")
    y = TITLE_PX + 12
    draw.rectangle([0, y, width, y + 36], fill=BANNER)
    draw.text((width / 2, y + 18), NOT_FOR_DIAGNOSIS, fill=(255, 255, 255), font=font(22, bold=True), anchor="mm")
    return y + 36 + 10


def _convention_lines(draw: ImageDraw.ImageDraw, x: int, y: int, width_px: float, ctx: ResultContext) -> int:
    a = ctx.report
    conv = a.phase_convention
    meaning = {Handedness.RIGHT: "paramagnetic (microbleed) shows dark on phase",
               Handedness.LEFT: "paramagnetic (microbleed) shows bright on phase",
               "unknown": "spots cannot be classified"}.get(conv, conv)
    y = _paragraph(draw, x, y, f"Phase convention: {conv} - {meaning}", width_px)
    if a.convention_check:   # issue 12: the data's check of the header, red when it contradicted the header
        y = _paragraph(draw, x, y, a.convention_headline or a.convention_check, width_px,
                       fill=WARN if a.convention_contradicted else DIM)
    y = _paragraph(draw, x, y, f"Decided by: {a.convention_source}; vendor {a.vendor}", width_px, fill=DIM)
    for warning in a.input_warnings:
        y = _paragraph(draw, x, y, f"Input: {warning}", width_px, fill=WARN)
    return y


def _footer(draw: ImageDraw.ImageDraw, x: int, y: int, width_px: float, ctx: ResultContext) -> int:
    what = ctx.report.background_removal if ctx.report.local_phase_rad is not None else \
        "not given by the analysis: phase shown as delivered"
    y = _paragraph(draw, x, y, f"Phase read: {what or 'background removed by the method'}.", width_px, fill=DIM)
    return _paragraph(draw, x, y, "Zoomed phase is relative to the surrounding tissue, black = lower phase. "
                                  "Verify every finding on the source images.", width_px, fill=DIM)


def _clear_edges(content: Image.Image) -> tuple[Image.Image, int]:
    """``content`` with background rows added above (>= TOP_CLEAR of the height, plus a few
    pixels) and below (>= BOTTOM_CLEAR): where viewers draw their overlays. Returns (image, top)."""
    pad = 8
    height = int(math.ceil((content.height + 2 * pad) / (1.0 - TOP_CLEAR - BOTTOM_CLEAR))) + 2
    top = int(math.ceil(TOP_CLEAR * height)) + pad
    out = Image.new("RGB", (content.width, height), BG)
    out.paste(content, (0, top))
    return out, top


# --- images -------------------------------------------------------------------------------------
def _head_box(magnitude: np.ndarray, margin: float = 0.08) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1): a square around the head (mean magnitude over the slices above a
    quarter of its bright tissue level) plus ``margin`` of its size, so the overview shows the
    head, not the empty field of view. The whole slice when nothing stands out."""
    rows, cols = magnitude.shape[1:]
    mean = magnitude.mean(axis=0)
    signal = mean >= 0.25 * float(np.percentile(mean, 99))
    if not signal.any():
        return 0, rows, 0, cols
    rr, cc = np.nonzero(signal)
    centre_r, centre_c = (rr.min() + rr.max()) / 2, (cc.min() + cc.max()) / 2
    half = max(rr.max() - rr.min(), cc.max() - cc.min()) / 2 * (1 + margin) + 2
    r0, c0 = max(0, int(centre_r - half)), max(0, int(centre_c - half))
    return r0, min(rows, int(centre_r + half) + 1), c0, min(cols, int(centre_c + half) + 1)


Box = tuple[int, int, int, int]   # (x0, y0, x1, y1), pixels of the stored image, x1/y1 exclusive


@dataclass(frozen=True)
class Overview:
    """The rendered overview and where its image is (box "projection")."""

    pixels: np.ndarray
    boxes: dict[str, Box]


def overview_image(ctx: ResultContext, mag_win) -> np.ndarray:
    """The pixels of the overview (:func:`render_overview`)."""
    return render_overview(ctx, mag_win).pixels


def render_overview(ctx: ResultContext, mag_win) -> Overview:
    """Counts, convention, the magnitude projection with every spot circled, the table."""
    rows = table_rows(ctx)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = _column_widths(scratch, rows)
    width = max(CARD_WIDTH, sum(widths) + 2 * MARGIN)
    canvas = Image.new("RGB", (width, 4000), BG)
    draw = ImageDraw.Draw(canvas)
    text_w = width - 2 * MARGIN
    y = _header(draw, width, ctx, "Study overview")
    n = ctx.counts()
    if ctx.spots:
        counts = (f"{len(ctx.spots)} dark spots: {n[Finding.MICROBLEED]} microbleed(s), "
                  f"{n[Finding.CALCIFICATION]} calcification(s), {n[Finding.INDETERMINATE]} indeterminate")
    else:
        counts = "No dark spots found: microbleeds absent, calcifications absent"
    y = _paragraph(draw, MARGIN, y, counts, text_w, bold=True)
    y = _convention_lines(draw, MARGIN, y, text_w, ctx) + 8
    data = ctx.magnitude.data
    r0, r1, c0, c1 = _head_box(data)
    # the slab holding the spots: slices beyond it (the top of the head) would shrink the head
    held = [k for sp in ctx.spots for k in sp.reported.slice_indices]
    k0, k1 = (min(held), max(held) + 1) if held else (0, data.shape[0])
    mip = data[k0:k1, r0:r1, c0:c1].min(axis=0)
    image_px = OVERVIEW_IMAGE_PX if len(ctx.spots) <= OVERVIEW_MANY_SPOTS else \
        max(OVERVIEW_IMAGE_PX, min(OVERVIEW_MAX_PX, width - 2 * MARGIN))
    im, scale = _to_rgb(window(mip, *mag_win), image_px)
    d = ImageDraw.Draw(im)
    placed: list[tuple[float, float, float, float]] = []
    marks = []
    for s in ctx.spots:
        c = ctx.magnitude.lps_mm_to_index(np.asarray(s.reported.center_lps_mm, dtype=float))[0]
        x, yy = (c[2] - c0 + 0.5) * scale, (c[1] - r0 + 0.5) * scale
        marks.append((s, x, yy, max(s.region.radius_px * scale + 4, 5.0)))
    circles = [(x, yy, r) for _, x, yy, r in marks]
    for s, x, yy, r in marks:
        _circle(d, x, yy, r, CLASS_COLOURS[s.finding])
    for s, x, yy, r in marks:
        # the colour and the table below give the class: the projection carries the short name,
        # placed where it is neither cut by the panel's edge nor on another name or another spot's
        # circle, joined to its circle by a line when it had to move away
        colour = CLASS_COLOURS[s.finding]
        text = short_label(s)
        lx, ly, away = _free_label_spot(d, text, x, yy, r, im.size, placed, circles)
        if away:
            _leader(d, x, yy, r, placed[-1], colour)
        _label(d, lx, ly, text, colour)
    _draw_orientation(im, _orientation_letters(ctx))
    x_img = (width - im.width) // 2
    canvas.paste(im, (x_img, y))
    box = (x_img, y, x_img + im.width, y + im.height)
    y += im.height + 4
    draw.text((x_img, y), f"Magnitude, minimum-intensity projection of slices {k0 + 1}-{k1}", fill=DIM,
              font=body())
    y += LINE_PX + 10
    if rows:
        y = _draw_table(draw, MARGIN, y, rows, widths) + 6
        y = _paragraph(draw, MARGIN, y, f"Certainty: {certainty_basis(ctx)}.", text_w, fill=DIM)
        note = qsm_partial_volume_note(ctx)
        if note:
            y = _paragraph(draw, MARGIN, y, note, text_w, fill=DIM)
    y = _footer(draw, MARGIN, y + 6, text_w, ctx)
    out, top = _clear_edges(canvas.crop((0, 0, width, y + 4)))
    return Overview(np.asarray(out), {"projection": (box[0], box[1] + top, box[2], box[3] + top)})


@dataclass(frozen=True)
class SpotCard:
    """A rendered spot card and where its parts are (named boxes, used by the tests and the
    README): "magnitude_slice", "phase_slice", "magnitude_border_crop", "phase_read_crop",
    "magnitude_central_crop", "phase_central_crop", and "phase_read_spot" (the spot's own
    footprint inside the phase read crop: an axis-aligned box around its circle); with a QSM map
    also "qsm_crop", "qsm_spot" (as "phase_read_spot") and "qsm_scale" (the grey-scale bar)."""

    pixels: np.ndarray
    boxes: dict[str, Box]
    read_slice: int
    phase_shown: str          # "background removed", or "as delivered" (filtered phase the method read unchanged,
                              # or no background-removed phase in the input)


def _equal_by_slabs(a: np.ndarray, b: np.ndarray, slab: int = 4) -> bool:
    """``np.array_equal(a, b)`` of two volumes of one shape, a few slices at a time (stops at the
    first difference): no volume-sized bool temporary (15 MiB on 512 x 512 x 60; memory: issue 15)."""
    return all(np.array_equal(a[k:k + slab], b[k:k + slab]) for k in range(0, a.shape[0], slab))


def _phase_volume(ctx: ResultContext) -> tuple[np.ndarray, bool, str]:
    """(phase the card shows, still wrapped?, what it is): the method's background-removed phase
    when the report carries it, else the delivered phase."""
    local = ctx.report.local_phase_rad
    delivered = ctx.phase.data
    if local is not None and tuple(local.shape) == tuple(delivered.shape):
        unchanged = local is delivered or (local.dtype == delivered.dtype and _equal_by_slabs(local, delivered))
        return local, bool(ctx.report.local_phase_wrapped), "as delivered" if unchanged else "background removed"
    return delivered, True, "as delivered"


def render_spot_card(ctx: ResultContext, spot: TrackedSpot, mag_win, phase_win=None,
                     phase_view: Optional[tuple[np.ndarray, bool, str]] = None) -> SpotCard:
    """One spot's card (module docstring). ``phase_view``: :func:`_phase_volume` of ``ctx``, when
    the caller has it (it compares two whole volumes)."""
    facts = spot.reported
    colour = CLASS_COLOURS[spot.finding]
    phase, wrapped, phase_shown = phase_view or _phase_volume(ctx)
    if phase_win is None:
        phase_win = phase_window(phase, ctx.magnitude.data)
    k = spot.border_slice
    read = facts.read_slice
    if not 0 <= read < ctx.magnitude.shape[0]:
        read = k
    side = "upper" if k == facts.upper_border_slice else "lower"
    n_slices = ctx.magnitude.shape[0]
    width = CARD_WIDTH
    text_w = width - 2 * MARGIN
    canvas = Image.new("RGB", (width, 4000), BG)
    draw = ImageDraw.Draw(canvas)
    boxes: dict[str, Box] = {}
    y = _header(draw, width, ctx, f"{spot.label}, {float(facts.diameter_mm):.1f} mm", colour)
    # the border pattern, where it was read, and why there
    y = _paragraph(draw, MARGIN, y, f"Border pattern {_pattern(facts.border_pattern)}, read on slice {read + 1}"
                   + (f" ({side} border)" if read == k else f", one beyond the {side} border slice {k + 1}"),
                   text_w, bold=True)
    if read != k:
        why = facts.read_note or "the border slice gave no clear reading"
        y = _paragraph(draw, MARGIN, y, f"Outer slice read: {why}.", text_w, fill=NOTE)
    y += 6
    # full slices: magnitude on the border slice, the phase read on the slice read
    reg = spot.region
    letters = _orientation_letters(ctx)
    panels = (
        ("magnitude_slice", window(ctx.magnitude.data[k], *mag_win), f"Magnitude, border slice {k + 1}",
         f"slice {k + 1}/{n_slices} at {slice_location_mm(ctx, k):.1f} mm"),
        ("phase_slice", window(phase[read], *phase_win), f"Phase read, slice {read + 1}",
         f"{phase_shown}, {slice_location_mm(ctx, read):.1f} mm"),
    )
    for col, (name, gray, title, sub) in enumerate(panels):
        x0 = MARGIN + col * (PANEL_PX + MARGIN)
        draw.text((x0, y), title, fill=FG, font=body(True))
        draw.text((x0, y + LINE_PX), sub, fill=DIM, font=body())
        im, scale = _to_rgb(gray, PANEL_PX)
        d = ImageDraw.Draw(im)
        x, yy = (reg.center_col + 0.5) * scale, (reg.center_row + 0.5) * scale
        _circle(d, x, yy, reg.radius_px * scale + 6, colour)
        # beside the circle, on the left where the right would run off the panel (the card's
        # title already names the class, so the short identifier suffices)
        lx, ly, _ = _free_label_spot(d, short_label(spot), x, yy, reg.radius_px * scale + 6, im.size, [])
        _label(d, lx, ly, short_label(spot), colour)
        _draw_orientation(im, letters)
        top = y + 2 * LINE_PX + 2
        canvas.paste(im, (x0, top))
        boxes[name] = (x0, top, x0 + im.width, top + im.height)
    y = max(b[3] for b in boxes.values()) + 12
    # zoomed crops: magnitude of the border slice, phase read; magnitude and phase of the central slice
    _, dr, dc = ctx.magnitude.voxel_size_mm
    pixel_mm = min(dr, dc)
    half_px = max(6, int(round(max(CROP_HALF_MM, 3.0 * float(facts.diameter_mm)) / pixel_mm)))
    r0, c0 = int(round(reg.center_row)), int(round(reg.center_col))
    footprint = _crop((ctx.label_map[k] == facts.id).astype(np.float32), r0, c0, half_px, 0.0) > 0.5
    central = facts.central_slice
    crops = (
        ("magnitude_border_crop", "magnitude", k, "Magnitude", f"border sl. {k + 1}"),
        ("phase_read_crop", "phase", read, "Phase read", f"sl. {read + 1}" + ("" if read == k else " (outer)")),
        ("magnitude_central_crop", "magnitude", central, "Magnitude", f"central sl. {central + 1}"),
        ("phase_central_crop", "phase", central, "Phase", f"central sl. {central + 1}"),
    )
    qsm = _qsm_volume(ctx)
    qsm_half = None
    if qsm is not None:   # beside the phase crops: the susceptibility map on the central slice
        crops += (("qsm_crop", "qsm", central, "QSM", f"central sl. {central + 1}"),)
    crop_w = (width - (len(crops) + 1) * MARGIN) // len(crops)
    for i, (name, what, kk, title, sub) in enumerate(crops):
        mag_patch = _crop(ctx.magnitude.data[kk], r0, c0, half_px, 0.0)
        if what == "qsm":
            chi_patch = _crop(qsm[kk], r0, c0, half_px, 0.0)
            qsm_half = qsm_window_half_ppm(chi_patch)
            gray = window(chi_patch, -qsm_half, qsm_half)
        elif what == "magnitude":
            gray = window(mag_patch, *mag_win)
        else:
            own = footprint if kk == read else \
                _crop((ctx.label_map[kk] == facts.id).astype(np.float32), r0, c0, half_px, 0.0) > 0.5
            rel = relative_phase(_crop(phase[kk], r0, c0, half_px, 0.0), mag_patch, own if own.any() else footprint,
                                 pixel_mm, wrapped=wrapped)
            gray = window(rel, *relative_window(rel, mag_patch))
        im, scale = _to_rgb(gray, crop_w)
        ctr = (half_px + 0.5) * scale
        _circle(ImageDraw.Draw(im), ctr, ctr, reg.radius_px * scale + 10, colour, width=1)
        x0 = MARGIN + i * (crop_w + MARGIN)
        draw.text((x0, y), title, fill=FG, font=body(True))
        draw.text((x0, y + LINE_PX), sub, fill=DIM, font=body())
        top = y + 2 * LINE_PX + 2
        canvas.paste(im, (x0, top))
        boxes[name] = (x0, top, x0 + im.width, top + im.height)
        if name in ("phase_read_crop", "qsm_crop"):
            rr = reg.radius_px * scale
            boxes[name.replace("_crop", "_spot")] = (int(round(x0 + ctr - rr)), int(round(top + ctr - rr)),
                                        int(round(x0 + ctr + rr)) + 1, int(round(top + ctr + rr)) + 1)
    y = boxes["phase_central_crop"][3] + 12
    if qsm_half is not None:
        x0, _, x1, bottom = boxes["qsm_crop"]
        boxes["qsm_scale"], y = _draw_grey_scale(canvas, draw, x0, bottom + 6, x1 - x0, qsm_half)
        y += 6
    # the spot's facts
    ub, lb = facts.upper_border_slice, facts.lower_border_slice
    facts_lines = [
        (f"Class: {spot.finding.value}.  Diameter: {float(facts.diameter_mm):.1f} mm.  "
         f"Slices {min(facts.slice_indices) + 1}-{max(facts.slice_indices) + 1}" if facts.slice_indices else
         f"Class: {spot.finding.value}.  Diameter: {float(facts.diameter_mm):.1f} mm", FG),
        (f"Border patterns: upper (slice {ub + 1}) {_pattern(facts.upper_border_pattern)}, "
         f"lower (slice {lb + 1}) {_pattern(facts.lower_border_pattern)}.  "
         f"Central (slice {central + 1}): {_pattern(facts.central_pattern)}", FG),
        (f"Certainty: {certainty_text(facts.confidence, spot.finding)} ({certainty_basis(ctx)})", FG),
    ]
    if qsm_half is not None:
        facts_lines.append((f"QSM: {qsm_reading_text(facts)}. Grey scale black {-qsm_half:+.1f} to white "
                            f"{qsm_half:+.1f} ppm (white = paramagnetic); map relative to the "
                            f"{_qsm_reference(ctx)}", FG))
    if facts.reason:
        facts_lines.append((f"Why: {facts.reason}", FG))
    for text, fill in facts_lines:
        y = _paragraph(draw, MARGIN, y, text, text_w, fill=fill)
    y = _convention_lines(draw, MARGIN, y + 4, text_w, ctx)
    y = _footer(draw, MARGIN, y + 4, text_w, ctx)
    out, top = _clear_edges(canvas.crop((0, 0, width, y + 4)))
    boxes = {name: (b[0], b[1] + top, b[2], b[3] + top) for name, b in boxes.items()}
    return SpotCard(np.asarray(out), boxes, read, phase_shown)


def _qsm_reference(ctx: ResultContext) -> str:
    """What the map's zero is, from the report's QSM description ("... relative to the X")."""
    _, found, ref = ctx.report.qsm_description.rpartition("relative to the ")
    return ref.strip().rstrip(".") if found and ref.strip() else "reference stated in the QSM series"


def spot_card(ctx: ResultContext, spot: TrackedSpot, mag_win, phase_win=None) -> np.ndarray:
    """The pixels of one spot's card (:func:`render_spot_card`)."""
    return render_spot_card(ctx, spot, mag_win, phase_win).pixels


def _patient_orientation(ctx: ResultContext) -> tuple[str, str]:
    """Patient Orientation (0020,0020) letters of the row and column directions."""
    o = ctx.magnitude.frames[0].orientation or (1, 0, 0, 0, 1, 0)

    def letter(v) -> str:
        axis = int(np.argmax(np.abs(v)))
        return (("L", "R"), ("P", "A"), ("H", "F"))[axis][0 if v[axis] > 0 else 1]
    # PatientOrientation gives the direction of the rows (left->right) and columns (top->bottom)
    return letter(o[:3]), letter(o[3:])


@source_names_tolerated()
def build_summary(ctx: ResultContext, encoding: str = DEFAULT_SUMMARY_ENCODING) -> list[hd.sc.SCImage]:
    """The overview image and one card per spot, as RGB Secondary Capture instances stored as
    ``encoding`` says (:data:`SUMMARY_ENCODINGS`)."""
    return list(iter_summary(ctx, encoding))


def iter_summary(ctx: ResultContext, encoding: str = DEFAULT_SUMMARY_ENCODING) -> Iterator[hd.sc.SCImage]:
    """:func:`build_summary` one image at a time, each made when the caller takes it: a card's
    pixels and its instance are not held beside the others' (memory: issue 15)."""
    syntax = summary_transfer_syntax(encoding)   # an unknown encoding fails before any work
    with source_names_tolerated():
        mag_win = magnitude_window(ctx.magnitude.data)
        view = _phase_volume(ctx)
        phase_win = phase_window(view[0], ctx.magnitude.data)
        instance = _summary_instance(ctx, 1, overview_image(ctx, mag_win), [], "overview", syntax)
    yield instance
    for number, s in enumerate(ctx.spots, start=2):
        with source_names_tolerated():
            card = render_spot_card(ctx, s, mag_win, phase_win, view)
            # the source images it shows: magnitude of the border and central slices, phase of the
            # slice read and of the central slice
            shown = [(ctx.magnitude, s.border_slice), (ctx.phase, card.read_slice),
                     (ctx.magnitude, s.reported.central_slice), (ctx.phase, s.reported.central_slice)]
            # (the QSM crop is derived from the phase: its central slice is listed above)
            refs, seen = [], set()
            for vol, k in shown:
                ds, frame = ctx.frame_ref(vol, k)
                if (ds.SOPInstanceUID, frame) not in seen:
                    seen.add((ds.SOPInstanceUID, frame))
                    refs.append((ds, frame))
            instance = _summary_instance(ctx, number, card.pixels, refs, s.label, syntax)
            del card
        yield instance


def _summary_instance(ctx: ResultContext, number: int, pixels: np.ndarray,
                      refs: list[tuple[pydicom.Dataset, Optional[int]]], what: str,
                      transfer_syntax: str = SUMMARY_TRANSFER_SYNTAX) -> hd.sc.SCImage:
    """One summary page as an RGB Secondary Capture instance (``number``: its InstanceNumber)."""
    t = ctx.template
    kwargs = dict(
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        study_instance_uid=t.StudyInstanceUID,
        series_instance_uid=ctx.series_uids["summary"],
        series_number=ctx.series_numbers["summary"],
        sop_instance_uid=hd.UID(),
        instance_number=number,
        manufacturer=MANUFACTURER,
        patient_id=t.get("PatientID"),
        patient_name=t.get("PatientName"),
        patient_birth_date=t.get("PatientBirthDate"),
        patient_sex=t.get("PatientSex") or None,
        accession_number=t.get("AccessionNumber"),
        study_id=t.get("StudyID"),
        study_date=t.get("StudyDate"),
        study_time=t.get("StudyTime"),
        referring_physician_name=t.get("ReferringPhysicianName"),
        patient_orientation=_patient_orientation(ctx),
        transfer_syntax_uid=transfer_syntax,
    )
    sc = hd.sc.SCImage(**kwargs)
    # General Series Laterality is Type 2C (paired body parts only): naming the unpaired
    # body part lets validators see that it is not needed.
    sc.BodyPartExamined = str(ctx.template.get("BodyPartExamined", "") or "BRAIN")
    sc.BurnedInAnnotation = "YES"
    sc.RecognizableVisualFeatures = "NO"
    sc.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    sc.ImageComments = NOT_FOR_DIAGNOSIS
    sc.DerivationDescription = f"borderphase {ctx.algorithm_version} summary ({what}); {NOT_FOR_DIAGNOSIS}"
    if refs:
        items = []
        for ds, frame in refs:
            item = pydicom.Dataset()
            item.ReferencedSOPClassUID = ds.SOPClassUID
            item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            if frame is not None:
                item.ReferencedFrameNumber = frame
            items.append(item)
        sc.SourceImageSequence = items
    return finish(ctx, sc, "summary")
