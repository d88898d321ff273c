"""Series -> stacks per (component, echo), volumes from stored pixels, compressed transfer
syntaxes (encoded by real dcmtk tools and pydicom's encoders), and the pixel size limit."""
from __future__ import annotations

import subprocess
import tracemalloc

import numpy as np
import pydicom
import pytest

from conftest import require_peer
from dicom_io.read import series
from dicom_io.errors import DicomInputError

TOOLS = {"jpeg_lossless": ["/usr/bin/dcmcjpeg"], "jpeg_ls": ["/usr/bin/dcmcjpls"], "rle": ["/usr/bin/dcmcrle"],
         "deflate": ["/usr/bin/dcmconv", "+td"]}
EXPECTED_TS = {"jpeg_lossless": "1.2.840.10008.1.2.4.70", "jpeg_ls": "1.2.840.10008.1.2.4.80",
               "rle": "1.2.840.10008.1.2.5", "deflate": "1.2.840.10008.1.2.1.99",
               "jpeg2000": "1.2.840.10008.1.2.4.90"}


def philips_like(mr_writer, n=4, rows=6, cols=7):
    """One series holding magnitude and phase of two echoes, files named against slice order."""
    rng = np.random.default_rng(1)
    truth = {}
    k = 0
    for echo, te in ((1, 2.3), (2, 4.6)):
        for comp in ("M", "P"):
            vol = rng.integers(0, 4095, size=(n, rows, cols)).astype(np.uint16)
            truth[(comp, echo)] = vol
            for s in reversed(range(n)):
                k += 1
                mr_writer(f"IM_{k:04d}", rows=rows, columns=cols, position=(0, 0, 3.0 * s), echo_number=echo,
                          echo_time_ms=te, image_type=("ORIGINAL", "PRIMARY", comp, "FFE"), manufacturer="Philips",
                          pixels=vol[s], instance_number=1000 - k,
                          rescale=(1.53455, -3142) if comp == "P" else None)
    return truth


def test_one_series_with_magnitude_and_phase_of_two_echoes(mr_writer):
    truth = philips_like(mr_writer)
    res = series.scan([mr_writer.root])
    assert res.problems == [] and len(res.series) == 1
    s = res.series[0]
    assert s.vendor == "Philips" and s.sop_class == "classic" and s.phase_convention == "right-handed"
    assert [(st.component, st.echo_number, st.echo_time_ms, st.n_slices) for st in s.stacks] == [
        ("magnitude", 1, 2.3, 4), ("magnitude", 2, 4.6, 4), ("phase", 1, 2.3, 4), ("phase", 2, 4.6, 4)]
    for st in s.stacks:
        v = series.load_volume(st)
        # phase: float32 radians; magnitude without a rescale: its stored integers (vendor units)
        assert v.data.dtype == (np.float32 if st.component == "phase" else np.uint16) and v.shape == (4, 6, 7)
        stored = truth[("P" if st.component == "phase" else "M", st.echo_number)].astype(np.float64)
        if st.component == "phase":
            want = (stored * 1.53455 - 3142) / 1000.0
            assert np.allclose(v.data, want, atol=1e-5)
            assert v.data.min() >= -np.pi and v.data.max() < np.pi
            assert v.phase_scaling
        else:
            assert np.array_equal(v.data, stored)
        # slice k is at z = 3k: ordered by position, not by InstanceNumber or file name
        assert np.allclose(v.index_to_lps_mm([[2, 0, 0]]), [[0, 0, 6.0]])
        assert [f.position_lps_mm[2] for f in v.frames] == [0.0, 3.0, 6.0, 9.0]


def test_broken_stack_is_reported_not_loaded(mr_writer):
    for k in range(3):
        mr_writer(f"a{k}", position=(0, 0, 1.0))  # three frames at one position
    res = series.scan([mr_writer.root])
    (s,) = res.series
    assert s.problems and "repeated slice positions" in s.problems[0]
    with pytest.raises(DicomInputError) as e:
        series.load_volume(s.stacks[0])
    assert "cannot become a volume" in str(e.value) and "repeated slice positions" in str(e.value)


