"""Summary Secondary Capture images: burned-in RGB, marked as derived, one overview + one card
per spot, in the source study; the card shows the phase the method read (background removed,
on the slice read), readable at native size, with the top of the image left to the viewer."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
import pydicom
import pytest
from PIL import Image, ImageDraw

from dicom_io.results.context import NOT_FOR_DIAGNOSIS, build_context
from dicom_io.results import summary
from dicom_io.results.report import Finding
from dicom_io.results.summary import build_summary, render_overview, render_spot_card

from results_fixtures import (CLASSIC_SPOTS, classic_pair, default_study, make_analysis, sample_pair,
                              write_classic_series)

BANNER = (170, 0, 0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary")
    return classic_pair(tmp)


def _analysed(mag, ph, convention, edit=None):
    """(context, summary images) of the real pipeline's analysis of one pair, results input
    translated by plugin.pipeline.report_input with the method's background-removed phase
    (``edit``: a function applied to that input first)."""
    from plugin.pipeline import analyze_pair, report_input
    analysis, method = analyze_pair(mag, ph, convention=convention, convention_source="test")
    report = report_input(analysis, method)
    if edit is not None:
        report = edit(report)
    assert report.local_phase_rad is method.local_phase_rad and report.local_phase_rad is not None
    ctx = build_context(report, mag, ph, algorithm_version="test")
    return ctx, build_summary(ctx)


@pytest.fixture(scope="module", params=["GE", "Siemens"])
def sample(request):
    """sample_dicom/GE (right-handed) and Siemens (left-handed): raw phase, six spots each,
    among them a 6.2 mm microbleed whose raw phase wraps around its border-slice disc."""
    mag, ph, truth = sample_pair(request.param)
    return _analysed(mag, ph, truth["phase_convention"])


@pytest.fixture(scope="module")
def aliased(tmp_path_factory):
    """A 4 mm, 0.6 ppm microbleed (3 T, TE 25 ms, raw phase with background) read, as spotread reads
    a spot whose border slices disagree (aliasing), one slice beyond its upper border. Its border
    slices used to disagree on this phantom; since the in-plane unwrap leaves the signal void out
    (plugin.method.background) they agree, so the read one slice out is set on the results' input
    here: what is tested is how the card shows it."""
    from dataclasses import replace as dc_replace
    from plugin.method.spotread import ALIASING_WHY
    from plugin.phantom import render as P
    tmp = tmp_path_factory.mktemp("aliased")
    grid = P.Grid((16, 96, 96), (2.5, 0.45, 0.45))
    lesion = P.SphereLesion(1, (0.1, 0.2, 0.6), 4.0, 0.6, "microbleed")
    images = P.render([lesion], grid=grid, head=P.Head((100.0, 100.0, 100.0)), acquisition=P.Acquisition(),
                      convention="right-handed", seed=0)
    study = default_study()
    kw = dict(study=study, spacing=(0.45, 0.45), slice_step_mm=2.5, first_pos=(-21.6, -21.6, -20.0))
    mag = write_classic_series(tmp / "mag", images.magnitude[0], series_number=5, description="m",
                               component="magnitude", **kw)
    ph = write_classic_series(tmp / "ph", images.phase_rad[0], series_number=6, description="p",
                              component="phase", **kw)

    def read_one_beyond(report):
        (s,) = report.spots
        return dc_replace(report, spots=(dc_replace(s, upper_read_slice=s.upper_border_slice + 1, read_note=ALIASING_WHY),))
    return _analysed(mag, ph, "right-handed", edit=read_one_beyond)


# --- helpers ------------------------------------------------------------------------------------
def _inside_spot_grey(px: np.ndarray, box) -> float:
    """Mean grey of the inner 80 % of the circle inscribed in ``box``."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (x1 - x0) / 2
    yy, xx = np.mgrid[0:px.shape[0], 0:px.shape[1]]
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= (0.8 * r) ** 2
    assert disc.sum() >= 9
    return float(px[disc].astype(float).mean())


