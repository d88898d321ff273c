"""Summary images: burned-in RGB Secondary Capture series for viewers that show no SR or SEG.

Image 1 is the overview: a minimum-intensity projection of the magnitude with every spot
circled and labelled, the phase convention and the rule that decided it, the counts, and the
table of all spots. Then one "spot card" per spot: the full border slice (magnitude and phase,
spot circled) and 4x zoomed crops of the border and central slices, with the spot's row of the
table. Every image carries a red banner "DERIVED RESULT - NOT FOR PRIMARY DIAGNOSIS" and
Burned In Annotation YES (PS3.3 C.7.6.1.1.3). Phase is shown as the scanner's numbers after
vendor scaling, black = low, which is how the method's patterns 1-6 are defined.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Optional

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from dicom_io.results import codes
from dicom_io.results.context import source_names_tolerated, MANUFACTURER, NOT_FOR_DIAGNOSIS, ResultContext, TrackedSpot, finish
from dicom_io.results.report import Finding
from dicom_io.vocabulary import Handedness

CLASS_COLOURS = {
    Finding.MICROBLEED: (255, 70, 70),      # red
    Finding.CALCIFICATION: (70, 200, 255),  # cyan
    Finding.INDETERMINATE: (255, 215, 0),   # yellow
}
BANNER = (170, 0, 0)
BG = (0, 0, 0)
FG = (235, 235, 235)
DIM = (160, 160, 160)
PANEL_PX = 400          # full-slice panel edge
CROP_PX = 200           # zoomed crop edge
MARGIN = 12
CARD_WIDTH = 2 * PANEL_PX + 3 * MARGIN

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans{b}.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans{b}.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans{B}-Regular.ttf",
)


@functools.lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """A readable sans-serif font (DejaVu Sans if installed, else Pillow's bundled one)."""
    for pattern in _FONT_CANDIDATES:
        p = Path(pattern.format(b="-Bold" if bold else "", B="" if not bold else ""))
        if p.exists():
            return ImageFont.truetype(str(p), size)
    try:
        import matplotlib
        p = Path(matplotlib.get_data_path()) / "fonts/ttf" / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
        if p.exists():
            return ImageFont.truetype(str(p), size)
    except ImportError:
        pass
    return ImageFont.load_default(size=size)


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


def phase_window(vol: np.ndarray) -> tuple[float, float]:
    """Symmetric about zero, wide enough for the brain's filtered phase (at most +-pi)."""
    sample = vol[:, ::4, ::4] if vol.ndim == 3 else vol[::4, ::4]
    w = float(np.percentile(np.abs(sample), 99.0))
    w = min(max(w, 0.05), math.pi)
    return -w, w


def local_phase_window(patch: np.ndarray) -> tuple[float, float]:
    """A window centred on the crop's median phase, wide enough for 98% of its pixels: the
    spot's pattern (darker or brighter than its surroundings) stays what it is, only easier
    to see than under the whole-slice window when background phase varies across the head."""
    centre = float(np.median(patch))
    half = float(np.percentile(np.abs(patch - centre), 98.0))
    half = min(max(half, 0.05), math.pi)
    return centre - half, centre + half


def _to_rgb(gray: np.ndarray, size_px: int) -> tuple[Image.Image, float]:
    """Scale a 2D uint8 image so its longer edge is ``size_px``; returns (RGB image, scale)."""
    h, w = gray.shape
    scale = size_px / max(h, w)
    im = Image.fromarray(gray, mode="L").resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    return im.convert("RGB"), scale


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
    f = font(14, bold=True)
    left, right, top, bottom = letters
    w, h = im.size
    d.text((4, h / 2 - 8), left, fill=(255, 255, 0), font=f)
    d.text((w - 14, h / 2 - 8), right, fill=(255, 255, 0), font=f)
    d.text((w / 2 - 5, 2), top, fill=(255, 255, 0), font=f)
    d.text((w / 2 - 5, h - 18), bottom, fill=(255, 255, 0), font=f)


def slice_location_mm(ctx: ResultContext, k: int) -> float:
    """Position of slice ``k`` along the slice normal (what scanners print as Slice Location)."""
    a = ctx.magnitude.affine_lps
    normal = a[:3, 0] / np.linalg.norm(a[:3, 0])
    return float(np.dot(normal, ctx.magnitude.index_to_lps_mm(np.array([k, 0, 0]))[0]))


def _circle(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, colour, width: int = 2) -> None:
    r = max(r, 5.0)
    draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=width)