def test_stack_size_limit_refuses_before_allocating(mr_writer):
    for k in range(3):
        mr_writer(f"s{k}", rows=64, columns=64, position=(0, 0, k))
    (st,) = series.scan([mr_writer.root]).series[0].stacks
    tracemalloc.start()
    with pytest.raises(DicomInputError) as e:
        series.load_volume(st, limit_bytes=50_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "refused before allocating" in str(e.value) and "s0" in str(e.value)
    assert peak < 20_000  # the 3 x 64 x 64 arrays (24 KiB stored, 48 KiB float32) were never allocated
    assert series.load_volume(st, limit_bytes=10**6).shape == (3, 64, 64)


def _encode(kind: str, src, dst):
    if kind == "jpeg2000":
        ds = pydicom.dcmread(src)
        ds.compress(pydicom.uid.JPEG2000Lossless)
        ds.save_as(dst, enforce_file_format=True)
        return
    tool = TOOLS[kind]
    require_peer(tool[0], "dcmtk")
    subprocess.run(tool + [str(src), str(dst)], check=True, capture_output=True)


@pytest.mark.parametrize("kind", ["jpeg_lossless", "jpeg_ls", "jpeg2000", "rle", "deflate"])
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(mr_writer, tmp_path, kind):
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 4000, size=(3, 64, 64)).astype(np.uint16)
    out = tmp_path / "enc"
    out.mkdir()
    for k in range(3):
        src = mr_writer(f"src{k}", rows=64, columns=64, position=(0, 0, 2.0 * k), pixels=vol[k])
        src_ds = pydicom.dcmread(src)
        src_ds.BitsStored, src_ds.HighBit = 16, 15
        src_ds.save_as(src)
        _encode(kind, src, out / f"img{k}")
    res = series.scan([out])
    assert res.problems == []
    (st,) = res.series[0].stacks
    assert st.frames[0].transfer_syntax_uid == EXPECTED_TS[kind]
    assert np.array_equal(series.load_volume(st).data, vol.astype(np.float32))


def test_undecodable_transfer_syntax_is_refused_naming_it(mr_writer, tmp_path):
    src = mr_writer("s", rows=16, columns=16, position=(0, 0, 0))
    ds = pydicom.dcmread(src)
    from pydicom.encaps import encapsulate
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])  # not a decodable MPEG-2 stream
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile / Main Level
    out = tmp_path / "mpeg"
    out.mkdir()
    ds.save_as(out / "x", enforce_file_format=True)
    (st,) = series.scan([out]).series[0].stacks
    with pytest.raises(DicomInputError) as e:
        series.load_volume(st)
    assert "MPEG2" in str(e.value) and "1.2.840.10008.1.2.4.100" in str(e.value) and str(out / "x") in str(e.value)