def _text_line_heights(px: np.ndarray, boxes) -> list[int]:
    """Ink height (rows) of every line of text or graphics outside the image panels: rows with a
    pixel brighter than 64 in any channel, runs of them; a horizontal rule (<= 2 rows) is skipped."""
    ink = px.max(axis=-1) > 64
    for x0, y0, x1, y1 in boxes.values():
        ink[y0:y1, x0:x1] = False
    rows = ink.any(axis=1)
    # an i's dot above a line with no other ascender is 1-3 blank rows above the rest: close such gaps
    rows = rows | ndimage.binary_closing(rows, structure=np.ones(5, bool))
    heights, start = [], None
    for y, on in enumerate(np.append(rows, False)):
        if on and start is None:
            start = y
        elif not on and start is not None:
            h = y - start
            if not (h <= 2 and ink[start:y].sum(axis=1).max() > 0.5 * px.shape[1]):
                heights.append(h)
            start = None
    return heights


def _banner_rows(px: np.ndarray) -> np.ndarray:
    """Rows that are the red banner across the whole width (mostly red, with its white text)."""
    red = np.all(px == BANNER, axis=-1)
    return np.nonzero(red.mean(axis=1) > 0.6)[0]


# --- the series ---------------------------------------------------------------------------------
def test_overview_and_one_card_per_spot(pair):
    mag, ph = pair
    ctx = build_context(make_analysis(mag, ph, CLASSIC_SPOTS), mag, ph, algorithm_version="1.2.3")
    images = build_summary(ctx)
    assert len(images) == 1 + len(CLASSIC_SPOTS)
    src = mag.frames[0].dataset
    for n, im in enumerate(images, start=1):
        assert im.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert im.PhotometricInterpretation == "RGB" and im.SamplesPerPixel == 3
        assert im.BurnedInAnnotation == "YES"
        assert NOT_FOR_DIAGNOSIS in im.ImageComments
        assert im.ImageType[0] == "DERIVED"
        assert im.SeriesDescription == "borderphase summary"
        assert im.SeriesNumber == 503 and im.InstanceNumber == n
        assert im.StudyInstanceUID == src.StudyInstanceUID and im.PatientID == src.PatientID
        assert im.PatientName == src.PatientName and im.AccessionNumber == src.AccessionNumber
        px = im.pixel_array
        # the red banner across the image says it is a derived result, below the viewer's overlays
        banner = _banner_rows(px)
        assert banner.size >= 30 and banner.min() >= math.ceil(0.08 * px.shape[0])
        assert np.all(px[banner] == 255, axis=-1).sum() > 500     # the banner's white text
    assert len({im.SeriesInstanceUID for im in images}) == 1
    # a card references the source images it shows: magnitude of the border and central slices,
    # phase of the slice read (here the border slice) and of the central slice
    card = images[1]
    refs = {i.ReferencedSOPInstanceUID for i in card.SourceImageSequence}
    spot = ctx.spots[0]
    k, c = spot.border_slice, spot.reported.central_slice
    assert spot.reported.read_slice == k
    assert refs == {mag.frames[k].sop_instance_uid, ph.frames[k].sop_instance_uid,
                    mag.frames[c].sop_instance_uid, ph.frames[c].sop_instance_uid}


def test_spot_colours_drawn_where_the_spot_is(pair):
    """The card's class colour (red for a microbleed) is drawn on both slice panels."""
    mag, ph = pair
    ctx = build_context(make_analysis(mag, ph, CLASSIC_SPOTS[:1]), mag, ph, algorithm_version="1")
    px = build_summary(ctx)[1].pixel_array.astype(int)
    boxes = render_spot_card(ctx, ctx.spots[0], summary.magnitude_window(mag.data)).boxes
    red = (px[..., 0] > 200) & (px[..., 1] < 100) & (px[..., 2] < 100)
    for name in ("magnitude_slice", "phase_slice"):
        x0, y0, x1, y1 = boxes[name]
        assert red[y0:y1, x0:x1].sum() > 50     # circle and label on the panel