def _label(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, colour, size: int = 15) -> None:
    f = font(size, bold=True)
    draw.text((x, y), text, fill=colour, font=f, stroke_width=2, stroke_fill=(0, 0, 0))


# --- text blocks --------------------------------------------------------------------------------
def _pattern(p: Optional[int]) -> str:
    return "-" if p is None else f"{p} ({codes.PATTERN_SHORT[p]})"


TABLE_COLUMNS = [("Spot", 70), ("Class", 112), ("Diam. (mm)", 105), ("Border pattern", 145),
                 ("Central pattern", 150), ("Certainty", 85), ("Slices", 100)]


def table_rows(ctx: ResultContext) -> list[tuple[TrackedSpot, list[str]]]:
    rows = []
    for s in ctx.spots:
        facts = s.reported
        slices = sorted(k + 1 for k in facts.slice_indices)
        span = f"{slices[0]}-{slices[-1]}" if slices else "-"
        rows.append((s, [s.label, s.finding.value, f"{float(facts.diameter_mm):.1f}",
                         _pattern(facts.border_pattern), _pattern(facts.central_pattern),
                         f"{100 * float(facts.confidence):.0f} %", span]))
    return rows


def _draw_table(draw: ImageDraw.ImageDraw, x0: int, y0: int, rows, highlight: Optional[str] = None
                ) -> int:
    f, fb = font(14), font(14, bold=True)
    x = x0
    for name, w in TABLE_COLUMNS:
        draw.text((x, y0), name, fill=FG, font=fb)
        x += w
    y = y0 + 20
    draw.line([x0, y - 2, x0 + sum(w for _, w in TABLE_COLUMNS), y - 2], fill=DIM, width=1)
    for spot, cells in rows:
        colour = CLASS_COLOURS[spot.finding]
        if highlight is not None and spot.label != highlight:
            colour = tuple(int(c * 0.6) for c in colour)
        x = x0
        for (name, w), cell in zip(TABLE_COLUMNS, cells):
            draw.text((x, y), cell, fill=colour if name in ("Spot", "Class") else FG, font=f)
            x += w
        y += 18
    return y


def _header(draw: ImageDraw.ImageDraw, width: int, ctx: ResultContext, subtitle: str) -> int:
    draw.rectangle([0, 0, width, 34], fill=BANNER)
    fb = font(20, bold=True)
    tw = draw.textlength(NOT_FOR_DIAGNOSIS, font=fb)
    draw.text(((width - tw) / 2, 5), NOT_FOR_DIAGNOSIS, fill=(255, 255, 255), font=fb)
    a = ctx.report
    y = 42
    draw.text((MARGIN, y), f"borderphase {ctx.algorithm_version}  -  {subtitle}", fill=FG, font=font(16, bold=True))
    y += 22
    conv = a.phase_convention
    meaning = {Handedness.RIGHT: "paramagnetic (microbleed) shows dark on phase",
               Handedness.LEFT: "paramagnetic (microbleed) shows bright on phase",
               "unknown": "spots cannot be classified"}.get(conv, conv)
    draw.text((MARGIN, y), f"Phase convention: {conv} - {meaning}", fill=FG, font=font(14))
    y += 18
    draw.text((MARGIN, y), f"Decided by: {a.convention_source}   Vendor: {a.vendor}", fill=DIM, font=font(14))
    return y + 24