@pytest.mark.parametrize("kind", ["rle", "jpeg_ls"])
def test_compressed_enhanced_multiframe(tmp_path, kind):
    from test_headers import enhanced

    frames = [{"PlanePositionSequence": {"ImagePositionPatient": [0.0, 0.0, 2.0 * k]},
               "MREchoSequence": {"EffectiveEchoTime": 20.0},
               "MRImageFrameTypeSequence": {"ComplexImageComponent": "MAGNITUDE"}} for k in (2, 0, 3, 1)]
    shared = {"PlaneOrientationSequence": {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
              "PixelMeasuresSequence": {"PixelSpacing": [1.0, 1.0]}}
    src = enhanced(tmp_path, frames=frames, shared=shared, rows=32, cols=32)
    stored = pydicom.dcmread(src).pixel_array  # frame order in the file: z = 4, 0, 6, 2 mm
    out = tmp_path / "enc"
    out.mkdir()
    _encode(kind, src, out / "multi")
    res = series.scan([out])
    assert res.problems == []
    (st,) = res.series[0].stacks
    assert st.frames[0].transfer_syntax_uid == EXPECTED_TS[kind]
    v = series.load_volume(st)
    assert np.array_equal(v.data, stored[[1, 3, 0, 2]].astype(np.float32))  # ordered along the normal


def test_signed_values_with_fewer_bits_stored_are_sign_extended(mr_writer):
    vals = np.array([[-5, 3], [-2048, 2047]], dtype=np.int16)
    raw12 = (vals.astype(np.int32) & 0x0FFF).astype(np.uint16)  # 12-bit two's complement, not extended
    p = mr_writer("s12", rows=2, columns=2, pixels=raw12.view(np.int16), signed=True)
    ds = pydicom.dcmread(p)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(p)
    (st,) = series.scan([mr_writer.root]).series[0].stacks
    assert np.array_equal(series.read_stored(st)[0], vals)


def test_same_instance_twice_is_read_once(mr_writer, tmp_path):
    import shutil as _sh

    paths = [mr_writer(f"i{k}", position=(0, 0, k)) for k in range(3)]
    copy_dir = mr_writer.root / "again"
    copy_dir.mkdir()
    _sh.copy(paths[1], copy_dir / "copy_of_i1")
    res = series.scan([mr_writer.root])
    (st,) = res.series[0].stacks
    assert st.n_slices == 3 and st.problems == []
    assert any("copy_of_i1" in n and "duplicate copy" in n for n in res.notes)


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2"])  # implicit LE, explicit BE (retired)
def test_native_transfer_syntaxes(mr_writer, tmp_path, ts):
    """Written by dcmtk's dcmconv (+ti implicit little endian, +tb explicit big endian)."""
    require_peer("/usr/bin/dcmconv", "dcmtk")
    rng = np.random.default_rng(5)
    vol = rng.integers(-2000, 2000, size=(3, 16, 16)).astype(np.int16)
    out = tmp_path / "ts"
    out.mkdir()
    flag = "+ti" if ts == "1.2.840.10008.1.2" else "+tb"
    for k in range(3):
        src = mr_writer(f"x{k}", rows=16, columns=16, position=(0, 0, k), pixels=vol[k], signed=True)
        subprocess.run(["/usr/bin/dcmconv", flag, str(src), str(out / f"x{k}")], check=True, capture_output=True)
    (st,) = series.scan([out]).series[0].stacks
    assert st.frames[0].transfer_syntax_uid == ts
    assert np.array_equal(series.read_stored(st), vol)


def test_field_strength_is_read_into_stack_and_volume_and_none_when_absent(mr_writer):
    """MagneticFieldStrength (0018,0087) reaches the stack and the volume (the dipole fit turns
    phase into ppm with it); a series without it reads as None, not a default."""
    for s in range(3):
        mr_writer(f"with/{s}", position=(0, 0, 2.0 * s), series_uid="1.2.3.1", image_type=("ORIGINAL", "PRIMARY", "M", "ND"))
        mr_writer(f"without/{s}", position=(0, 0, 2.0 * s), series_uid="1.2.3.2", image_type=("ORIGINAL", "PRIMARY", "M", "ND"))
    for path in (mr_writer.root / "with").iterdir():
        ds = pydicom.dcmread(path)
        ds.MagneticFieldStrength = "1.5"
        ds.save_as(path, enforce_file_format=True)
    res = series.scan([mr_writer.root])
    by_uid = {s.series_instance_uid: s for s in res.series}
    with_b0, without = by_uid["1.2.3.1"].stacks[0], by_uid["1.2.3.2"].stacks[0]
    assert with_b0.field_strength_t == 1.5 and without.field_strength_t is None
    assert series.load_volume(with_b0).field_strength_t == 1.5
    assert series.load_volume(without).field_strength_t is None