def test_empty_study_summary_says_so(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(4, 32, 32), spots=[])
    ctx = build_context(make_analysis(mag, ph, []), mag, ph, algorithm_version="1")
    images = build_summary(ctx)
    assert len(images) == 1
    assert images[0].BurnedInAnnotation == "YES"


# --- what the radiologist sees -------------------------------------------------------------------
def test_phase_crop_agrees_with_the_pattern_printed_under_it(sample):
    """The card's "phase read" crop is the phase the method read: a dark-dominant border pattern
    (1, 3, 5) is a spot darker than its surroundings (mid grey), a bright-dominant one brighter.
    The raw phase of the 6.2 mm microbleed wraps on its border slice (the card showed a white
    disc under "1 (black)"); every spot of both conventions is checked on the stored pixels."""
    ctx, images = sample
    assert len(images) == 1 + len(ctx.spots) == 7
    mag_win = summary.magnitude_window(ctx.magnitude.data)
    for spot, image in zip(ctx.spots, images[1:]):
        pattern = spot.reported.border_pattern
        assert pattern is not None
        card = render_spot_card(ctx, spot, mag_win)
        assert card.phase_shown == "background removed"
        assert card.read_slice == spot.reported.read_slice
        px = image.pixel_array
        assert px.shape == card.pixels.shape
        grey = _inside_spot_grey(px.mean(axis=-1), card.boxes["phase_read_spot"])
        if pattern in (1, 3, 5):
            assert grey < 127.5 - 25, (spot.label, pattern, grey)
        else:
            assert grey > 127.5 + 25, (spot.label, pattern, grey)


def test_aliased_lesion_card_shows_the_outer_slice_it_was_read_on(aliased):
    """When spotread reads one slice beyond the border (aliasing), the card shows that slice's
    background-removed phase, says so in a note, and references that phase image."""
    ctx, images = aliased
    assert len(ctx.spots) == 1
    spot = ctx.spots[0]
    facts = spot.reported
    assert spot.finding is Finding.MICROBLEED and facts.border_pattern == 1
    k = spot.border_slice
    assert facts.read_slice == k + 1 and "aliasing" in facts.read_note       # upper border, one beyond
    card = render_spot_card(ctx, spot, summary.magnitude_window(ctx.magnitude.data))
    assert card.read_slice == k + 1
    px = images[1].pixel_array
    grey = _inside_spot_grey(px.mean(axis=-1), card.boxes["phase_read_spot"])
    assert grey < 127.5 - 25                                              # dark: pattern 1 (black)
    # the note, in its own colour, above the panels
    note = np.all(px == summary.NOTE, axis=-1)
    assert note[:card.boxes["magnitude_slice"][1]].sum() > 200
    refs = {i.ReferencedSOPInstanceUID for i in images[1].SourceImageSequence}
    assert ctx.phase.frames[k + 1].sop_instance_uid in refs


def test_nothing_but_background_in_the_top_8_percent(sample, pair):
    """Viewers draw their overlays and OHIF its cine bar over the top of an image: the top 8 %
    (and the bottom 5 %, corner overlays) of the overview and of every card are background."""
    _, images = sample
    mag, ph = pair
    classic = build_summary(build_context(make_analysis(mag, ph, CLASSIC_SPOTS), mag, ph, algorithm_version="1"))
    for im in [*images, *classic]:
        px = im.pixel_array
        h = px.shape[0]
        assert not px[:math.ceil(0.08 * h)].any()
        assert not px[h - math.ceil(0.05 * h):].any()
        assert px[math.ceil(0.08 * h):math.ceil(0.12 * h)].any()     # the title follows