def _footer(draw: ImageDraw.ImageDraw, width: int, height: int) -> None:
    lines = ("Automated reading of GRE magnitude and phase. Phase: black = low value "
             "(zoomed phase: window centred on the local median).",
             "Verify every finding on the source images.")
    for i, text in enumerate(lines):
        draw.text((MARGIN, height - 38 + 17 * i), text, fill=DIM, font=font(12))


# --- images -------------------------------------------------------------------------------------
def overview_image(ctx: ResultContext, mag_win, phase_win) -> np.ndarray:
    rows = table_rows(ctx)
    width = max(CARD_WIDTH, sum(w for _, w in TABLE_COLUMNS) + 2 * MARGIN)
    n = ctx.counts()
    height = 34 + 90 + 24 + 512 + 20 + 22 * 2 + 20 * (len(rows) + 1) + 40
    canvas = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(canvas)
    y = _header(draw, width, ctx, "study overview")
    if ctx.spots:
        counts = (f"{len(ctx.spots)} dark spots: {n[Finding.MICROBLEED]} microbleed(s), "
                  f"{n[Finding.CALCIFICATION]} calcification(s), {n[Finding.INDETERMINATE]} indeterminate")
    else:
        counts = "No dark spots found: microbleeds absent, calcifications absent"
    draw.text((MARGIN, y), counts, fill=FG, font=font(16, bold=True))
    y += 26
    mip = ctx.magnitude.data.min(axis=0)
    im, scale = _to_rgb(window(mip, *mag_win), 512)
    d = ImageDraw.Draw(im)
    for s in ctx.spots:
        c = ctx.magnitude.lps_mm_to_index(np.asarray(s.reported.center_lps_mm, dtype=float))[0]
        x, yy = (c[2] + 0.5) * scale, (c[1] + 0.5) * scale
        colour = CLASS_COLOURS[s.finding]
        _circle(d, x, yy, s.region.radius_px * scale + 4, colour)
        _label(d, x + s.region.radius_px * scale + 7, yy - 9, s.label, colour)
    _draw_orientation(im, _orientation_letters(ctx))
    x_img = (width - im.width) // 2
    canvas.paste(im, (x_img, y))
    draw.text((x_img, y + im.height + 2), "Magnitude, minimum-intensity projection over all slices",
              fill=DIM, font=font(12))
    y += im.height + 22
    if rows:
        _draw_table(draw, MARGIN, y, rows)
    _footer(draw, width, height)
    return np.asarray(canvas)


