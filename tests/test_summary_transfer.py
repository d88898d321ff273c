"""Summary images are stored JPEG-LS Lossless (4-9 x smaller, the same pixels) and reach every
archive: as stored where the peer accepts JPEG-LS, decoded to an uncompressed syntax where it
does not. Against a real dcmtk storescp accepting only uncompressed syntaxes (its default), only
Implicit VR Little Endian (+xi) and everything (+xa); both senders: the early stream and the
ordinary delivery."""
from __future__ import annotations

import json
import logging

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
def test_every_summary_image_arrives_with_its_pixels(summary_files, tmp_path, option, arrives_as, caplog):
    want = _pixels_by_uid(summary_files)
    for how in ("stream", "send_files"):
        caplog.clear()
        caplog.set_level(logging.INFO, logger="dicom_io.net.scu")
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
        said = [r for r in caplog.records if r.levelno >= logging.INFO and "sent decoded" in r.getMessage()]
        # the decoding is said once per association and class, not once per card
        assert len(said) == (0 if arrives_as == JPEGLSLossless else 1), (how, [r.getMessage() for r in said])
        got = sorted(p for p in scp.out.iterdir() if p.is_file())
        syntaxes = {str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in got}
        assert syntaxes == {arrives_as}, (how, syntaxes)
        received = _pixels_by_uid(got)
        assert received.keys() == want.keys(), how
        for uid, px in want.items():
            assert np.array_equal(received[uid], px), (how, uid)


def test_the_node_receives_compressed_instances_without_warnings(summary_files, tmp_path, caplog):
    """Our own Storage SCP (the archive stand-in of ``borderphase demo``, the node's receiver) takes the
    JPEG-LS cards as stored, their headers read and their bytes kept, without pydicom's "End of file
    reached before delimiter" warning once per compressed instance (from parsing a prefix of a file
    whose Pixel Data has no length: `borderphase demo` printed 29 of them)."""
    from plugin.service.archive import ArchiveStandIn
    caplog.set_level(logging.WARNING)
    archive = ArchiveStandIn(tmp_path / "archive").start()
    try:
        report = send_files(DicomDestination("ARCHIVE", "127.0.0.1", archive.port, timeout_s=20), summary_files)
        assert report.sent == [str(p) for p in summary_files]
    finally:
        archive.stop()
    got = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in archive.files()}
    assert len(got) == len(summary_files)
    for p in summary_files:
        sent = dcmread(p)
        stored = dcmread(got[str(sent.SOPInstanceUID)])
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert stored.PixelData == sent.PixelData
    assert not [r.getMessage() for r in caplog.records if "delimiter" in r.getMessage()]


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


def test_the_encoding_is_a_site_choice_everywhere(tmp_path, monkeypatch):
    """``[analysis] summary_encoding`` (node and Orthanc plugin) and ``analyze --summary-encoding``
    offer the writer's encodings, JPEG-LS first; a wrong value is a config error naming the key;
    the node's and the plugin's settings reach the analysis."""
    from plugin.archive_plugin import analyse_child
    from plugin.commands.analyze import SUMMARY_ENCODING_CHOICES
    from plugin.service.config import Config, ConfigError, parse_config
    from plugin.service.worker import run_analysis
    from dicom_io.results.summary import DEFAULT_SUMMARY_ENCODING, SUMMARY_ENCODINGS
    assert SUMMARY_ENCODING_CHOICES == tuple(SUMMARY_ENCODINGS) and SUMMARY_ENCODING_CHOICES[0] == DEFAULT_SUMMARY_ENCODING
    assert Config(state_dir=tmp_path).analysis.summary_encoding == DEFAULT_SUMMARY_ENCODING
    assert parse_config({"state_dir": "/x", "analysis": {"summary_encoding": "uncompressed"}}).analysis.summary_encoding \
        == "uncompressed"
    with pytest.raises(ConfigError, match="analysis.summary_encoding"):
        parse_config({"state_dir": "/x", "analysis": {"summary_encoding": "jpeg2000"}}, source="node.toml")
    def fake(paths, out, **kw):   # runs in the study's own process: what it was given comes back
        return dict(kw)

    seen = run_analysis(Config(state_dir=tmp_path, analysis={"summary_encoding": "uncompressed"}), [], tmp_path,
                        analyse=fake)
    assert seen["options"].summary_encoding == "uncompressed"
    seen = run_analysis(Config(state_dir=tmp_path), [], tmp_path, analyse=fake)
    assert "options" not in seen
    import plugin.pipeline
    requests: list[dict] = []
    monkeypatch.setattr(plugin.pipeline, "analyze_paths", lambda inputs, out, **kw: requests.append(kw))
    monkeypatch.setattr(analyse_child, "die_with_parent", lambda pid: None)
    for value in ("uncompressed", None):
        request = {"inputs": [], "out": str(tmp_path), "parent_pid": 1}
        if value:
            request["summary_encoding"] = value
        (tmp_path / "request.json").write_text(json.dumps(request))
        assert analyse_child.main([str(tmp_path / "request.json")]) == 0
    assert requests[0]["options"].summary_encoding == "uncompressed" and "options" not in requests[1]


def test_uncompressed_cards_when_the_site_says_so(tmp_path):
    """The writer with ``summary_encoding="uncompressed"``: every card Explicit VR Little Endian,
    the same pixels as the JPEG-LS default; an unknown encoding fails before anything is written."""
    mag, ph = classic_pair(tmp_path)
    analysis = make_analysis(mag, ph, CLASSIC_SPOTS[:2])
    plain = write_results(analysis, mag, ph, tmp_path / "plain", include=("summary",), summary_encoding="uncompressed")
    packed = write_results(analysis, mag, ph, tmp_path / "packed", include=("summary",))
    plain_ds = sorted((dcmread(p) for p in plain.paths), key=lambda d: int(d.InstanceNumber))
    packed_ds = sorted((dcmread(p) for p in packed.paths), key=lambda d: int(d.InstanceNumber))
    assert {d.file_meta.TransferSyntaxUID for d in plain_ds} == {ExplicitVRLittleEndian}
    assert {d.file_meta.TransferSyntaxUID for d in packed_ds} == {JPEGLSLossless}
    for a, b in zip(plain_ds, packed_ds):
        assert np.array_equal(a.pixel_array, b.pixel_array)
    with pytest.raises(ValueError, match="summary encoding 'jpeg2000': expected one of jpeg-ls-lossless, uncompressed"):
        write_results(analysis, mag, ph, tmp_path / "bad", summary_encoding="jpeg2000")
    assert not (tmp_path / "bad").exists()