def test_text_is_at_least_14_px_high_at_stored_size(sample):
    """The font is a scalable TrueType (DejaVu Sans where installed) and body text renders with
    capitals >= 14 px high; on the stored overview and cards every line of text outside the
    image panels is >= 14 px high."""
    f = summary.body()
    assert f.getname()[0] in ("DejaVu Sans", "Aileron")     # Aileron: Pillow's own scalable font
    im = Image.new("L", (60, 60), 0)
    ImageDraw.Draw(im).text((5, 5), "H", fill=255, font=f)
    rows = np.nonzero(np.asarray(im).max(axis=1) > 64)[0]
    assert rows.max() - rows.min() + 1 >= 14
    ctx, images = sample
    mag_win = summary.magnitude_window(ctx.magnitude.data)
    rendered = [render_overview(ctx, mag_win)] + [render_spot_card(ctx, s, mag_win) for s in ctx.spots]
    for r, image in zip(rendered, images):
        heights = _text_line_heights(image.pixel_array, r.boxes)
        assert len(heights) >= 10
        assert min(heights) >= 14, heights


def test_certainty_is_shown_with_its_basis(pair, sample):
    """Never "100 %" for a probability; no figure for an indeterminate spot; the basis of the
    certainty is printed, "not calibrated" when the input gives none."""
    assert summary.certainty_text(1.0, Finding.MICROBLEED) == "> 99 %"
    assert summary.certainty_text(0.8, Finding.CALCIFICATION) == "80 %"
    assert summary.certainty_text(0.0, Finding.INDETERMINATE) == "none (no call)"
    mag, ph = pair
    hand_made = build_context(make_analysis(mag, ph, CLASSIC_SPOTS), mag, ph, algorithm_version="1")
    assert summary.certainty_basis(hand_made) == "not calibrated"
    ctx, _ = sample
    assert "phantom" in summary.certainty_basis(ctx) and "not on clinical cases" in summary.certainty_basis(ctx)
    rows = summary.table_rows(ctx)
    assert all(cells[5] != "100 %" for _, cells in rows)