def spot_card(ctx: ResultContext, spot: TrackedSpot, rows, mag_win, phase_win) -> np.ndarray:
    facts = spot.reported
    height = 34 + 90 + 20 + PANEL_PX + 24 + CROP_PX + 24 + 20 * 2 + 40 + 40
    width = max(CARD_WIDTH, sum(w for _, w in TABLE_COLUMNS) + 2 * MARGIN)
    canvas = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(canvas)
    colour = CLASS_COLOURS[spot.finding]
    k = spot.border_slice
    which = "upper" if k == facts.upper_border_slice else "lower"
    y = _header(draw, width, ctx, f"{spot.label}: {spot.finding.value}, border slice {k + 1} ({which})")
    reg = spot.region
    # full border slice, magnitude and phase
    where = f"slice {k + 1}/{ctx.magnitude.shape[0]} at {slice_location_mm(ctx, k):.1f} mm"
    letters = _orientation_letters(ctx)
    for col, (vol, win, title) in enumerate((
            (ctx.magnitude, mag_win, f"Magnitude, {where}"),
            (ctx.phase, phase_win, f"Phase, {where}"))):
        im, scale = _to_rgb(window(vol.data[k], *win), PANEL_PX)
        d = ImageDraw.Draw(im)
        x, yy = (reg.center_col + 0.5) * scale, (reg.center_row + 0.5) * scale
        _circle(d, x, yy, reg.radius_px * scale + 6, colour)
        _label(d, x + reg.radius_px * scale + 9, yy - 9, spot.label, colour)
        _draw_orientation(im, letters)
        x0 = MARGIN + col * (PANEL_PX + MARGIN)
        draw.text((x0, y), title, fill=FG, font=font(14, bold=True))
        canvas.paste(im, (x0, y + 20))
    y += 20 + PANEL_PX + 6
    # zoomed crops: border and central slice, magnitude and phase
    _, dr, dc = ctx.magnitude.voxel_size_mm
    half_px = max(6, int(round(max(12.0, 3.0 * float(facts.diameter_mm)) / min(dr, dc))))
    r0, c0 = int(round(reg.center_row)), int(round(reg.center_col))
    crops = [(ctx.magnitude, mag_win, k, "mag border"), (ctx.phase, phase_win, k, "phase border"),
             (ctx.magnitude, mag_win, facts.central_slice, "mag central"),
             (ctx.phase, phase_win, facts.central_slice, "phase central")]
    crop_w = (width - 5 * MARGIN) // 4
    for i, (vol, win, kk, title) in enumerate(crops):
        sl = vol.data[kk]
        pad = np.pad(sl, half_px, mode="constant", constant_values=float(win[0]))
        patch = pad[r0:r0 + 2 * half_px + 1, c0:c0 + 2 * half_px + 1]
        if vol is ctx.phase:
            win = local_phase_window(patch)
        im, scale = _to_rgb(window(patch, *win), min(CROP_PX, crop_w))
        d = ImageDraw.Draw(im)
        ctr = (half_px + 0.5) * scale
        _circle(d, ctr, ctr, reg.radius_px * scale + 10, colour, width=1)
        x0 = MARGIN + i * (crop_w + MARGIN)
        draw.text((x0, y), f"{title} (sl. {kk + 1}, x{scale:.0f})", fill=FG, font=font(13))
        canvas.paste(im, (x0, y + 18))
    y += 18 + min(CROP_PX, crop_w) + 10
    y = _draw_table(draw, MARGIN, y, [r for r in rows if r[0] is spot])
    if facts.reason:
        draw.text((MARGIN, y + 4), f"Why: {facts.reason}"[:110], fill=FG, font=font(13))
    _footer(draw, width, height)
    return np.asarray(canvas)


def _patient_orientation(ctx: ResultContext) -> tuple[str, str]:
    """Patient Orientation (0020,0020) letters of the row and column directions."""
    o = ctx.magnitude.frames[0].orientation or (1, 0, 0, 0, 1, 0)

    def letter(v) -> str:
        axis = int(np.argmax(np.abs(v)))
        return (("L", "R"), ("P", "A"), ("H", "F"))[axis][0 if v[axis] > 0 else 1]
    # PatientOrientation gives the direction of the rows (left->right) and columns (top->bottom)
    return letter(o[:3]), letter(o[3:])


@source_names_tolerated()
def build_summary(ctx: ResultContext) -> list[hd.sc.SCImage]:
    """The overview image and one card per spot, as RGB Secondary Capture instances."""
    mag_win = magnitude_window(ctx.magnitude.data)
    phase_win = phase_window(ctx.phase.data)
    rows = table_rows(ctx)
    pages: list[tuple[np.ndarray, list[pydicom.Dataset], str]] = [
        (overview_image(ctx, mag_win, phase_win), [], "overview")]
    for s in ctx.spots:
        refs = []
        for vol in (ctx.magnitude, ctx.phase):
            ds, frame = ctx.frame_ref(vol, s.border_slice)
            refs.append((ds, frame))
        pages.append((spot_card(ctx, s, rows, mag_win, phase_win), refs, s.label))
    out = []
    for number, (pixels, refs, what) in enumerate(pages, start=1):
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
        out.append(finish(ctx, sc, "summary"))
    return out
