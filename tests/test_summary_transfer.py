"""Summary images are stored JPEG-LS Lossless (4-9 x smaller, the same pixels) and reach every
archive: as stored where the peer accepts JPEG-LS, decoded to an uncompressed syntax where it
does not. Against a real dcmtk storescp accepting only uncompressed syntaxes (its default), only
Implicit VR Little Endian (+xi) and everything (+xa); both senders: the early stream and the
ordinary delivery."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless

from dicom_io.net.scu import DicomDestination, SendError, StoreStream, send_files
from dicom_io.results import write_results
from dicom_io.results.context import build_context
from dicom_io.results.summary import render_spot_card, iter_summary
from dicom_io.results.write import RESULT_STORAGE_CONTEXTS

from results_fixtures import CLASSIC_SPOTS, classic_pair, make_analysis
from test_scu_idle import _StoreSCP, _wait_accepted

pytestmark = [pytest.mark.peers]


@pytest.fixture(scope="module")
def summary_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary_transfer")
    mag, ph = classic_pair(tmp)
    written = write_results(make_analysis(mag, ph, CLASSIC_SPOTS[:2]), mag, ph, tmp / "out", include=("summary",))
    files = sorted(p for p in written.paths if p.parent.name == "summary")
    assert len(files) == 3     # the overview and one card per spot
    return files


def _pixels_by_uid(paths) -> dict[str, np.ndarray]:
    return {str(ds.SOPInstanceUID): ds.pixel_array for ds in (dcmread(p) for p in paths)}


def test_a_card_is_stored_jpeg_ls_lossless_with_the_rendered_pixels(tmp_path):
    mag, ph = classic_pair(tmp_path)
    ctx = build_context(make_analysis(mag, ph, CLASSIC_SPOTS[:1]), mag, ph, algorithm_version="1")
    images = list(iter_summary(ctx))
    card = images[1]
    assert card.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert card.get("LossyImageCompression", "00") == "00"
    from dicom_io.results.summary import magnitude_window, phase_window, _phase_volume
    view = _phase_volume(ctx)
    rendered = render_spot_card(ctx, ctx.spots[0], magnitude_window(ctx.magnitude.data),
                                phase_window(view[0], ctx.magnitude.data), view).pixels
    assert np.array_equal(card.pixel_array, rendered)
    assert len(card.PixelData) < rendered.nbytes / 3


@pytest.mark.parametrize("option, arrives_as", [
    (None, ExplicitVRLittleEndian),      # storescp's default: the uncompressed syntaxes only
    ("+xi", ImplicitVRLittleEndian),     # implicit VR only: decoded, then re-encoded by pynetdicom
    ("+xa", JPEGLSLossless),             # accepts all: the cards go as stored
], ids=["uncompressed-only", "implicit-only", "accepts-jpeg-ls"])
def test_every_summary_image_arrives_with_its_pixels(summary_files, tmp_path, option, arrives_as):
    want = _pixels_by_uid(summary_files)
    for how in ("stream", "send_files"):
        scp = _StoreSCP(tmp_path / how, *([option] if option else []))
        try:
            dest = DicomDestination("STORESCP", "127.0.0.1", scp.port, timeout_s=20)
            if how == "stream":
                stream = StoreStream(dest, RESULT_STORAGE_CONTEXTS)
                for p in summary_files:
                    stream.put(p)
                _wait_accepted(stream, len(summary_files))
                assert stream.close() == [str(p) for p in summary_files] and stream.error is None
            else:
                report = send_files(dest, summary_files)
                assert report.sent == [str(p) for p in summary_files]
        finally:
            scp.stop()
        got = sorted(p for p in scp.out.iterdir() if p.is_file())
        syntaxes = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in got}
        assert syntaxes == {arrives_as}, (how, syntaxes)
        received = _pixels_by_uid(got)
        assert received.keys() == want.keys(), how
        for uid, px in want.items():
            assert np.array_equal(received[uid], px), (how, uid)


def test_a_card_that_cannot_be_decoded_for_the_peer_is_named(summary_files, tmp_path):
    """A card whose JPEG-LS stream is damaged, for a peer that accepts only uncompressed syntaxes:
    a SendError naming the file and the problem, not a half-sent or silently skipped card."""
    ds = dcmread(summary_files[1])
    frame = bytes(ds.PixelData)
    # keep the Basic Offset Table and the item header; cut the codestream after its first bytes
    ds.PixelData = encapsulate([next(generate_frames(frame, number_of_frames=1))[:64]])
    damaged = tmp_path / "damaged_card.dcm"
    ds.save_as(damaged, enforce_file_format=True)
    scp = _StoreSCP(tmp_path / "rx")
    try:
        dest = DicomDestination("STORESCP", "127.0.0.1", scp.port, timeout_s=20)
        with pytest.raises(SendError, match=r"damaged_card\.dcm: cannot decode its JPEG-LS Lossless"):
            send_files(dest, [damaged])
    finally:
        scp.stop()
    assert not any(p.is_file() for p in scp.out.iterdir())
