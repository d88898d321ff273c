"""Summary Secondary Capture images: burned-in RGB, marked as derived, one overview + one card
per spot, in the source study."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicom_io.results.context import NOT_FOR_DIAGNOSIS, build_context
from dicom_io.results.summary import build_summary

from results_fixtures import CLASSIC_SPOTS, classic_pair, make_analysis


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary")
    return classic_pair(tmp)


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
        # the red banner across the top says it is a derived result
        assert tuple(px[3, 3]) == (170, 0, 0)
        white = np.all(px[5:30] == 255, axis=-1)
        assert white.sum() > 500              # the banner's white text
    assert len({im.SeriesInstanceUID for im in images}) == 1
    # cards reference the border-slice images they show
    card = images[1]
    refs = {i.ReferencedSOPInstanceUID for i in card.SourceImageSequence}
    border = ctx.spots[0].border_slice
    assert refs == {mag.frames[border].sop_instance_uid, ph.frames[border].sop_instance_uid}


def test_spot_colours_drawn_where_the_spot_is(pair):
    """The card's class colour (red for a microbleed) is drawn on the image."""
    mag, ph = pair
    ctx = build_context(make_analysis(mag, ph, CLASSIC_SPOTS[:1]), mag, ph, algorithm_version="1")
    px = build_summary(ctx)[1].pixel_array.astype(int)
    red = (px[..., 0] > 200) & (px[..., 1] < 100) & (px[..., 2] < 100)
    assert red[120:530].sum() > 50           # circles and labels on the slice panels


def test_empty_study_summary_says_so(tmp_path):
    mag, ph = classic_pair(tmp_path, shape=(4, 32, 32), spots=[])
    ctx = build_context(make_analysis(mag, ph, []), mag, ph, algorithm_version="1")
    images = build_summary(ctx)
    assert len(images) == 1
    assert images[0].BurnedInAnnotation == "YES"