def test_qsm_crop_beside_the_phase_crops_shows_each_spots_sign(sample, pair):
    """With a QSM map each card has a fifth crop, the map on the central slice, right of the
    phase crops and level with them, with a grey-scale bar under it: a spot the QSM calls
    paramagnetic is brighter than mid grey (0 ppm), a diamagnetic one darker, on the stored
    pixels. Without a map (hand-made analysis) there is no QSM crop."""
    ctx, images = sample
    mag_win = summary.magnitude_window(ctx.magnitude.data)
    calls = set()
    for spot, image in zip(ctx.spots, images[1:]):
        card = render_spot_card(ctx, spot, mag_win)
        qsm_box, phase_box = card.boxes["qsm_crop"], card.boxes["phase_central_crop"]
        assert qsm_box[0] > phase_box[2] and qsm_box[1] == phase_box[1], (qsm_box, phase_box)
        scale = card.boxes["qsm_scale"]
        assert scale[1] > qsm_box[3] and (scale[0], scale[2]) == (qsm_box[0], qsm_box[2])
        px = image.pixel_array.mean(axis=-1)
        bar = px[(scale[1] + scale[3]) // 2, scale[0]:scale[2]]
        assert bar[0] < 10 and bar[-1] > 245 and np.all(np.diff(bar) >= -1)   # black -> white
        call = spot.reported.qsm_call
        assert call in ("paramagnetic", "diamagnetic"), (spot.label, call)
        calls.add(call)
        grey = _inside_spot_grey(px, card.boxes["qsm_spot"])
        if call == "paramagnetic":
            assert grey > 127.5 + 25, (spot.label, grey)
        else:
            assert grey < 127.5 - 25, (spot.label, grey)
    assert calls == {"paramagnetic", "diamagnetic"}
    mag, ph = pair
    hand_made = build_context(make_analysis(mag, ph, CLASSIC_SPOTS), mag, ph, algorithm_version="1")
    card = render_spot_card(hand_made, hand_made.spots[0], summary.magnitude_window(mag.data))
    assert "qsm_crop" not in card.boxes and len(card.boxes) == 7


def test_qsm_window_is_symmetric_and_rounded():
    assert summary.qsm_window_half_ppm(np.zeros((5, 5))) == 0.1
    assert summary.qsm_window_half_ppm(np.full((5, 5), 0.34)) == 0.4
    assert summary.qsm_window_half_ppm(np.full((5, 5), -5.0)) == 1.0


def test_the_overview_table_gives_each_spots_qsm_chi(sample, pair):
    """The overview's table has a "QSM chi (ppm)" column: the reported chi (SR DCM 126396) of every
    spot of the real pipeline's analysis, "-" where an analysis has no QSM map (hand-made)."""
    ctx, _ = sample
    col = summary.TABLE_HEADERS.index("QSM chi (ppm)")
    rows = summary.table_rows(ctx)
    assert rows and all(cells[col] == f"{s.reported.qsm_chi_ppm:+.2f}" for s, cells in rows)
    mag, ph = pair
    hand_made = build_context(make_analysis(mag, ph, CLASSIC_SPOTS), mag, ph, algorithm_version="1")
    assert all(cells[col] == "-" for _, cells in summary.table_rows(hand_made))


def test_overview_names_stay_apart_and_off_other_spots_where_spots_crowd():
    """28 spots, many within a few label heights of each other (as on a 2D T2*-GRE study's
    projection, benchmarks/qsm.md ninth session): no two names overlap and no name covers another
    spot's circle. The earlier placement (right of the circle, moved down a line at a time off
    earlier names only) overlapped names and covered circles here."""
    rng = np.random.default_rng(3)
    size = (900, 900)
    centres = np.r_[rng.uniform(250, 650, (20, 2)), rng.uniform(380, 520, (8, 2))]
    radii = rng.uniform(6, 14, len(centres))
    circles = [(float(x), float(y), float(r)) for (x, y), r in zip(centres, radii)]
    draw = ImageDraw.Draw(Image.new("RGB", size))
    placed: list = []
    for i, (x, y, r) in enumerate(circles):
        summary._free_label_spot(draw, f"Calc {i + 1}", x, y, r, size, placed, circles)
    for i, (x0, y0, x1, y1) in enumerate(placed):
        assert 0 <= x0 and x1 <= size[0] and 0 <= y0 and y1 <= size[1]
        assert summary._overlaps((x0, y0, x1, y1), placed[:i] + placed[i + 1:], []) == 0, f"name {i + 1} on another name"
        others = [c for j, c in enumerate(circles) if j != i]
        assert summary._overlaps((x0, y0, x1, y1), [], others) == 0, f"name {i + 1} on another spot"


def test_overview_says_when_a_thick_slice_makes_the_qsm_chi_read_low(pair):
    """The note appears when the analysis flags a spot's core reading as partial-volumed through
    the slice (ReportedSpot.qsm_chi_partial_volume), names the slice thickness and how many, and
    not otherwise (the 2.5 mm sample's spots are read with the through-slice column)."""
    from dataclasses import replace
    mag, ph = pair
    analysis = make_analysis(mag, ph, CLASSIC_SPOTS)
    assert summary.qsm_partial_volume_note(build_context(analysis, mag, ph, algorithm_version="1")) == ""
    spots = tuple(replace(s, qsm_chi_partial_volume=(i == 0)) for i, s in enumerate(analysis.spots))
    ctx = build_context(replace(analysis, spots=spots), mag, ph, algorithm_version="1")
    note = summary.qsm_partial_volume_note(ctx)
    assert "reads low" in note and "(1 here)" in note
    assert f"{float(ctx.magnitude.voxel_size_mm[0]):g} mm slice" in note
